"""Communication cost against H and H^b per topology: simulated (solid, dotted) beside eq. (6) (dashed)."""
from __future__ import annotations

import logging
from collections.abc import Sequence

from matplotlib.figure import Figure

from analysis.errors import InputError
from analysis.render import RenderConfig, legend_below, new_figure, plain_log_ticks, style
from analysis.simout import SimPoint, group_lines, select

__all__ = ["plot_cost", "default_fixed"]

log = logging.getLogger(__name__)


def default_fixed(points: Sequence[SimPoint], key: str, other: str) -> float | None:
    """The value of ``key`` to hold fixed while ``other`` varies: the smallest one with >= 2 ``other`` values."""
    seen: dict[float, set[float]] = {}
    for pt in points:
        k, o = pt.get(key), pt.get(other)
        if k is not None and o is not None:
            seen.setdefault(float(k), set()).add(float(o))
    candidates = sorted(k for k, os in seen.items() if len(os) >= 2)
    return candidates[0] if candidates else None


# (SimPoint field, line style, marker, legend text) of the three measures drawn per configuration.
_MEASURES = (
    ("comm_s", "-", "o", "simulated: time in collectives (solid)"),
    ("comm_accounted_s", ":", "+", "simulated, counted as eq. (6) does (dotted)"),
    ("eq6_s", "--", "x", "eq. (6) closed form (dashed)"),
)


def _panel(fig: Figure, ax, points: Sequence[SimPoint], x: str, fixed: dict) -> bool:
    series = {field: group_lines(points, x, field, where=fixed) for field, *_ in _MEASURES}
    if any(len(xs) > 1 for lines in series.values() for _, xs, *_ in lines):
        # A configuration seen at one x only (e.g. local SGD in an H^b sweep) is not a line here.
        series = {f: [line for line in lines if len(line[1]) > 1] for f, lines in series.items()}
    labels = list(dict.fromkeys(label for lines in series.values() for label, *_ in lines))
    if not labels:
        return False
    ys_all: list[float] = []
    for field, ls, marker, _ in _MEASURES:
        for label, xs, ys, _pts in series[field]:
            color = f"C{labels.index(label) % 10}"
            first = field == next(f for f, *_ in _MEASURES if any(lab == label for lab, *_ in series[f]))
            ax.plot(xs, ys, ls=ls, marker=marker, color=color, label=label if first else None)
            ys_all += ys
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter("{x:g}")
    positive = [v for v in ys_all if v > 0]
    if positive and max(positive) / min(positive) > 10:
        ax.set_yscale("log")
        plain_log_ticks(ax, "y")
    ax.set_xlabel({"H": "H (local steps between syncs)", "Hb": "Hᵇ (block syncs per global sync)"}[x])
    ax.set_ylabel("communication time (s, whole run)")
    for field, ls, marker, text in _MEASURES:
        if series[field]:
            ax.plot([], [], color="grey", ls=ls, marker=marker, label=text)
    legend_below(fig, ax, ncols=2)
    return True


def _num(v: float) -> int | float:
    return int(v) if float(v).is_integer() else v


def plot_cost(points: Sequence[SimPoint], cfg: RenderConfig, *, K: float | None = None,
              fixed_H: float | None = None, fixed_Hb: float | None = None) -> dict[str, Figure]:
    """Figures ``cost_H`` (at fixed H^b, default 1 or the smallest) and ``cost_Hb`` (at fixed H).

    Both are drawn at one K (default: the largest K simulated), one line per topology and
    whatever else varies. ``cost_Hb`` is drawn only when some configuration has two or more
    H^b values at a fixed H.
    """
    out: dict[str, Figure] = {}
    ks = sorted({float(p.get("K")) for p in points})
    if K is None:
        K = ks[-1]
    elif float(K) not in ks:
        raise InputError(f"K must be one of the simulated K values {', '.join(f'{k:g}' for k in ks)}, got {K:g}")
    points = [p for p in points if float(p.get("K")) == float(K)]
    hb_values = sorted({float(p.get("Hb")) for p in points if p.get("Hb") is not None})
    if fixed_Hb is None:
        fixed_Hb = 1.0 if 1.0 in hb_values or not hb_values else hb_values[0]
    with style():
        fig, (ax,) = new_figure(cfg, height_scale=1.2)
        where = {"Hb": _num(fixed_Hb)} if hb_values else {}
        if _panel(fig, ax, select(points), "H", where):
            ax.set_title(f"Communication cost by H (K = {K:g}" + (f", Hᵇ = {fixed_Hb:g})" if hb_values else ")"))
            out["cost_H"] = fig
        if fixed_H is None:
            fixed_H = default_fixed(points, "H", "Hb")
        if fixed_H is not None:
            fig, (ax,) = new_figure(cfg, height_scale=1.2)
            if _panel(fig, ax, points, "Hb", {"H": _num(fixed_H)}):
                ax.set_title(f"Communication cost by Hᵇ (K = {K:g}, H = {fixed_H:g})")
                out["cost_Hb"] = fig
    if not out:
        raise InputError("no simulator record has a communication time or eq. (6) to plot "
                         "(expected comm_intra_s/comm_inter_s or eq6_s)")
    if "cost_Hb" not in out:
        log.info("no configuration varies H^b at a fixed H; cost_Hb not drawn")
    return out
