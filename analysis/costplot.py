"""Communication cost against H and H^b per topology: simulated (solid) beside eq. (6) (dashed)."""
from __future__ import annotations

import logging
from collections.abc import Sequence

from matplotlib.figure import Figure

from analysis.errors import InputError
from analysis.render import RenderConfig, legend_below, new_figure, style
from analysis.simout import SimPoint, group_lines

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


def _panel(fig: Figure, ax, points: Sequence[SimPoint], x: str, fixed: dict) -> bool:
    sim = group_lines(points, x, "comm_s", where=fixed)
    eq6 = {label: (xs, ys) for label, xs, ys, _ in group_lines(points, x, "eq6_s", where=fixed)}
    if not sim and not eq6:
        return False
    labels = [label for label, *_ in sim] + [label for label in eq6 if label not in {s[0] for s in sim}]
    ys_all: list[float] = []
    for i, label in enumerate(labels):
        color = f"C{i % 10}"
        for lab, xs, ys, _ in sim:
            if lab == label:
                ax.plot(xs, ys, marker="o", color=color, label=label)
                ys_all += ys
        if label in eq6:
            xs, ys = eq6[label]
            ax.plot(xs, ys, ls="--", marker="x", color=color,
                    label=None if any(s[0] == label for s in sim) else f"{label} (eq. 6 only)")
            ys_all += ys
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter("{x:g}")
    positive = [v for v in ys_all if v > 0]
    if positive and max(positive) / min(positive) > 10:
        ax.set_yscale("log")
    sym = {"H": "H (local steps between syncs)", "Hb": "Hᵇ (block syncs per global sync)"}[x]
    ax.set_xlabel(sym)
    ax.set_ylabel("communication time (s)")
    ax.plot([], [], color="grey", marker="o", label="simulated (solid)")
    ax.plot([], [], color="grey", ls="--", marker="x", label="eq. (6) (dashed)")
    legend_below(fig, ax, ncols=3)
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
        if _panel(fig, ax, points, "H", where):
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
