"""Simulated wall time against H, one line per topology (e.g. a link-spec preset beside a fitted one)."""
from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

from analysis.errors import InputError
from analysis.render import RenderConfig, legend_below, new_figure, plain_log_ticks, style
from analysis.simout import SimPoint, group_lines

__all__ = ["plot_wall"]


def plot_wall(points: Sequence[SimPoint], cfg: RenderConfig, *, name: str = "wall_H",
              marks: Sequence[tuple[float, float]] = ()) -> dict[str, Figure]:
    """Figure `name`: wall time (minutes) against H on a log2 axis; `marks` are measured (H, minutes) points."""
    lines = [line for line in group_lines(points, "H", "wall_s") if len(line[1]) > 1]
    if not lines:
        raise InputError("wall needs simulator records at two or more H values of one configuration "
                         "(e.g. `sim whatif --H 1,2,4,...`)")
    with style():
        fig, (ax,) = new_figure(cfg, height_scale=1.1)
        for i, (label, xs, ys, _pts) in enumerate(lines):
            ax.plot(xs, [y / 60 for y in ys], marker="o", ms=3, color=f"C{i % 10}", label=label)
        if marks:
            ax.plot([h for h, _ in marks], [m for _, m in marks], ls="none", marker="*", ms=11, color="black",
                    label="measured (the fitted preset's input)")
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter("{x:g}")
        ax.set_yscale("log")
        plain_log_ticks(ax, "y")
        ax.set_xlabel("H (local steps between syncs)")
        ax.set_ylabel("simulated wall time (min)")
        ax.set_title("Wall time by H")
        legend_below(fig, ax, ncols=2)
    return {name: fig}
