"""Speedup against K for each H (simulated or measured), and time-to-accuracy bars of real runs."""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator

from analysis.errors import InputError
from analysis.render import RenderConfig, legend_below, new_figure, style
from analysis.runs import RunDir
from analysis.simout import SimPoint, group_lines

__all__ = ["sim_speedup_lines", "run_speedup_lines", "plot_speedup", "plot_time_to_acc"]

# (label, xs, ys, colour group, dash group): colour follows H (and H^b), dashes follow the rest.
Line = tuple[str, list[float], list[float], str, str]
_DASHES = ("-", "--", "-.", (0, (1, 1)), (0, (5, 1, 1, 1)))


def _groups(config: dict) -> tuple[str, str]:
    hb = config.get("Hb")
    colour = f"H={config.get('H')}" + (f", Hᵇ={hb}" if hb not in (None, 1) else "")
    rest = ", ".join(str(config[k]) for k in ("topology", "algorithm", "allreduce", "model")
                     if config.get(k) is not None)
    return colour, rest


def sim_speedup_lines(points: Sequence[SimPoint]) -> list[Line]:
    """Speedup over K per configuration: the simulator's own figure, else wall(K=1) / wall(K) of the line."""
    lines = []
    for label, xs, ys, pts in group_lines(points, "K", "wall_s"):
        given = [p.speedup for p in pts]
        colour, dash = _groups(dict(pts[0].config))
        if all(v is not None for v in given):
            lines.append((label, xs, [float(v) for v in given if v is not None], colour, dash))
        elif 1.0 in xs:
            t1 = ys[xs.index(1.0)]
            lines.append((label, xs, [t1 / t for t in ys], colour, dash))
        else:
            raise InputError(f"{pts[0].source}: no 'speedup' key and no K=1 record to compute it from "
                             f"for {label}")
    if not lines:
        lines = [(label, xs, ys, *_groups(dict(pts[0].config)))
                 for label, xs, ys, pts in group_lines(points, "K", "speedup")]
    if not lines:
        raise InputError("no simulator record has 'speedup' or 'wall_s' to plot against K")
    return lines


def run_speedup_lines(runs: Sequence[RunDir], *, use_tta: bool = False) -> tuple[list[Line], str, int]:
    """Measured speedup T(ref) / T(run) per (algorithm, H, H^b), ref = the run with the fewest workers.

    With several runs at that K the reference is the one with the smallest H (mini-batch SGD when
    present). T is the total wall time, or the time to the target accuracy with ``use_tta``.
    Returns the lines, the reference's label and its K.
    """
    timed = []
    for run in runs:
        K = run.cfg("K")
        if K is None:
            raise InputError(f"{run.path}: missing key 'K' (or 'world_size') in config.json")
        t = run.summary_num("tta_s") if use_tta else run.wall_s()
        if t is not None and math.isfinite(t) and t > 0:
            timed.append((run, int(K), t))
    if not timed:
        what = "time_to_acc_s in summary.json" if use_tta else "wall_s"
        raise InputError(f"no run has {what} to compute a speedup from")
    ref_run, ref_K, ref_t = min(timed, key=lambda x: (x[1], x[0].effective_h(), x[2]))
    groups: dict[tuple, list[tuple[int, float]]] = defaultdict(list)
    for run, K, t in timed:
        key = (run.cfg("algorithm", "?"), *run.effective_h(), run.cfg("compress", "none"))
        groups[key].append((K, ref_t / t))
    lines = []
    for (alg, H, Hb, compress), pts in sorted(groups.items(), key=lambda kv: tuple(str(v) for v in kv[0])):
        if len({k for k, _ in pts}) < len(pts):
            raise InputError(f"two runs of {alg} H={H} at the same K: give one run per K "
                             f"(runs: {', '.join(r.name for r, _, _ in timed)})")
        pts.sort()
        label = (alg if alg == "minibatch" else f"{alg}, H={H}") + (f", Hᵇ={Hb}" if Hb != 1 else "") \
            + (f", {compress}" if compress not in (None, "none") else "")
        lines.append((label, [float(k) for k, _ in pts], [s for _, s in pts], label, ""))
    return lines, ref_run.label, ref_K


