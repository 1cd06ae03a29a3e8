"""Learning curves on a cluster's predicted clock: accuracy or objective gap against time, one line per run."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

from analysis.errors import InputError
from analysis.files import Record, get, get_num, opt, opt_num, read_jsonl
from analysis.render import RenderConfig, legend_below, new_figure, style

__all__ = ["RETIME_SCHEMA", "Retimed", "load_retimed", "plot_tta"]

RETIME_SCHEMA = "sim.retime/1"
#: --metric -> (curve key, axis label, larger is better)
_METRIC = {"acc": ("test_acc", "test accuracy (%)", True), "gap": ("objective_gap", "objective gap f - f*", False),
           "loss": ("test_loss", "test loss", False)}


@dataclass(kw_only=True)
class Retimed:
    """One run's learning curve on a cluster's clock (a row of `sim retime --out` or of a tune's JSONL)."""

    label: str
    topology: str
    time_s: list[float] = field(default_factory=list)
    values: dict[str, list[float | None]] = field(default_factory=dict)
    target_metric: str | None = None
    target_value: float | None = None
    target_time_s: float | None = None
    role: str = "run"


def _label(r: Record) -> str:
    alg = str(get(r, "algorithm"))
    h = "" if alg == "minibatch" else f" H={opt(r, 'H')}"
    hb = f" Hb={opt(r, 'Hb')}" if alg == "hierarchical" else ""
    mv = opt(r, "momentum_variant", "local")
    return f"{alg}{h}{hb} K={get(r, 'workers')}" + ("" if mv == "local" else f" {mv}") + \
        (f" s{opt(r, 'seed')}" if opt(r, "seed") not in (None, 0) else "")


def load_retimed(paths: Sequence[str | Path]) -> list[Retimed]:
    """The retimed runs of JSONL files (rows of schema sim.retime/1; other rows, e.g. a tune's decisions, are
    skipped). A file without any is an error naming it."""
    out = []
    for path in paths:
        rows = [r for r in read_jsonl(path) if opt(r, "schema") == RETIME_SCHEMA]
        if not rows:
            raise InputError(f"{path}: no row of schema {RETIME_SCHEMA!r} (write one with python -m sim retime "
                             f"--out FILE or python -m train tune)")
        for r in rows:
            curve = get(r, "curve")
            if not isinstance(curve, list):
                raise InputError(f"{r.source}: 'curve' must be a list of points")
            tg = opt(r, "target") or {}
            where = str(opt(r, "source_spec") or get(r, "topology"))
            where = Path(where).stem if where.endswith(".json") else where   # a file: its name, not its path
            rt = Retimed(label=str(opt(r, "label") or _label(r)), topology=str(where),
                         target_metric=tg.get("metric"), target_value=tg.get("value"),
                         target_time_s=tg.get("time_s") if tg.get("reached") else None,
                         role=str(opt(r, "role", "run")))
            for key, _, _ in _METRIC.values():
                rt.values[key] = []
            for pt in curve:
                p = Record.of(pt, r.source)
                rt.time_s.append(get_num(p, "time_s"))
                for key, _, _ in _METRIC.values():
                    rt.values[key].append(opt_num(p, key))
            out.append(rt)
    return out


def plot_tta(runs: Sequence[Retimed], cfg: RenderConfig, *, metric: str = "auto",
             name: str = "tta") -> dict[str, Figure]:
    """Figure `name`: every run's metric against its predicted time on the cluster, the target as a line and each
    run's time to target as a marker on it."""
    if not runs:
        raise InputError("no retimed runs to plot")
    if metric == "auto":
        metric = "gap" if all(r.target_metric == "objective_gap" for r in runs) else "acc"
    if metric not in _METRIC:
        raise InputError(f"--metric must be one of auto, {', '.join(_METRIC)}, got {metric!r}")
    key, ylabel, _ = _METRIC[metric]
    drawn = [r for r in runs if any(v is not None for v in r.values[key])]
    if not drawn:
        raise InputError(f"none of the runs has {key!r} in its curve; choose another --metric")
    topologies = sorted({r.topology for r in drawn})
    scale = 100.0 if key == "test_acc" else 1.0
    with style():
        fig, (ax,) = new_figure(cfg, height_scale=1.25)
        for i, r in enumerate(drawn):
            pts = [(t, v * scale) for t, v in zip(r.time_s, r.values[key]) if v is not None and t > 0]
            if not pts:
                continue
            color, marker = f"C{i % 10}", "osD^v"[i // 10 % 5]
            ls = "--" if r.role == "reference" else "-"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, ls=ls, marker=marker, ms=3,
                    markevery=max(1, len(pts) // 12), label=r.label + (" (reference)" if r.role == "reference"
                                                                       else ""))
            if r.target_time_s is not None and r.target_metric == key and r.target_value is not None:
                ax.plot([r.target_time_s], [r.target_value * scale], marker="*", ms=11, color=color,
                        markeredgecolor="black", zorder=4, ls="none")
        targets = {(r.target_metric, r.target_value) for r in drawn if r.target_metric == key}
        for _, value in targets:
            if value is not None:
                ax.axhline(value * scale, color="black", lw=0.8, ls=":", label=f"target {value * scale:g}")
        times = [t for r in drawn for t in r.time_s if t > 0]
        if times and max(times) / min(times) > 50:
            ax.set_xscale("log")
        if key != "test_acc":
            vals = [v for r in drawn for v in r.values[key] if v is not None and v > 0]
            if vals and max(vals) / min(vals) > 20:
                ax.set_yscale("log")
        ax.set_xlabel("predicted wall time on the cluster (s)")
        ax.set_ylabel(ylabel)
        where = topologies[0] if len(topologies) == 1 else f"{len(topologies)} clusters"
        ax.set_title(f"Learning curves on the clock of {where} (star: time to target)")
        legend_below(fig, ax, ncols=2)
    if not all(math.isfinite(t) for r in drawn for t in r.time_s):
        raise InputError("a curve has a time that is not a finite number")
    return {name: fig}
