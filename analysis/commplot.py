"""All-reduce time and bus bandwidth against message size, from `comm bench` JSON lines (+ model overlay)."""
from __future__ import annotations

import logging
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

from analysis.costmodel import MODELLED, Calibration, allreduce_time, bandwidth_bound_s
from analysis.errors import InputError
from analysis.files import Record, get, get_num, opt, read_jsonl
from analysis.render import RenderConfig, bytes_axis, legend_below, new_figure, seconds_log_ticks, style

__all__ = ["BenchSeries", "load_bench", "bench_series", "plot_comm"]

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class BenchSeries:
    """One line of the plot: an (implementation, algorithm, p, gpus_per_node) over message sizes."""

    library: str
    algorithm: str
    p: int
    gpus_per_node: int | None
    bytes: list[float] = field(default_factory=list)
    t_median_s: list[float] = field(default_factory=list)
    t_min_s: list[float] = field(default_factory=list)
    t_max_s: list[float] = field(default_factory=list)
    busbw_GBps: list[float] = field(default_factory=list)
    incorrect: int = 0

    @property
    def label(self) -> str:
        name = "MPI_Allreduce (native)" if self.library == "mpi" else self.algorithm.replace("_", " ")
        node = f", {self.gpus_per_node}/node" if self.gpus_per_node else ""
        return f"{name}, p={self.p}{node}"


def load_bench(paths: Iterable[str | Path]) -> list[Record]:
    """All rows of the given bench files, each checked for the keys the plots need."""
    rows: list[Record] = []
    for path in paths:
        for rec in read_jsonl(path):
            for key in ("library", "algorithm", "p", "bytes", "t_median_s"):
                get(rec, key)
            if get_num(rec, "t_median_s") <= 0 or get_num(rec, "bytes") <= 0:
                raise InputError(f"{rec.source}: bytes and t_median_s must be > 0, "
                                 f"got bytes={rec['bytes']!r}, t_median_s={rec['t_median_s']!r}")
            rows.append(rec)
    if not rows:
        raise InputError("no bench rows given (expected one or more `comm bench --out` JSONL files)")
    return rows


def bench_series(rows: Sequence[Record]) -> list[BenchSeries]:
    """Group rows into series sorted by message size; repeated sizes (several files) take the median.

    busbw is recomputed from t_median (bytes / t * 2 (p-1)/p, in 1e9 B/s) so repeated files stay
    consistent; rows with ``"correct": false`` are counted and left out.
    """
    groups: dict[tuple, dict[float, list[Record]]] = defaultdict(lambda: defaultdict(list))
    bad: dict[tuple, int] = defaultdict(int)
    for rec in rows:
        gpn = opt(rec, "gpus_per_node")
        key = (str(rec["library"]), str(rec["algorithm"]), int(get_num(rec, "p")),
               int(gpn) if gpn else None)
        if opt(rec, "correct", True) is False:
            bad[key] += 1
            continue
        groups[key][get_num(rec, "bytes")].append(rec)
    out = []
    for key in sorted(set(groups) | set(bad), key=lambda k: (k[2], k[0] != "mpi", k[1], k[3] or 0)):
        s = BenchSeries(library=key[0], algorithm=key[1], p=key[2], gpus_per_node=key[3],
                        incorrect=bad.get(key, 0))
        for n in sorted(groups.get(key, {})):
            recs = groups[key][n]
            t = statistics.median(get_num(r, "t_median_s") for r in recs)
            s.bytes.append(n)
            s.t_median_s.append(t)
            s.t_min_s.append(min(float(opt(r, "t_min_s", r["t_median_s"])) for r in recs))
            s.t_max_s.append(max(float(opt(r, "t_max_s", r["t_median_s"])) for r in recs))
            s.busbw_GBps.append(n / t / 1e9 * 2 * (s.p - 1) / s.p)
        if s.incorrect:
            log.warning("%s: %d row(s) marked correct=false were left out", s.label, s.incorrect)
        if s.bytes:
            out.append(s)
    return out


