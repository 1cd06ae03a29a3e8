"""Exact target check f(w) - f* <= epsilon for many models, skipping full passes with convexity cuts."""
from __future__ import annotations

import numpy as np

from sim.convex.errors import ConvexError
from sim.convex.objective import LogisticObjective, sigmoid

__all__ = ["TargetChecker"]


class TargetChecker:
    """Decides f(w) - f* <= epsilon exactly, but pays for a full data pass only when it must.

    Every full evaluation at a point y also yields the gradient g there, and since f is convex,
    f(w) >= f(y) + g^T (w - y) for every w (a cut). The checker keeps the latest `max_cuts` cuts from
    all models it has evaluated; a model whose best cut already exceeds f* + epsilon (plus a 1e-9 safety
    margin against rounding) cannot meet the target and is answered without a pass over the data.
    The answer is therefore the same as evaluating f every time; only the cost differs.
    """

    def __init__(self, objective: LogisticObjective, *, fstar: float, epsilon: float, max_cuts: int = 256) -> None:
        if not np.isfinite(fstar):
            raise ConvexError(f"fstar must be a finite number, got {fstar!r}")
        if not (np.isfinite(epsilon) and epsilon > 0):
            raise ConvexError(f"epsilon must be a finite number > 0, got {epsilon!r}")
        if isinstance(max_cuts, bool) or not isinstance(max_cuts, int) or max_cuts < 0:
            raise ConvexError(f"max_cuts must be an integer >= 0, got {max_cuts!r}")
        self.objective = objective
        self.fstar = float(fstar)
        self.epsilon = float(epsilon)
        self.max_cuts = max_cuts
        self._slopes = np.zeros((0, objective.d))
        self._offsets = np.zeros(0)
        self.full_evaluations = 0
        self.skipped = 0

    def lower_bound(self, W: np.ndarray) -> np.ndarray:
        """The best cut's lower bound on f at each column of W (d, m); -inf with no cuts yet."""
        if self._offsets.size == 0:
            return np.full(W.shape[1], -np.inf)
        return np.max(self._slopes @ W + self._offsets[:, None], axis=0)

    def gaps(self, W: np.ndarray) -> np.ndarray:
        """f(w) - f* for the columns of W (d, m) that may meet the target; +inf where a cut rules it out."""
        W = np.asarray(W, dtype=np.float64)
        if W.ndim != 2 or W.shape[0] != self.objective.d:
            raise ConvexError(f"models must have shape ({self.objective.d}, m), got {W.shape}")
        out = np.full(W.shape[1], np.inf)
        need = np.flatnonzero(self.lower_bound(W) - self.fstar <= self.epsilon + 1e-9)
        self.skipped += W.shape[1] - need.size
        if need.size == 0:
            return out
        Y = W[:, need]
        values, grads = self._value_and_gradient(Y)
        self.full_evaluations += need.size
        out[need] = values - self.fstar
        if self.max_cuts > 0:
            offsets = values - np.einsum("dm,dm->m", grads, Y)
            self._slopes = np.concatenate([self._slopes, grads.T])[-self.max_cuts:]
            self._offsets = np.concatenate([self._offsets, offsets])[-self.max_cuts:]
        return out

    def _value_and_gradient(self, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        obj = self.objective
        m = obj.margins(Y)
        loss = obj.weight @ (np.maximum(-m, 0.0) + np.log1p(np.exp(-np.abs(m))))
        values = loss / obj.n + 0.5 * obj.lam * np.sum(Y * Y, axis=0)
        coef = obj.weight[:, None] * sigmoid(-m)
        grads = -(obj.ZT @ coef) / obj.n + obj.lam * Y
        return values, grads
