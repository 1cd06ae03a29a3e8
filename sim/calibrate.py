"""Fit alpha, beta, gamma per network level from `python -m comm bench` JSON lines by least squares."""
from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import nnls

from atomicio import read_jsonl_numbered
from sim.costs import terms
from sim.errors import SimError
from sim.topology import Level, Topology

__all__ = ["FIT_ALGORITHMS", "LevelFit", "read_bench", "usable_rows", "solve_relative", "fit_level",
           "calibrated_topology", "report_fits"]

log = logging.getLogger(__name__)

#: Rows of our own flat algorithms have a known cost form; native MPI and hierarchical rows do not.
FIT_ALGORITHMS = ("recursive_doubling", "rabenseifner", "ring")
REQUIRED = ("library", "p", "bytes", "algorithm", "t_median_s")


def read_bench(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a comm bench JSONL file; a malformed line is an error naming the file and line."""
    rows = []
    name = f"bench file {os.fspath(path)!r}"
    for i, row in read_jsonl_numbered(path, error=SimError):
        for key in REQUIRED:
            if key not in row:
                raise SimError(f"{name} line {i}: missing key {key!r}")
        rows.append(row)
    return rows


@dataclass(kw_only=True)
class LevelFit:
    """Fitted alpha (s), beta (s/byte), gamma (s/byte) of one level, with R^2 and the worst rows."""

    alpha: float
    beta: float
    gamma: float
    r2: float
    rows: int
    worst: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def level(self, name: str) -> Level:
        bw = None if self.beta == 0 else 1.0 / (self.beta * 1e9)
        return Level(name=name, latency_s=self.alpha, bandwidth_GBps=bw, overhead_s=0.0, gamma_s_per_byte=self.gamma)

    def to_json(self) -> dict[str, Any]:
        return {"alpha_s": self.alpha, "beta_s_per_byte": self.beta, "gamma_s_per_byte": self.gamma,
                "bandwidth_GBps": None if self.beta == 0 else 1.0 / (self.beta * 1e9), "r2": self.r2,
                "rows": self.rows, "worst": self.worst, "notes": self.notes}


def usable_rows(rows: Iterable[dict[str, Any]], intercept: bool = False
                ) -> tuple[list[dict[str, Any]], list[tuple[float, ...]], list[float], int]:
    """The bench rows a fit can use (our flat algorithms, p >= 2, a finite time, a correct result): the rows, their
    cost-form terms (alpha, beta, gamma; a leading 1 for a per-call overhead with intercept=True), their times, and
    how many rows were skipped."""
    used: list[dict[str, Any]] = []
    X: list[tuple[float, ...]] = []
    y: list[float] = []
    skipped = 0
    for r in rows:
        p, n, t = r.get("p"), r.get("bytes"), r.get("t_median_s")
        if r.get("library") != "localsgd" or r.get("algorithm") not in FIT_ALGORITHMS or r.get("correct") is False \
                or not (isinstance(p, int) and p >= 2 and isinstance(n, (int, float)) and n >= 0
                        and isinstance(t, (int, float)) and math.isfinite(t) and t > 0):
            skipped += 1
            continue
        used.append(r)
        cost = tuple(terms(r["algorithm"], p, float(n)))
        X.append((1.0, *cost) if intercept else cost)
        y.append(float(t))
    return used, X, y, skipped


def solve_relative(A: np.ndarray, t: np.ndarray, cols: list[int], scale: np.ndarray, used: list[dict[str, Any]],
                   n_worst: int) -> tuple[np.ndarray, float, list[dict[str, Any]]]:
    """Non-negative least squares of t on the columns `cols` of A, residuals relative to t (the rows of W = A / t
    are scaled by `scale`): the coefficients (zero outside cols), R^2 on t, and the n_worst rows by |residual|."""
    c, _ = nnls((A / t[:, None])[:, cols] / scale[cols], np.ones(len(t)))
    coef = np.zeros(A.shape[1])
    coef[cols] = c / scale[cols]
    pred = A @ coef
    ss_res, ss_tot = float(((t - pred) ** 2).sum()), float(((t - t.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)
    rel = (pred - t) / t
    worst = [{"p": used[i]["p"], "bytes": used[i]["bytes"], "algorithm": used[i]["algorithm"],
              "t_median_s": float(t[i]), "t_fit_s": float(pred[i]), "rel_residual": float(rel[i])}
             for i in np.argsort(-np.abs(rel))[:n_worst]]
    return coef, r2, worst


def fit_level(rows: Iterable[dict[str, Any]], n_worst: int = 3) -> LevelFit:
    """Non-negative least squares on each algorithm's cost form, weighted by 1/t (relative residuals).

    Only rows of our own recursive doubling, Rabenseifner and ring with p >= 2 and correct results are
    used. If the rows cannot separate beta from gamma (Rabenseifner and ring carry them in a fixed
    2:1 ratio; recursive doubling rows break it), gamma is fixed at 0 and a note says so.
    """
    used, X, y, skipped = usable_rows(rows)
    if len(used) < 2:
        raise SimError(f"calibration needs at least 2 usable bench rows (localsgd {', '.join(FIT_ALGORITHMS)}, "
                       f"p >= 2), got {len(used)}")
    A, t = np.array(X), np.array(y)
    W = A / t[:, None]
    notes = []
    if skipped:
        notes.append(f"{skipped} rows skipped (native MPI, hierarchical, p < 2 or incorrect)")
    cols = [0, 1, 2]
    scale = np.abs(W).max(axis=0)
    scale[scale == 0] = 1.0
    if np.linalg.matrix_rank(W / scale) < 3:
        cols = [0, 1]
        notes.append("beta and gamma are not separable from these rows (add recursive_doubling rows); gamma fixed at 0")
    coef, r2, worst = solve_relative(A, t, cols, scale, used, n_worst)
    log.info("fit over %d rows: alpha=%g beta=%g gamma=%g R2=%.4f", len(used), *coef, r2)
    return LevelFit(alpha=float(coef[0]), beta=float(coef[1]), gamma=float(coef[2]), r2=r2, rows=len(used),
                    worst=worst, notes=notes)


def calibrated_topology(base: Topology, fits: dict[str, LevelFit], *, name: str, nodes: int | None = None,
                        gpus_per_node: int | None = None) -> Topology:
    """`base` with its fitted levels replaced; the description says which levels were measured."""
    intra = fits["intra"].level("intra") if "intra" in fits else base.intra
    inter = fits["inter"].level("inter") if "inter" in fits else base.inter
    measured = ", ".join(f"{k} (R^2 {v.r2:.4f}, {v.rows} rows)" for k, v in sorted(fits.items())) or "none"
    kept = [k for k in ("intra", "inter") if k not in fits]
    desc = f"calibrate: fitted from comm bench: {measured}"
    if kept:
        desc += f"; {', '.join(kept)} level and compute taken from preset {base.name!r} (assumed, not measured)"
    else:
        desc += f"; compute taken from preset {base.name!r}"
    return Topology(name=name, description=desc, nodes=base.nodes if nodes is None else nodes,
                    gpus_per_node=base.gpus_per_node if gpus_per_node is None else gpus_per_node,
                    intra=intra, inter=inter, compute=base.compute)


def report_fits(fits: dict[str, LevelFit], out: str | None, as_json: bool) -> int:
    """Print fitted levels as `sim calibrate` does (one JSON object, or a line per level with its worst rows)."""
    if as_json:
        print(json.dumps({"levels": {k: v.to_json() for k, v in fits.items()}, "out": out}))
        return 0
    for k, v in fits.items():
        bw = "unlimited" if v.beta == 0 else f"{1 / v.beta / 1e9:.4g} GB/s"
        overhead = getattr(v, "overhead", None)  # the two-level fit's per-call overhead
        head = "" if overhead is None else f"overhead {overhead:.4g} s per call, "
        print(f"{k}: {head}alpha {v.alpha:.4g} s, beta {v.beta:.4g} s/B ({bw}), gamma {v.gamma:.4g} s/B, "
              f"R^2 {v.r2:.5f} over {v.rows} rows")
        for w in v.worst:
            print(f"  worst: p={w['p']} {w['bytes']} B {w['algorithm']}: measured {w['t_median_s']:.4g} s, "
                  f"fit {w['t_fit_s']:.4g} s ({100 * w['rel_residual']:+.1f} %)")
        for note in v.notes:
            print(f"  note: {note}")
    if out:
        print(f"wrote topology {out}")
    return 0
