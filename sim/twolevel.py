"""Two-level calibration: intra- and inter-node alpha, beta, gamma and a per-call overhead from level-tagged rows."""
# Input: `python -m comm bench --level both` JSONL (or several files): every row carries "level": "intra" (timed
# on the node communicators, one rank per GPU of a node) or "inter" (timed on the leader communicator, one rank
# per node), besides the usual library, p, bytes, algorithm and t_median_s. Each level is fitted on its own:
#     t = o + A(p) alpha + B(p, n) beta + G(p, n) gamma
# with A, B, G the closed-form coefficients of the flat algorithm (sim/costs.py) and o a constant per call
# (Python, buffer handling, the barrier and max-reduce around each timed call). Non-negative least squares on
# relative residuals, as sim/calibrate.py; o is separable from alpha because A differs between algorithms and p.
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.calibrate import FIT_ALGORITHMS, LevelFit, read_bench, report_fits, solve_relative, usable_rows
from sim.errors import SimError
from sim.topology import Topology, load_topology, save_topology

__all__ = ["LEVELS", "TwoLevelFit", "fit_with_overhead", "split_levels", "two_level_topology",
           "cmd_calibrate_bench"]

LEVELS = ("intra", "inter")


@dataclass(kw_only=True)
class TwoLevelFit(LevelFit):
    """One level: alpha (s per message), beta and gamma (s per byte), overhead (s per call), R^2 and the worst rows
    (sim.calibrate.LevelFit plus the per-call overhead, which the topology charges per sync)."""

    overhead: float

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "bandwidth_GBps": None if self.beta == 0 else 1.0 / (self.beta * 1e9)}


def fit_with_overhead(rows: Iterable[dict[str, Any]], n_worst: int = 3) -> TwoLevelFit:
    """Fit (o, alpha, beta, gamma) to our flat algorithms' rows with p >= 2 and correct results."""
    used, X, y, skipped = usable_rows(rows, intercept=True)
    if len(used) < 4:
        raise SimError(f"a level needs at least 4 usable bench rows (localsgd {', '.join(FIT_ALGORITHMS)}, p >= 2) "
                       f"to fit overhead, alpha, beta and gamma, got {len(used)}")
    A, t = np.array(X), np.array(y)
    W = A / t[:, None]
    scale = np.abs(W).max(axis=0)
    scale[scale == 0] = 1.0
    notes = [f"{skipped} rows skipped (native MPI, hierarchical, p < 2 or incorrect)"] if skipped else []
    cols = [0, 1, 2, 3]
    if np.linalg.matrix_rank(W / scale, tol=1e-9) < 4:
        cols = [0, 1, 2]
        notes.append("beta and gamma are not separable from these rows (add recursive_doubling rows); gamma fixed at 0")
        if np.linalg.matrix_rank(W[:, cols] / scale[cols], tol=1e-9) < 3:
            cols = [1, 2]
            notes.append("the per-call overhead is not separable from alpha (one algorithm and one p): fixed at 0")
    coef, r2, worst = solve_relative(A, t, cols, scale, used, n_worst)
    return TwoLevelFit(overhead=float(coef[0]), alpha=float(coef[1]), beta=float(coef[2]), gamma=float(coef[3]),
                       r2=r2, rows=len(used), worst=worst, notes=notes)


def split_levels(paths: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Rows of the bench files by their "level" tag; a row without one is an error naming its file."""
    out: dict[str, list[dict[str, Any]]] = {lv: [] for lv in LEVELS}
    for path in paths:
        for i, row in enumerate(read_bench(path), 1):
            lv = row.get("level")
            if lv not in LEVELS:
                raise SimError(f"bench file {path!r} row {i}: level must be intra or inter, got {lv!r}; measure with "
                               f"`python -m comm bench --level both`, or pass untagged files with --intra / --inter")
            out[lv].append(row)
    return out


def two_level_topology(base: Topology, fits: dict[str, TwoLevelFit], *, name: str, nodes: int | None = None,
                       gpus_per_node: int | None = None) -> Topology:
    """`base` with the fitted levels; a global sync is charged one call overhead per level, a block sync the intra
    one."""
    o_intra = fits["intra"].overhead if "intra" in fits else 0.0
    o_inter = fits["inter"].overhead if "inter" in fits else 0.0
    measured = ", ".join(f"{k} (R^2 {v.r2:.4f}, {v.rows} rows, overhead {v.overhead:.3g} s per call)"
                         for k, v in sorted(fits.items()))
    kept = [k for k in LEVELS if k not in fits]
    desc = f"calibrate --bench: two-level fit from level-tagged comm bench rows: {measured}"
    desc += (f"; {', '.join(kept)} level and " if kept else "; ") + f"compute taken from {base.name!r} (not measured)"
    return dataclasses.replace(
        base, name=name, description=desc, nodes=base.nodes if nodes is None else nodes,
        gpus_per_node=base.gpus_per_node if gpus_per_node is None else gpus_per_node,
        intra=fits["intra"].level("intra") if "intra" in fits else base.intra,
        inter=fits["inter"].level("inter") if "inter" in fits else base.inter,
        sync_overhead_s=(o_intra + o_inter, o_intra))


def cmd_calibrate_bench(a: argparse.Namespace) -> int:
    """`sim calibrate --bench FILE...`: fit each level present in the files and report R^2 per level."""
    if a.intra or a.inter:
        raise SimError("--bench takes level-tagged rows; give untagged --intra / --inter files in a separate call")
    by_level = split_levels(a.bench)
    fits = {lv: fit_with_overhead(rows) for lv, rows in by_level.items() if rows}
    topo = two_level_topology(load_topology(a.base), fits, name=a.name, nodes=a.nodes, gpus_per_node=a.gpus_per_node)
    if a.out:
        save_topology(topo, a.out)
    return report_fits(dict(fits), a.out, a.json)
