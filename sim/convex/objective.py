"""The regularised logistic-regression objective of SPEC section 6, batched over many models at once."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from sim.convex.errors import ConvexError

__all__ = ["LogisticObjective", "log1p_exp", "sigmoid"]


def log1p_exp(z: np.ndarray) -> np.ndarray:
    """log(1 + exp(z)) without overflow, elementwise."""
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)) without overflow, elementwise."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


class LogisticObjective:
    """f(w) = (1/n) sum_i log(1 + exp(-b_i a_i^T w)) + (lam/2) ||w||^2 with labels b_i in {-1, +1}.

    Identical (row, label) pairs are merged with integer weights, which leaves f unchanged and makes
    every evaluation cheaper (w8a: 49,749 rows -> 34,780). `value` takes one model (d,) or many (d, m).
    """

    def __init__(self, X: sp.spmatrix, y: np.ndarray, *, lam: float | None = None) -> None:
        X = sp.csr_matrix(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if X.shape[0] != y.shape[0] or X.shape[0] == 0:
            raise ConvexError(f"X has {X.shape[0]} rows and y has {y.shape[0]} labels; need equal, >= 1")
        bad = ~np.isin(y, (-1.0, 1.0))
        if bad.any():
            raise ConvexError(f"labels must be -1 or +1 for logistic regression, got {float(y[bad][0])!r} "
                              f"(sample {int(np.flatnonzero(bad)[0])})")
        self.n = int(X.shape[0])
        self.d = int(X.shape[1])
        self.lam = 1.0 / self.n if lam is None else float(lam)
        if not (np.isfinite(self.lam) and self.lam >= 0):
            raise ConvexError(f"lam must be a finite number >= 0, got {lam!r}")
        X.sort_indices()
        self.X = X
        self.y = y
        self.Xu, self.yu, self.weight = _merge_duplicates(X, y)
        # Rows scaled by their label: margins are then (b_i a_i)^T w.
        self._Z = sp.csr_matrix(sp.diags(self.yu) @ self.Xu)
        self.ZT = sp.csr_matrix(self._Z.T)

    def margins(self, W: np.ndarray) -> np.ndarray:
        """b_i a_i^T w for the merged rows, one column per model."""
        return self._Z @ W

    def value(self, W: np.ndarray) -> np.ndarray | float:
        """f at one model (returns a float) or at each column of a (d, m) array (returns (m,))."""
        W = np.asarray(W, dtype=np.float64)
        if W.shape[0] != self.d or W.ndim not in (1, 2):
            raise ConvexError(f"model must have shape ({self.d},) or ({self.d}, m), got {W.shape}")
        loss = self.weight @ log1p_exp(-self.margins(W)) / self.n
        out = loss + 0.5 * self.lam * np.sum(W * W, axis=0)
        return float(out) if W.ndim == 1 else out

    def gradient(self, w: np.ndarray) -> np.ndarray:
        """Full gradient of f at one model w (d,)."""
        s = sigmoid(-self.margins(w))
        return -(self.ZT @ (self.weight * s)) / self.n + self.lam * w

    def hessian(self, w: np.ndarray) -> np.ndarray:
        """Dense d x d Hessian of f at w (d is small for the data sets this is meant for)."""
        s = sigmoid(self.margins(w))
        curv = self.weight * s * (1.0 - s) / self.n
        H = (self.ZT @ sp.diags(curv) @ self._Z).toarray()
        H[np.diag_indices_from(H)] += self.lam
        return H


def _merge_duplicates(X: sp.csr_matrix, y: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Merge identical (row, label) pairs; returns the unique rows, their labels and their counts."""
    first: dict[tuple[float, bytes, bytes], int] = {}
    order: list[int] = []
    counts: list[int] = []
    for i in range(X.shape[0]):
        lo, hi = X.indptr[i], X.indptr[i + 1]
        key = (float(y[i]), X.indices[lo:hi].tobytes(), X.data[lo:hi].tobytes())
        j = first.get(key)
        if j is None:
            first[key] = len(order)
            order.append(i)
            counts.append(1)
        else:
            counts[j] += 1
    rows = np.asarray(order, dtype=np.int64)
    return sp.csr_matrix(X[rows]), y[rows].copy(), np.asarray(counts, dtype=np.float64)
