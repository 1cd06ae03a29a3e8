"""Training curves (loss, accuracy) against epochs and wall time, and the per-run time breakdown bars."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from matplotlib.figure import Figure

from analysis.errors import InputError
from analysis.files import opt_num
from analysis.render import RenderConfig, legend_below, new_figure, style
from analysis.runs import ALIASES, BREAKDOWN, RunDir, as_percent

__all__ = ["Curves", "run_curves", "plot_curves", "plot_breakdown"]

_METRICS = ("train_loss", "test_loss", "train_acc", "test_acc")


@dataclass(kw_only=True)
class Curves:
    """Per-epoch series of one run; a metric missing from a record is None at that epoch."""

    label: str
    epoch: list[float] = field(default_factory=list)
    wall_s: list[float | None] = field(default_factory=list)
    values: dict[str, list[float | None]] = field(default_factory=dict)

    def series(self, metric: str, x: str) -> tuple[list[float], list[float]]:
        """(x, y) pairs where both are present; ``x`` is "epoch" or "wall_s"."""
        xs = self.epoch if x == "epoch" else self.wall_s
        ys = self.values.get(metric, [])
        pairs = [(a, b) for a, b in zip(xs, ys) if a is not None and b is not None]
        return [a for a, _ in pairs], [b for _, b in pairs]


def run_curves(run: RunDir) -> Curves:
    """The epoch records of ``run`` as series; a run with none yet (in progress) uses its step records.

    Step records carry rank 0's loss and accuracy on its own batch, so they are noisier; the legend
    says "(steps)" when they are used.
    """
    records = run.records("epoch")
    label = run.label
    if not records:
        records = run.records("step")
        label = f"{run.label} (steps)"
    if not records:
        raise InputError(f"{run.path}: metrics.jsonl has no 'epoch' or 'step' records to plot")
    c = Curves(label=label, values={m: [] for m in _METRICS})
    for rec in records:
        epoch = opt_num(rec, "epoch")
        if epoch is None:
            raise InputError(f"{rec.source}: missing key 'epoch'")
        c.epoch.append(epoch)
        c.wall_s.append(opt_num(rec, ALIASES["wall_s"]))
        for m in _METRICS:
            c.values[m].append(opt_num(rec, m))
    for m in ("train_acc", "test_acc"):
        c.values[m] = as_percent(c.values[m])
    if all(v is None for m in _METRICS for v in c.values[m]):
        raise InputError(f"{run.path}: epoch records carry none of {', '.join(_METRICS)}")
    return c


def _draw(fig: Figure, axes: list, curves: Sequence[Curves], x: str) -> None:
    ax_loss, ax_acc = axes
    for i, c in enumerate(curves):
        color = f"C{i % 10}"
        for metric, ax, ls in (("train_loss", ax_loss, "-"), ("test_loss", ax_loss, "--"),
                               ("train_acc", ax_acc, "-"), ("test_acc", ax_acc, "--")):
            xs, ys = c.series(metric, x)
            if xs:
                # Colours repeat after 10 runs; the marker shape then tells them apart.
                ax.plot(xs, ys, ls=ls, color=color, marker="osD^v"[i // 10 % 5], ms=3,
                        markevery=max(1, len(xs) // 15),
                        label=c.label if metric == "train_loss" or (metric == "test_loss" and not
                                                                    c.series("train_loss", x)[0]) else None)
    xlabel = "epoch" if x == "epoch" else "wall-clock time (s)"
    ax_loss.set_ylabel("loss (cross-entropy)")
    ax_acc.set_ylabel("accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel(xlabel)
    losses = [v for c in curves for m in ("train_loss", "test_loss") for v in c.series(m, x)[1]]
    if losses and min(losses) > 0 and max(losses) / min(losses) > 20:
        ax_loss.set_yscale("log")
    ax_loss.plot([], [], color="grey", ls="-", label="train (solid)")
    ax_loss.plot([], [], color="grey", ls="--", label="test (dashed)")
    legend_below(fig, ax_loss, ncols=3)


def plot_curves(runs: Sequence[RunDir], cfg: RenderConfig) -> dict[str, Figure]:
    """Figures ``curves_epoch`` and ``curves_wall`` (the latter only when epoch records carry wall_s)."""
    curves = [run_curves(r) for r in runs]
    if len({c.label for c in curves}) < len(curves):  # same configuration twice (e.g. two seeds)
        for c, r in zip(curves, runs):
            c.label = f"{c.label} ({r.name})"
    out: dict[str, Figure] = {}
    with style():
        fig, axes = new_figure(cfg, 1, 2, height_scale=1.15)
        _draw(fig, axes, curves, "epoch")
        fig.suptitle("Training curves against epochs")
        out["curves_epoch"] = fig
        if any(c.series(m, "wall_s")[0] for c in curves for m in _METRICS):
            fig, axes = new_figure(cfg, 1, 2, height_scale=1.15)
            _draw(fig, axes, curves, "wall_s")
            fig.suptitle("Training curves against wall-clock time")
            out["curves_wall"] = fig
    return out


def plot_breakdown(runs: Sequence[RunDir], cfg: RenderConfig) -> dict[str, Figure]:
    """Figure ``time_breakdown``: one horizontal stacked bar per run (compute, comm per level, waiting)."""
    parts = [r.breakdown() for r in runs]
    labels = [r.label for r in runs]
    if len(set(labels)) < len(labels):
        labels = [f"{r.label} ({r.name})" for r in runs]
    with style():
        fig, (ax,) = new_figure(cfg, height_scale=max(0.8, min(2.0, 0.45 + 0.18 * len(runs))))
        left = [0.0] * len(runs)
        colors = ("C0", "C8", "C1", "C3", "C7", "C9")
        for (component, _), color in zip(BREAKDOWN, colors):
            widths = [p[component] for p in parts]
            if not any(widths):
                continue  # keep the legend to what this set of runs actually spent time on
            ax.barh(range(len(runs)), widths, left=left, color=color, label=component, height=0.6)
            left = [a + b for a, b in zip(left, widths)]
        for i, run in enumerate(runs):
            wall = run.wall_s()
            if wall is not None:
                ax.plot([wall, wall], [i - 0.38, i + 0.38], color="black", lw=1.5,
                        label="wall time" if i == 0 else None)
        ax.set_yticks(range(len(runs)), labels)
        ax.set_ylabel("run")
        ax.set_ylim(len(runs) - 0.5, -0.5)  # first run on top
        ax.grid(axis="y", visible=False)
        ax.set_xlabel("time (s, whole run, rank 0)")
        ax.set_title("Where the time goes: compute, communication, waiting")
        legend_below(fig, ax, ncols=4)
    return {"time_breakdown": fig}
