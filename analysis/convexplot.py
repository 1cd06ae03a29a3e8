"""The convex w8a figures: Figure 7(a) heatmap (time relative to the best, B_loc x H) and 7(b) speedup lines."""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

from analysis.errors import InputError
from analysis.files import Record, get_num, opt, opt_num, read_json, read_jsonl
from analysis.render import RenderConfig, legend_below, new_figure, style

__all__ = ["ConvexCell", "load_convex_rows", "grid_cells", "relative_matrix", "convex_speedup_lines",
           "plot_convex_grid", "plot_convex_speedup"]

_ROWS = ("results", "rows", "grid", "configs", "configurations", "points")
_TIME = ("time_to_target", "time_units", "time_to_target_units", "time", "t_target")
_REL = ("relative", "relative_time", "time_relative", "rel_time", "time_rel")
_BLOC = ("B_loc", "B", "b_loc", "batch")


@dataclass(kw_only=True, frozen=True)
class ConvexCell:
    """One (K, H, B_loc) configuration; ``time`` is inf when the target was never reached."""

    K: int
    H: int
    B_loc: int
    time: float
    relative: float | None
    source: str
    complete: bool = True  # false in the copies `sim convex grid --out` writes while it still runs


def load_convex_rows(path: str | Path) -> list[Record]:
    """The per-configuration rows of a convex result: a JSON object holding a list, a JSON list, or JSONL."""
    try:
        top = read_json(path)
    except InputError:
        return read_jsonl(path)
    for key in _ROWS:
        rows = opt(top, key)
        if isinstance(rows, list):
            out = [Record.of(r, f"{path}:{key}[{i}]") for i, r in enumerate(rows) if isinstance(r, dict)]
            if len(out) != len(rows):
                raise InputError(f"{path}: every item of {key!r} must be a JSON object")
            if not out:
                raise InputError(f"{path}: {key!r} is empty (no configurations to plot)")
            # Fields shared by all rows (e.g. K of a grid) may live at top level.
            shared = {k: v for k, v in top.items() if not isinstance(v, (list, dict))}
            return [Record.of({**shared, **r}, r.source) for r in out]
    raise InputError(f"{path}: no list of configurations found (expected one of the keys {', '.join(_ROWS)})")


def _time(rec: Record) -> float:
    if opt(rec, ("reached", "target_reached"), True) is False:
        return math.inf
    names = _TIME
    for name in names:
        if name in rec:
            value = rec[name]
            return math.inf if value is None else get_num(rec, name)
    raise InputError(f"{rec.source}: missing key {_TIME[0]!r} (or {', '.join(repr(n) for n in _TIME[1:])})")


def grid_cells(rows: Sequence[Record]) -> list[ConvexCell]:
    """Rows to cells; H and B_loc are required, K defaults to the file's shared K."""
    cells = []
    for rec in rows:
        cells.append(ConvexCell(K=int(opt_num(rec, ("K",), 0) or 0), H=int(get_num(rec, "H")),
                                B_loc=int(get_num(rec, _BLOC)), time=_time(rec),
                                relative=opt_num(rec, _REL), source=rec.source,
                                complete=opt(rec, "complete", True) is not False))
    return cells


def relative_matrix(cells: Sequence[ConvexCell]) -> tuple[list[int], list[int], np.ndarray]:
    """(B_loc values, H values, matrix[B_loc, H]) of time relative to the best cell; NaN where missing.

    The relative time is recomputed as time / min(time) so it is exact; when a row carries its own
    relative figure it must agree to 1e-6 (else the file is inconsistent and we say so).
    """
    Ks = {c.K for c in cells}
    if len(Ks) > 1:
        raise InputError(f"grid mixes several K ({', '.join(map(str, sorted(Ks)))}); plot one K per heatmap")
    finite = [c.time for c in cells if math.isfinite(c.time)]
    if not finite:
        raise InputError("no configuration reached the target: nothing to compare in the heatmap")
    best = min(finite)
    bs = sorted({c.B_loc for c in cells})
    hs = sorted({c.H for c in cells})
    mat = np.full((len(bs), len(hs)), np.nan)
    for c in cells:
        rel = c.time / best
        if c.relative is not None and math.isfinite(rel) and abs(c.relative - rel) > 1e-6 * max(1.0, rel):
            raise InputError(f"{c.source}: relative time {c.relative!r} disagrees with time/best = {rel:.6g}")
        mat[bs.index(c.B_loc), hs.index(c.H)] = rel
    return bs, hs, mat