def plot_speedup(lines: Sequence[Line], cfg: RenderConfig, *, reference: str = "one worker",
                 ref_K: float = 1.0, title: str = "Speedup over K") -> dict[str, Figure]:
    """Figure ``speedup``: one line per configuration, log2 K axis, and the ideal linear speedup."""
    ks = sorted({k for line in lines for k in line[1]})
    if not ks:
        raise InputError("nothing to plot: no speedup values")
    with style():
        fig, (ax,) = new_figure(cfg, height_scale=1.2)
        colours = list(dict.fromkeys(line[3] for line in lines))
        dashes = list(dict.fromkeys(line[4] for line in lines))
        for label, xs, ys, colour, dash in lines:
            ax.plot(xs, ys, marker="o", color=f"C{colours.index(colour) % 10}",
                    ls=_DASHES[dashes.index(dash) % len(_DASHES)], label=label)
        ax.plot(ks, [k / ref_K for k in ks], ls=":", color="black", label="ideal (linear)")
        ax.set_xscale("log", base=2)
        ys = [y for line in lines for y in line[2]] + [k / ref_K for k in ks]
        if max(ys) / min(ys) >= 4:  # log2 only where it spans enough doublings to show ticks
            ax.set_yscale("log", base=2)
            ax.yaxis.set_major_locator(LogLocator(base=2, subs=(1.0,), numticks=30))  # every doubling
            ax.set_ylim(bottom=2.0 ** math.floor(math.log2(min(ys))) * 0.92)  # a labelled tick below the lowest
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter("{x:g}")
        ax.set_xlabel("K (workers)")
        ax.set_ylabel(f"speedup over {reference} (×)")
        ax.set_title(title)
        legend_below(fig, ax, ncols=3)
    return {"speedup": fig}


def plot_time_to_acc(runs: Sequence[RunDir], cfg: RenderConfig) -> dict[str, Figure]:
    """Figure ``time_to_acc``: one bar per run; a run that never reached the target is marked so."""
    labels = [r.label for r in runs]
    if len(set(labels)) < len(labels):
        labels = [f"{r.label} ({r.name})" for r in runs]
    values = [r.summary_num("tta_s") for r in runs]
    targets = {t for r in runs if (t := r.summary_num("target_acc")) is not None}
    if all(v is None for v in values):
        raise InputError("no run has a time to accuracy (time_to_acc_s in summary.json); "
                         "train with --target-acc")
    reached = [v for v in values if v is not None and math.isfinite(v)]
    with style():
        fig, (ax,) = new_figure(cfg, height_scale=max(0.8, min(2.0, 0.45 + 0.18 * len(runs))))
        for i, v in enumerate(values):
            if v is not None and math.isfinite(v):
                ax.barh(i, v, color=f"C{i % 10}", height=0.6)
                ax.text(v, i, f" {v:.3g} s", va="center", fontsize=8.5)
            else:
                ax.text(0, i, " target not reached", va="center", fontsize=8.5, color="dimgrey")
        ax.set_yticks(range(len(runs)), labels)
        ax.set_ylabel("run")
        ax.set_ylim(len(runs) - 0.5, -0.5)  # every row, bar or not, first run on top
        ax.grid(axis="y", visible=False)
        ax.set_xlim(0, max(reached) * 1.2 if reached else 1)
        ax.set_xlabel("wall-clock time to target accuracy (s)")
        tgt = ", ".join(f"{t * 100:g}%" if t <= 1 else f"{t:g}%" for t in sorted(targets))
        ax.set_title(f"Time to accuracy{f' (target {tgt})' if tgt else ''}")
    return {"time_to_acc": fig}
