"""The tuner's decisions: successive halving on the predicted time to target, and the final ranking over seeds."""
# Pure (no torch, no MPI, no files): the tuner (train/tune.py) feeds it what the retimed runs say, so the rules are
# tested on synthetic curves (tests/unit/test_tune_halving.py).
#
# A candidate is trained rung by rung (epochs e_0 < e_1 < ... < E; the runs pause and resume, so the trajectory is
# the one of an uninterrupted run). After each rung every candidate still in the race has a learning curve on the
# cluster's predicted clock:
#   1. a candidate whose curve reached the target is finished: its time to target is known (the first evaluation
#      that reached it) and further training cannot change it;
#   2. a candidate that has not reached the target although the cluster's clock at its last evaluation is already
#      at or past the best finished candidate's time to target cannot win: it is stopped;
#   3. before the last rung, the other unfinished candidates are ranked by an estimate of their time to target on
#      the cluster, extrapolated from their own curve on its clock: over the second half of its evaluations the metric
#      moved at some rate per predicted second; at that rate the last value reaches the target at
#      t_last + (target - v_last) / rate. Only the top ceil(n / eta) go on (successive halving). A curve that has not
#      improved lately (or has a single evaluation) gets no estimate and ranks after those that have one, by its
#      best value.
#      (Comparing the metric at one common time fails when clocks differ by orders of magnitude: a candidate on one
#      node may finish its rung before another's first evaluation across nodes.)
#   4. at the last rung an unfinished candidate did not reach the target in the run's epochs.
# The finalists are the finished candidates with the shortest times to target; each is then run with more seeds and
# ranked by its median time to target over the seeds (a seed that does not reach the target counts as infinite).
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Observation", "Decision", "rung_epochs", "estimate_tta", "decide", "finalists", "SeedResult",
           "rank_final"]


@dataclass(kw_only=True, frozen=True)
class Observation:
    """One candidate's retimed run after a rung: its curve (predicted time, metric value) and whether it reached
    the target."""

    cid: str
    epochs: float
    curve: tuple[tuple[float, float | None], ...]
    tta_s: float | None            # predicted time to target (None: not reached)
    end_s: float                   # predicted time at its last evaluation

    @property
    def reached(self) -> bool:
        return self.tta_s is not None


@dataclass(kw_only=True, frozen=True)
class Decision:
    """What happened to a candidate at a rung: "finished", "continue" or "stopped", and why."""

    cid: str
    rung: int
    action: str
    reason: str
    score: float | None = None


def rung_epochs(epochs: float, rungs: int, eta: float, eval_every: float) -> list[float]:
    """Epochs at the end of each rung: E / eta^(R-1-r), rounded up to a multiple of eval_every (so every rung ends on
    an evaluation), increasing, the last one E."""
    if rungs < 1 or eta <= 1 or epochs <= 0 or eval_every <= 0:
        raise ValueError(f"need rungs >= 1, eta > 1, epochs > 0 and eval_every > 0, got {rungs}, {eta}, {epochs}, "
                         f"{eval_every}")
    out: list[float] = []
    for r in range(rungs - 1):
        e = epochs / eta ** (rungs - 1 - r)
        e = math.ceil(e / eval_every - 1e-9) * eval_every
        if e < epochs - 1e-9 and (not out or e > out[-1] + 1e-9):
            out.append(round(e, 9))
    return out + [epochs]


