"""Headless figure rendering: one house style, fixed pixel sizes, and atomic saving in several formats."""
from __future__ import annotations

import io
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import matplotlib
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

from analysis.errors import InputError
from analysis.files import atomic_write_bytes

__all__ = [
    "FORMATS",
    "RenderConfig",
    "new_figure",
    "style",
    "save_figure",
    "figure_bytes",
    "format_bytes",
    "bytes_axis",
    "place_labels",
    "format_seconds",
    "seconds_log_ticks",
    "parse_formats",
    "legend_below",
    "plain_log_ticks",
]

log = logging.getLogger(__name__)

FORMATS = ("png", "svg", "pdf")

# Sized for a README / paper column: 7 in wide at 100 dpi is 700 px, where 10 pt text stays legible.
_RC = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8.5,
    "legend.framealpha": 0.85,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.6,
    "lines.markersize": 5,
    "svg.hashsalt": "localsgd-analysis",  # deterministic SVG element ids
    "svg.fonttype": "path",
}


@dataclass(kw_only=True)
class RenderConfig:
    """How figures are rendered: output formats, resolution and size in inches (pixels = inches x dpi)."""

    formats: tuple[str, ...] = ("png", "svg")
    dpi: int = 100
    width_in: float = 7.0
    height_in: float = 4.2

    def __post_init__(self) -> None:
        if not self.formats:
            raise InputError(f"formats must name at least one of {', '.join(FORMATS)}, got none")
        for fmt in self.formats:
            if fmt not in FORMATS:
                raise InputError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        if isinstance(self.dpi, bool) or not isinstance(self.dpi, int) or not 30 <= self.dpi <= 600:
            raise InputError(f"dpi must be an integer in [30, 600], got {self.dpi!r}")
        for name in ("width_in", "height_in"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 1.0 <= value <= 30.0:
                raise InputError(f"{name} must be a number of inches in [1, 30], got {value!r}")

    def pixels(self, *, height_scale: float = 1.0) -> tuple[int, int]:
        """The (width, height) in pixels of a PNG rendered with this configuration."""
        return round(self.width_in * self.dpi), round(self.height_in * height_scale * self.dpi)


def parse_formats(text: str) -> tuple[str, ...]:
    """Parse ``png,svg[,pdf]`` into a tuple, rejecting unknown formats with a one-line error."""
    items = tuple(dict.fromkeys(s.strip().lower() for s in text.split(",") if s.strip()))
    RenderConfig(formats=items)  # validates
    return items


@contextmanager
def style() -> Iterator[None]:
    """The house style for every figure, scoped so the caller's rcParams are left alone."""
    with matplotlib.rc_context(cast(Any, _RC)):  # matplotlib types rc keys as literals
        yield


def new_figure(cfg: RenderConfig, nrows: int = 1, ncols: int = 1, *,
               height_scale: float = 1.0, sharex: bool = False) -> tuple[Figure, list[Axes]]:
    """A constrained-layout figure (nothing clipped, fixed pixel size) and its axes as a flat list."""
    # Whole pixels, so the PNG is exactly width_in x dpi by the rounded height (Agg truncates).
    height_in = max(1, round(cfg.height_in * height_scale * cfg.dpi)) / cfg.dpi
    fig = Figure(figsize=(cfg.width_in, height_in), dpi=cfg.dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=sharex)
    return fig, [ax for row in axes for ax in row]


def figure_bytes(fig: Figure, fmt: str, cfg: RenderConfig) -> bytes:
    """Render ``fig`` to bytes in ``fmt`` without metadata that would change between runs."""
    metadata: dict[str, Any] = {"png": {"Software": None}, "svg": {"Date": None},
                                       "pdf": {"CreationDate": None}}[fmt]
    buf = io.BytesIO()
    with style():
        fig.savefig(buf, format=fmt, dpi=cfg.dpi, metadata=metadata)
    return buf.getvalue()


def save_figure(fig: Figure, outdir: str | Path, stem: str, cfg: RenderConfig) -> list[Path]:
    """Write ``OUTDIR/STEM.FMT`` for each configured format, atomically; return the paths."""
    paths = []
    for fmt in cfg.formats:
        path = atomic_write_bytes(Path(outdir) / f"{stem}.{fmt}", figure_bytes(fig, fmt, cfg))
        log.debug("wrote %s", path)
        paths.append(path)
    return paths


def format_bytes(n: float) -> str:
    """Message size with a binary prefix: 4 B, 64 KiB, 8 MiB."""
    if n <= 0:
        return "0 B"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.3g} {unit}"
    return f"{n:.0f} B"


def bytes_axis(ax: Axes, sizes: Sequence[float]) -> None:
    """Log2 x axis labelled with binary-prefixed message sizes."""
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: format_bytes(v)))
    if sizes and min(sizes) > 0:
        octaves = math.log2(max(sizes) / min(sizes))
        step = 1 if octaves <= 6 else 2 if octaves <= 14 else 4
        ax.xaxis.set_major_locator(LogLocator(base=2.0**step))


