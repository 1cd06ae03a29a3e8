"""Targets of a run: the first evaluation that reaches a test accuracy or an objective gap to f*, and f* itself."""
# A run knows it has reached its target only at an evaluation: `step`, `epoch` and `wall_s` are those of the first
# evaluation whose value reaches it (the "eval point", what time to target means everywhere in this project).
# `interpolated_step` / `interpolated_epoch` place the crossing between that evaluation and the one before by
# linear interpolation of the metric against steps (the eval point itself when there is no evaluation before it);
# they are for comparing curves more finely than the evaluation grid, never a time anyone could have stopped at.
from __future__ import annotations

import math
from typing import Any

import numpy as np

from train.config import TrainConfig
from train.errors import TrainError

__all__ = ["METRICS", "reached", "crossing", "resolve_fstar"]

#: metric -> whether larger is better: test accuracy rises to its target, the objective's gap falls to it.
METRICS = {"test_acc": True, "objective_gap": False}


def reached(metric: str, value: float | None, target: float) -> bool:
    """Whether `value` of `metric` meets `target` (>= for accuracy, <= for the gap); None never does."""
    if value is None or not math.isfinite(value):
        return False
    return value >= target if METRICS[metric] else value <= target


def crossing(metric: str, target: float, prev: dict[str, Any] | None, cur: dict[str, Any],
             steps_per_epoch: float) -> dict[str, Any]:
    """The target record of evaluation `cur` (which reaches `target`), with the crossing interpolated from `prev`
    (the evaluation before it, which did not; None if there is none)."""
    t1, v1 = int(cur["step"]), float(cur[metric])
    step = float(t1)
    if prev is not None and prev.get(metric) is not None and math.isfinite(prev[metric]):
        t0, v0 = int(prev["step"]), float(prev[metric])
        if v1 != v0:
            step = t0 + min(1.0, max(0.0, (target - v0) / (v1 - v0))) * (t1 - t0)
    return {"metric": metric, "target": target, "step": t1, "epoch": cur["epoch"], "wall_s": cur["wall_s"],
            "train_s": cur["train_s"], "value": v1, "interpolated_step": step,
            "interpolated_epoch": (step + 1) / steps_per_epoch}


def resolve_fstar(cfg: TrainConfig, x_train: Any, y_train: Any) -> tuple[float, str] | None:
    """(f*, source) of the run's objective when it has a --target-loss: "computed" solves logreg-binary's objective
    on this training set by Newton's method (sim.convex; lam = weight decay), "paper" is SPEC's w8a value, else the
    number given. None without a --target-loss."""
    if cfg.target_loss is None:
        return None
    if cfg.fstar == "paper":
        from sim.convex.fstar import FSTAR_PAPER
        return FSTAR_PAPER, "paper"
    if cfg.fstar != "computed":
        return float(cfg.fstar), "value"
    import scipy.sparse as sp

    from sim.convex.errors import ConvexError
    from sim.convex.fstar import solve_fstar
    from sim.convex.objective import LogisticObjective
    x = np.asarray(x_train.detach().cpu().double().numpy()).reshape(len(x_train), -1)
    b = 2.0 * np.asarray(y_train.detach().cpu().numpy(), dtype=np.float64).reshape(-1) - 1.0
    try:
        res = solve_fstar(LogisticObjective(sp.csr_matrix(x), b, lam=cfg.weight_decay))
    except ConvexError as e:
        raise TrainError(f"--fstar computed: {e}") from None
    return res.fstar, "computed"