def estimate_tta(curve: Sequence[tuple[float, float | None]], target: float,
                 larger_is_better: bool) -> tuple[float | None, float | None]:
    """(estimated time to target, best value so far) of a curve of (predicted time, metric): the last value carried
    on at the rate the metric moved over the second half of the evaluations. None when there is no such progress
    (fewer than two evaluations, a plateau, or a fall)."""
    pts = [(t, v) for t, v in curve if v is not None and math.isfinite(v)]
    if not pts:
        return None, None
    sign = 1.0 if larger_is_better else -1.0
    best = max(v * sign for _, v in pts) * sign
    t_m, v_m = pts[(len(pts) - 1) // 2]
    t_l, v_l = pts[-1]
    if t_l <= t_m or sign * (v_l - v_m) <= 0:
        return None, best
    rate = (v_l - v_m) / (t_l - t_m)
    return t_l + max(0.0, (target - v_l) / rate), best


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def decide(obs: Sequence[Observation], rung: int, last: bool, *, eta: float, larger_is_better: bool,
           best: tuple[str, float] | None, target: float, metric: str = "metric") -> list[Decision]:
    """The decisions at the end of `rung` for the candidates observed there; `best` is the (candidate, time to
    target) of the best candidate finished at an earlier rung, if any."""
    out: list[Decision] = []
    for o in obs:
        if o.reached:
            out.append(Decision(cid=o.cid, rung=rung, action="finished", score=o.tta_s,
                                reason=f"reached the target at {o.tta_s:.4g} s predicted (epoch <= {o.epochs:g})"))
    done = [(o.cid, o.tta_s) for o in obs if o.tta_s is not None] + ([best] if best else [])
    top = min(done, key=lambda x: (x[1], x[0])) if done else None
    rest = []
    for o in obs:
        if o.reached:
            continue
        if top is not None and o.end_s >= top[1]:
            out.append(Decision(cid=o.cid, rung=rung, action="stopped", score=o.end_s,
                                reason=(f"cannot win: {o.end_s:.4g} s predicted by epoch {o.epochs:g} without "
                                        f"reaching the target, already past {top[0]}'s time to target "
                                        f"{top[1]:.4g} s")))
        else:
            rest.append(o)
    if last:
        out += [Decision(cid=o.cid, rung=rung, action="stopped", score=None,
                         reason=f"did not reach the target in {o.epochs:g} epochs ({o.end_s:.4g} s predicted)")
                for o in rest]
        return out
    if not rest:
        return out
    sign = -1.0 if larger_is_better else 1.0
    est = {o.cid: estimate_tta(o.curve, target, larger_is_better) for o in rest}

    def order(o: Observation) -> tuple[bool, float, float, str]:
        t_hat, best_v = est[o.cid]
        return (t_hat is None, 0.0 if t_hat is None else t_hat, math.inf if best_v is None else sign * best_v, o.cid)

    rest.sort(key=order)
    keep = max(1, math.ceil(len(rest) / eta))
    for i, o in enumerate(rest):
        t_hat, best_v = est[o.cid]
        how = (f"estimated time to target {t_hat:.4g} s" if t_hat is not None else
               f"no estimate (its {metric} has not improved over the rung), best {metric} {_fmt(best_v)}")
        where = f"{how}, rank {i + 1} of {len(rest)}"
        if i < keep:
            out.append(Decision(cid=o.cid, rung=rung, action="continue", score=t_hat,
                                reason=f"successive halving: {where}, in the top {keep}"))
        else:
            out.append(Decision(cid=o.cid, rung=rung, action="stopped", score=t_hat,
                                reason=f"successive halving: {where}, below the top {keep}"))
    return out


def finalists(finished: dict[str, float], n: int) -> list[str]:
    """The n finished candidates with the shortest predicted times to target (ties by id)."""
    return [c for c, _ in sorted(finished.items(), key=lambda x: (x[1], x[0]))[:n]]


@dataclass(kw_only=True)
class SeedResult:
    """A candidate's predicted times to target over its seeds (None: that seed did not reach it)."""

    cid: str
    tta_s: list[float | None] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        vals = [math.inf if v is None else v for v in self.tta_s]
        return statistics.median(vals) if vals else math.inf

    @property
    def spread(self) -> tuple[float, float] | None:
        vals = [v for v in self.tta_s if v is not None]
        return (min(vals), max(vals)) if vals else None


def rank_final(results: Sequence[SeedResult]) -> list[SeedResult]:
    """Finalists ranked by median time to target over seeds, then by the worst seed, then by id."""
    def worst(r: SeedResult) -> float:
        return max((math.inf if v is None else v for v in r.tta_s), default=math.inf)
    return sorted(results, key=lambda r: (r.median_s, worst(r), r.cid))