def legend_below(fig: Figure, ax: Axes, *, ncols: int = 2) -> None:
    """One figure legend under the axes (outside the data, inside the figure): nothing hidden or clipped."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        # Fewer columns for long labels, so the legend never grows wider than the figure
        # (about 5.2 px per character at the legend's 8.5 pt at 100 dpi, plus the line sample).
        width_px = fig.get_figwidth() * 100
        per_col = 5.2 * max(len(text) for text in labels) + 50
        fit = max(1, int(width_px // per_col))
        fig.legend(handles, labels, loc="outside lower center", ncols=max(1, min(ncols, fit, len(handles))),
                   frameon=False)


def _plain(value: float, _pos: object = None) -> str:
    return f"{value:g}"


def _minor_formatter(axis: Axis) -> FuncFormatter:
    """Label minor ticks: all of them on an axis spanning at most one decade (else it could show a single
    number), at 2 and 5 x 10^k up to two decades, none beyond (crowded)."""
    def fmt(value: float, _pos: object = None) -> str:
        lo, hi = sorted(axis.get_view_interval())
        if lo <= 0 or math.log10(hi / lo) > 2:
            return ""
        text = f"{value:g}"
        return text if math.log10(hi / lo) <= 1 or text.lstrip("0.")[:1] in ("2", "5") else ""
    return FuncFormatter(fmt)


def format_seconds(value: float, _pos: object = None) -> str:
    """A duration as a tick label in the unit that keeps it readable: 200 µs, 1.5 ms, 2 s."""
    if value <= 0:
        return ""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if value >= scale * 0.9999:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g} s"


def seconds_log_ticks(ax: Axes) -> None:
    """A log y axis of durations labelled 200 µs, 1 ms, 5 ms (minor labels at 2 and 5 x 10^k, as above)."""
    ax.yaxis.set_major_formatter(FuncFormatter(format_seconds))
    plain = _minor_formatter(ax.yaxis)
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, pos=None: format_seconds(v) if plain(v, pos) else ""))


def plain_log_ticks(ax: Axes, which: str = "both") -> None:
    """Log-axis tick labels as plain numbers (0.5, 2, 20) instead of 2x10^1; minor labels at 2 and 5."""
    choices: dict[str, list[Any]] = {"x": [ax.xaxis], "y": [ax.yaxis], "both": [ax.xaxis, ax.yaxis]}
    axes = choices[which]
    for axis in axes:
        axis.set_major_formatter(FuncFormatter(_plain))
        axis.set_minor_formatter(_minor_formatter(axis))


# Offsets (points) tried in turn for a point's label: right, then above/below, then left.
_LABEL_OFFSETS = ((6, 2), (6, -10), (6, 10), (6, -18), (-8, 4), (-8, -12), (6, 18), (6, -26), (-8, 14),
                  (-8, -22))


def place_labels(ax: Axes, points: Sequence[tuple[float, float]], texts: Sequence[str], *,
                 marker_pt: float = 4.0, fontsize: float = 8.5) -> list[object]:
    """Annotate each point with its text where it stays inside the axes and overlaps no other label or marker
    (greedy: the first free offset in `_LABEL_OFFSETS`; the last one tried when none is free). Call after the
    limits and the legend are set. A label moved off its first place gets a thin leader line to its point.
    """
    fig = ax.get_figure()
    assert fig is not None, "place_labels needs axes that belong to a figure"
    canvas = cast(FigureCanvasAgg, fig.canvas)
    canvas.draw()  # the layout settles first, so the extents below are the saved ones
    renderer = canvas.get_renderer()
    px = fig.dpi / 72.0
    centres = [ax.transData.transform(pt) for pt in points]
    marks = [(x - marker_pt * px, y - marker_pt * px, x + marker_pt * px, y + marker_pt * px) for x, y in centres]
    taken: list[tuple[float, float, float, float]] = []
    out: list[object] = []
    for pt, text in zip(points, texts):
        ann: Any = None
        for dx, dy in _LABEL_OFFSETS:
            if ann is not None:
                ann.remove()
            ann = ax.annotate(text, pt, xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                              ha="left" if dx >= 0 else "right", va="center")
            bb = ann.get_window_extent(renderer)
            box = (bb.x0 - px, bb.y0 - px, bb.x1 + px, bb.y1 + px)
            inside = ax.bbox.x0 <= box[0] and box[2] <= ax.bbox.x1 and ax.bbox.y0 <= box[1] and box[3] <= ax.bbox.y1
            if inside and not any(_overlap(box, other) for other in taken + marks):
                break
        taken.append(box)
        if (dx, dy) != _LABEL_OFFSETS[0]:  # placed with the text's own extent; the leader line is added after
            ann.remove()
            ann = ax.annotate(text, pt, xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                              ha="left" if dx >= 0 else "right", va="center",
                              arrowprops={"arrowstyle": "-", "lw": 0.6, "color": "0.45", "shrinkA": 0, "shrinkB": 3})
        out.append(ann)
    return out


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