def plot_comm(series: Sequence[BenchSeries], cfg: RenderConfig, cal: Calibration | None = None, *,
              spread: bool = False) -> dict[str, Figure]:
    """Figures ``comm_time`` and ``comm_busbw``; with ``cal`` the model (dashed) and the bandwidth bound.

    ``spread`` shades each series between its fastest and slowest iteration (t_min_s..t_max_s).
    """
    if not series:
        raise InputError("no correct bench rows to plot (every row was marked correct=false)")
    sizes = sorted({n for s in series for n in s.bytes})
    procs = sorted({s.p for s in series})
    with style():
        ft, (ax_t,) = new_figure(cfg, height_scale=1.25)
        fb, (ax_b,) = new_figure(cfg, height_scale=1.25)
        for i, s in enumerate(series):
            color = f"C{i % 10}"
            marker = "s" if s.library == "mpi" else "o"
            ax_t.plot(s.bytes, s.t_median_s, marker=marker, color=color, label=s.label)
            if spread and any(lo != hi for lo, hi in zip(s.t_min_s, s.t_max_s)):
                ax_t.fill_between(s.bytes, s.t_min_s, s.t_max_s, color=color, alpha=0.12, lw=0)
            ax_b.plot(s.bytes, s.busbw_GBps, marker=marker, color=color, label=s.label)
            if cal is not None and s.algorithm in MODELLED and s.library != "mpi" and s.p > 1:
                model = [allreduce_time(s.algorithm, n, s.p, cal) for n in s.bytes]
                ax_t.plot(s.bytes, model, ls="--", lw=1.1, color=color)
                ax_b.plot(s.bytes, [n / t / 1e9 * 2 * (s.p - 1) / s.p for n, t in zip(s.bytes, model)],
                          ls="--", lw=1.1, color=color)
        if cal is not None and cal.beta_s_per_byte > 0:
            for j, p in enumerate(x for x in procs if x > 1):
                ax_t.plot(sizes, [bandwidth_bound_s(n, p, cal) for n in sizes], ls=":", color="black",
                          lw=1.3, label="bandwidth bound 2(p-1)/p · n · β" if j == 0 else None)
            ax_b.axhline(cal.bandwidth_GBps, ls=":", color="black", lw=1.3, label="bandwidth bound 1/β")
        if cal is not None:
            bw = "unlimited (β = 0, no bound)" if cal.beta_s_per_byte == 0 else f"{cal.bandwidth_GBps:.3g} GB/s"
            gamma = f", 1/γ = {1 / cal.gamma_s_per_byte / 1e9:.3g} GB/s" if cal.gamma_s_per_byte > 0 else ""
            note = f"model ({cal.level}): α = {cal.alpha_s * 1e6:.3g} µs, 1/β = {bw}{gamma}"
            # Where the curves are not: time grows to the upper right, busbw to the upper right too.
            for ax, (x, y, ha, va) in ((ax_t, (0.01, 0.98, "left", "top")), (ax_b, (0.99, 0.02, "right", "bottom"))):
                ax.plot([], [], ls="--", color="grey", label="fitted α-β-γ model (dashed)")
                ax.text(x, y, note, transform=ax.transAxes, ha=ha, va=va, fontsize=8, color="dimgrey")
        for ax in (ax_t, ax_b):
            bytes_axis(ax, sizes)
            ax.set_yscale("log")
            ax.set_xlabel("message size (bytes, float32)")
        if cal is not None and cal.beta_s_per_byte > 0:
            # Keep the measurements in view: the bound falls far below them at small sizes.
            lowest = min(t for s in series for t in (s.t_min_s if spread else s.t_median_s))
            ax_t.set_ylim(bottom=lowest / 4)
        seconds_log_ticks(ax_t)
        ax_t.set_ylabel("time per all-reduce (median" + (", band: min–max)" if spread else ")"))
        ax_t.set_title("All-reduce time by message size")
        ax_b.set_ylabel("bus bandwidth (GB/s)")
        ax_b.set_title("All-reduce bus bandwidth, busbw = n/t · 2(p-1)/p")
        legend_below(ft, ax_t)
        legend_below(fb, ax_b)
    return {"comm_time": ft, "comm_busbw": fb}