def convex_speedup_lines(rows: Sequence[Record]) -> tuple[list[tuple[int, list[int], list[float]]], int]:
    """Per H: (H, Ks, speedups), reference K = the smallest K (1 in `sim convex speedup` output).

    The file's own ``speedup`` is used when rows carry that key (null = target not reached: the
    point is left out); otherwise speedup = time(K_ref) / time(K) of the same H.
    """
    by_h: dict[int, dict[int, Record]] = defaultdict(dict)
    for rec in rows:
        by_h[int(get_num(rec, "H"))][int(get_num(rec, "K"))] = rec
    ref_K = min(k for d in by_h.values() for k in d)
    given = any("speedup" in rec for rec in rows)
    lines = []
    for H in sorted(by_h):
        ks = sorted(by_h[H])
        if given:
            values = [opt_num(by_h[H][k], "speedup") for k in ks]
        else:
            if ref_K not in by_h[H] or not math.isfinite(_time(by_h[H][ref_K])):
                raise InputError(f"{by_h[H][ks[0]].source}: no 'speedup' and no reached K={ref_K} run for H={H}")
            t_ref = _time(by_h[H][ref_K])
            values = [t_ref / t if math.isfinite(t := _time(by_h[H][k])) else None for k in ks]
        pts = [(k, float(v)) for k, v in zip(ks, values) if v is not None and math.isfinite(v) and v > 0]
        if pts:
            lines.append((H, [k for k, _ in pts], [v for _, v in pts]))
    if not lines:
        raise InputError("no configuration reached the target: no speedup to plot")
    return lines, ref_K


def plot_convex_grid(cells: Sequence[ConvexCell], cfg: RenderConfig) -> dict[str, Figure]:
    """Figure ``convex_heatmap``: relative time to target per (B_loc, H); grey cells never reached it."""
    bs, hs, mat = relative_matrix(cells)
    K = cells[0].K
    with style():
        fig, (ax,) = new_figure(cfg, height_scale=max(1.0, min(1.8, 0.5 + 0.12 * len(bs))))
        ax.set_facecolor("#d9d9d9")
        finite = mat[np.isfinite(mat)]
        norm = LogNorm(vmin=1.0, vmax=max(1.0001, float(finite.max())))
        im = ax.imshow(np.ma.masked_invalid(mat), origin="lower", aspect="auto", cmap="viridis_r", norm=norm)
        for i in range(len(bs)):
            for j in range(len(hs)):
                v = mat[i, j]
                text = "n/r" if not np.isfinite(v) else f"{v:.2f}" if v < 10 else f"{v:.0f}"
                dark = np.isfinite(v) and norm(v) > 0.55
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if dark else "black", fontweight="bold" if v == 1.0 else None)
        ax.set_xticks(range(len(hs)), [str(h) for h in hs])
        ax.set_yticks(range(len(bs)), [str(b) for b in bs])
        ax.grid(False)
        ax.set_xlabel("H (local steps between syncs)")
        ax.set_ylabel("B_loc (local mini-batch, samples)")
        partial = "" if all(c.complete for c in cells) else ", grid still running: best so far"
        ax.set_title("Time to target relative to the best configuration"
                     + (f" (K = {K}{partial})" if K else f" ({partial[2:]})" if partial else ""))
        cbar = fig.colorbar(im, ax=ax)
        cbar.set_label("time to target / best time (×, log scale)")
        cbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
        cbar.ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _p: f"{v:g}" if f"{v:g}"[0] in "1235" else ""))
        if not np.isfinite(mat).all():
            ax.text(1.0, -0.13, "n/r: target not reached (or not run)", transform=ax.transAxes,
                    ha="right", va="top", fontsize=8, color="dimgrey")
    return {"convex_heatmap": fig}


def plot_convex_speedup(lines: Sequence[tuple[int, list[int], list[float]]], ref_K: int,
                        cfg: RenderConfig, *, complete: bool = True) -> dict[str, Figure]:
    """Figure ``convex_speedup``: speedup in time-to-target over K, one line per H, with the ideal line."""
    ks = sorted({k for _, xs, _ in lines for k in xs})
    with style():
        fig, (ax,) = new_figure(cfg, height_scale=1.15)
        for i, (H, xs, ys) in enumerate(lines):
            ax.plot(xs, ys, marker="o", color=f"C{i % 10}", label=f"H = {H}")
        ax.plot(ks, [k / ref_K for k in ks], ls=":", color="black", label="ideal (linear)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.yaxis.set_major_locator(LogLocator(base=2, subs=(1.0,), numticks=30))  # every doubling
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter("{x:g}")
        ax.set_xlabel("K (workers)")
        ax.set_ylabel(f"speedup in time to target over K = {ref_K} (×)")
        ax.set_title("Convex (w8a) speedup over K" + ("" if complete else " (run still in progress)"))
        legend_below(fig, ax, ncols=4)
    return {"convex_speedup": fig}
