"""Simulator-predicted against measured wall time, one point per run, each annotated with its error."""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from analysis.errors import InputError
from analysis.files import get, get_num, read_jsonl
from analysis.render import RenderConfig, legend_below, new_figure, place_labels, plain_log_ticks, style
from analysis.runs import RunDir

__all__ = ["Pair", "pairs_from_table", "pairs_from_runs", "plot_predict"]


@dataclass(kw_only=True, frozen=True)
class Pair:
    """A predicted and a measured time (s) of the same configuration."""

    name: str
    predicted_s: float
    measured_s: float

    def __post_init__(self) -> None:
        for field_name in ("predicted_s", "measured_s"):
            v = getattr(self, field_name)
            if not math.isfinite(v) or v <= 0:
                raise InputError(f"{self.name}: {field_name} must be a finite time > 0, got {v!r}")

    @property
    def rel_error(self) -> float:
        """(predicted - measured) / measured: positive when the simulator overestimates."""
        return (self.predicted_s - self.measured_s) / self.measured_s


def pairs_from_table(path: str | Path) -> list[Pair]:
    """Rows ``{"name", "predicted_s", "measured_s"}`` of a JSONL table."""
    return [Pair(name=str(get(r, "name")), predicted_s=get_num(r, "predicted_s"),
                 measured_s=get_num(r, "measured_s")) for r in read_jsonl(path)]


def pairs_from_runs(runs: Sequence[RunDir]) -> list[Pair]:
    """Pairs from run directories whose summary.json holds both a measured and a predicted wall time."""
    pairs = []
    for run in runs:
        predicted, measured = run.summary_num("predicted_s"), run.summary_num("wall_s")
        if predicted is None or measured is None:
            raise InputError(f"{run.path}: summary.json needs both 'wall_s' and 'prediction.wall_s' "
                             f"(got wall_s={measured!r}, predicted={predicted!r})")
        pairs.append(Pair(name=run.label, predicted_s=predicted, measured_s=measured))
    return pairs


def plot_predict(pairs: Sequence[Pair], cfg: RenderConfig) -> dict[str, Figure]:
    """Figure ``predict``: scatter (log-log beyond a decade) with the y = x line, ±10 % band, and each point's error."""
    if not pairs:
        raise InputError("no predicted/measured pairs to plot")
    lo = min(min(p.predicted_s, p.measured_s) for p in pairs) / 1.25
    hi = max(max(p.predicted_s, p.measured_s) for p in pairs) * 1.25
    errors = [abs(p.rel_error) * 100 for p in pairs]
    median, worst = statistics.median(errors), max(errors)
    with style():
        fig, (ax,) = new_figure(cfg, height_scale=1.3)
        ax.plot([lo, hi], [lo, hi], color="black", lw=1, label="predicted = measured")
        ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="grey", alpha=0.15,
                        lw=0, label="±10 %")
        for i, p in enumerate(pairs):  # colour and marker together stay distinct for 50 points
            ax.scatter(p.measured_s, p.predicted_s, color=f"C{i % 10}", marker="osD^v"[i // 10 % 5],
                       zorder=3, s=30, label=p.name)
        if hi / lo > 10:  # log axes only where the times span more than a decade (else hardly a number shows)
            ax.set_xscale("log")
            ax.set_yscale("log")
            plain_log_ticks(ax)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("measured wall time (s)")
        ax.set_ylabel("simulator-predicted wall time (s)")
        ax.set_title(f"Predicted vs measured: median |error| {median:.1f} %, worst {worst:.1f} % (n = {len(pairs)})")
        legend_below(fig, ax, ncols=3)
        place_labels(ax, [(p.measured_s, p.predicted_s) for p in pairs],
                     [f"{p.rel_error * 100:+.1f} %" for p in pairs])
    return {"predict": fig}
