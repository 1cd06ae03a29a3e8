"""Vectorised local SGD on logistic regression: K workers x many step-size runs advance in one numpy step."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from sim.convex.errors import ConvexError
from sim.convex.objective import LogisticObjective, sigmoid
from sim.convex.sampler import SAMPLING_MODES, Sampler
from sim.convex.target import TargetChecker

__all__ = ["AVERAGE_WEIGHTS", "SCHEDULES", "Problem", "Protocol", "Run", "RunResult", "simulate", "step_size",
           "trajectory"]

SCHEDULES = ("decay", "const")
#: Weight of the iterate after s local steps (s >= 1) in the averaged iterate: s ** power.
AVERAGE_WEIGHTS = {"uniform": 0, "linear": 1, "quadratic": 2}


def _positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConvexError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


@dataclass(kw_only=True)
class Protocol:
    """Settings shared by every run of an experiment (SPEC section 6 defaults)."""

    epsilon: float = 0.005
    unit_grad: float = 1.0
    unit_comm: float = 25.0
    gamma_cap: float = 32.0
    max_time: float = 2.0e6
    average: str = "quadratic"
    seed: int = 0
    sampling: str = "iid"
    k1_comm: bool = False

    def __post_init__(self) -> None:
        self.epsilon = _positive("epsilon", self.epsilon)
        self.unit_grad = _positive("unit_grad", self.unit_grad)
        self.unit_comm = _positive("unit_comm", self.unit_comm, allow_zero=True)
        self.gamma_cap = _positive("gamma_cap", self.gamma_cap)
        self.max_time = _positive("max_time", self.max_time)
        if self.average not in AVERAGE_WEIGHTS:
            raise ConvexError(f"average must be one of {', '.join(AVERAGE_WEIGHTS)}, got {self.average!r}")
        if self.sampling not in SAMPLING_MODES:
            raise ConvexError(f"sampling must be one of {', '.join(SAMPLING_MODES)}, got {self.sampling!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConvexError(f"seed must be an integer >= 0, got {self.seed!r}")

    def round_time(self, K: int, H: int, B: int) -> float:
        """Time units of one round: H local steps of B sample gradients, then one all-reduce.

        With K = 1 there is nothing to average, so the round is free of communication unless k1_comm.
        """
        comm = self.unit_comm if (K > 1 or self.k1_comm) else 0.0
        return H * B * self.unit_grad + comm


@dataclass(kw_only=True)
class Run:
    """One step-size choice: schedule "decay" (min(cap, c n/(t+1))) or "const" (cap * c), c = 2**c_exp."""

    schedule: str
    c_exp: int
    group: int = 0

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConvexError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if isinstance(self.c_exp, bool) or not isinstance(self.c_exp, int) or abs(self.c_exp) > 60:
            raise ConvexError(f"c_exp must be an integer in [-60, 60] (c = 2**c_exp), got {self.c_exp!r}")

    @property
    def c(self) -> float:
        return 2.0 ** self.c_exp


@dataclass(kw_only=True)
class RunResult:
    """Outcome of one run: `time` to target in units (None if not reached before `stopped_at`)."""

    schedule: str
    c_exp: int
    c: float
    time: float | None
    iterate: str | None
    stopped_at: float
    steps: int
    diverged: bool
    gap: float


def step_size(schedule: str, c: np.ndarray | float, t: int, n: int, cap: float) -> np.ndarray:
    """gamma_t at local step t (t = 0, 1, ...): min(cap, c n / (t + 1)) for "decay", cap * c for "const"."""
    c = np.asarray(c, dtype=np.float64)
    if schedule == "decay":
        return np.minimum(cap, c * n / (t + 1))
    if schedule == "const":
        return cap * c
    raise ConvexError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")


class Problem:
    """The data (rows scaled by their labels), the objective and f*, shared by all runs."""

    def __init__(self, objective: LogisticObjective, *, fstar: float) -> None:
        self.objective = objective
        self.fstar = float(fstar)
        Z = sp.csr_matrix(sp.diags(objective.y) @ objective.X)
        Z.sort_indices()
        self.indptr = Z.indptr.astype(np.int64)
        self.indices = Z.indices.astype(np.int64)
        self.data = Z.data.astype(np.float64)
        self.n = objective.n
        self.d = objective.d
        self.lam = objective.lam


def _batch_matrix(problem: Problem, idx: np.ndarray, K: int) -> sp.csr_matrix:
    """Rows b_i a_i of the sampled indices, worker k's rows shifted to columns [k d, (k+1) d)."""
    flat = idx.reshape(-1)
    starts = problem.indptr[flat]
    lens = problem.indptr[flat + 1] - starts
    rowptr = np.zeros(flat.size + 1, dtype=np.int64)
    np.cumsum(lens, out=rowptr[1:])
    pos = np.repeat(starts - rowptr[:-1], lens) + np.arange(rowptr[-1], dtype=np.int64)
    shift = np.repeat(np.repeat(np.arange(K, dtype=np.int64) * problem.d, idx.shape[1]), lens)
    return sp.csr_matrix((problem.data[pos], problem.indices[pos] + shift, rowptr),
                         shape=(flat.size, K * problem.d))


SyncHook = Callable[[int, float, np.ndarray, np.ndarray], None]


def simulate(problem: Problem, protocol: Protocol, *, K: int, H: int, B: int, runs: list[Run],
             stop_times: dict[int, float] | None = None, on_sync: SyncHook | None = None) -> list[RunResult]:
    """Run local SGD for every run in `runs` at once, all on the same samples, until each run's group stops.

    A group stops at the first sync where one of its runs meets the target (its other runs can only be
    worse), at its entry in `stop_times`, or at protocol.max_time. The target is checked after every
    sync on the better of the last iterate and the weighted average of the averaged iterates.
    `on_sync(round, time, last, average)` sees the (d, runs) models after every sync.
    """
    for name, v in (("K", K), ("H", H), ("B", B)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConvexError(f"{name} must be an integer >= 1, got {v!r}")
    if not runs:
        raise ConvexError("runs must hold at least one Run, got an empty list")
    d, R = problem.d, len(runs)
    sampler = Sampler(n=problem.n, K=K, B_loc=B, seed=protocol.seed, mode=protocol.sampling)
    checker = TargetChecker(problem.objective, fstar=problem.fstar, epsilon=protocol.epsilon)
    power = AVERAGE_WEIGHTS[protocol.average]
    round_time = protocol.round_time(K, H, B)
    group_stop = {r.group: protocol.max_time for r in runs}
    for g, t_stop in (stop_times or {}).items():
        if g in group_stop:
            group_stop[g] = min(group_stop[g], float(t_stop))
    c = np.array([r.c for r in runs])
    decay = np.array([r.schedule == "decay" for r in runs])
    results: list[RunResult | None] = [None] * R
    active = np.arange(R)
    W = np.zeros((K * d, R))
    acc = np.zeros((K * d, R))
    wsum = 0.0
    t = 0
    rnd = 0
    while active.size:
        S = _batch_matrix(problem, sampler.indices(t), K)
        grad = (S.T @ sigmoid(-(S @ W))) * (-1.0 / B) + problem.lam * W
        gamma = np.where(decay[active], np.minimum(protocol.gamma_cap, c[active] * problem.n / (t + 1)),
                         protocol.gamma_cap * c[active])
        W -= grad * gamma
        t += 1
        weight = float(t) ** power
        acc += weight * W
        wsum += weight
        if t % H:
            continue
        rnd += 1
        now = rnd * round_time
        last = W.reshape(K, d, -1).mean(axis=0)
        avg = acc.reshape(K, d, -1).mean(axis=0) / wsum
        W[:] = np.tile(last, (K, 1))
        if on_sync is not None:
            on_sync(rnd, now, last, avg)
        finite = np.isfinite(last).all(axis=0)
        gaps = checker.gaps(np.concatenate([np.where(finite, last, 0.0), np.where(finite, avg, 0.0)], axis=1))
        a = active.size
        best: np.ndarray = np.minimum(gaps[:a], gaps[a:])
        hit = finite & (best <= protocol.epsilon)
        for j in map(int, np.flatnonzero(hit)):
            g = runs[active[j]].group
            group_stop[g] = min(group_stop[g], now)
        stopping = [j for j, r in enumerate(active)
                    if not hit[j] and finite[j] and now >= group_stop[runs[r].group]]
        if stopping:  # the exact gap where a run gives up tells the c search which way to move
            sel = np.asarray(stopping, dtype=np.int64)
            vals = np.asarray(problem.objective.value(np.concatenate([last[:, sel], avg[:, sel]], axis=1)))
            best[sel] = np.minimum(vals[:sel.size], vals[sel.size:]) - problem.fstar
        keep = []
        for j, r in enumerate(active):
            g = runs[r].group
            if hit[j] or not finite[j] or now >= group_stop[g]:
                which = None
                if hit[j]:
                    which = "last" if gaps[j] <= gaps[a + j] else "average"
                results[r] = RunResult(schedule=runs[r].schedule, c_exp=runs[r].c_exp, c=runs[r].c,
                                       time=now if hit[j] else None, iterate=which, stopped_at=now,
                                       steps=t, diverged=not finite[j],
                                       gap=float(best[j]) if finite[j] else math.inf)
            else:
                keep.append(j)
        if len(keep) < a:
            keep_arr = np.asarray(keep, dtype=np.int64)
            active, W, acc = active[keep_arr], W[:, keep_arr], acc[:, keep_arr]
    return [r for r in results if r is not None]


def trajectory(problem: Problem, protocol: Protocol, *, K: int, H: int, B: int, run: Run,
               rounds: int) -> list[dict]:
    """f after each of the first `rounds` syncs of one run, ignoring the target: the trainer's reference.

    Each row: round, time (units), step (local steps so far), f_last (the synced model), f_average.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConvexError(f"rounds must be an integer >= 1, got {rounds!r}")
    rows: list[dict] = []

    def record(rnd: int, now: float, last: np.ndarray, avg: np.ndarray) -> None:
        values = np.asarray(problem.objective.value(np.stack([last[:, 0], avg[:, 0]], axis=1)))
        rows.append({"round": rnd, "time": now, "step": rnd * H, "f_last": float(values[0]),
                     "f_average": float(values[1])})

    # The smallest positive float as epsilon: no gap reaches it, so the run goes on for all rounds.
    endless = replace(protocol, epsilon=5e-324, max_time=rounds * protocol.round_time(K, H, B))
    simulate(problem, endless, K=K, H=H, B=B, runs=[Run(schedule=run.schedule, c_exp=run.c_exp)],
             on_sync=record)
    return rows
