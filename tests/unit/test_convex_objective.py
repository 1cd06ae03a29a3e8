"""Tests of the logistic objective against plain per-sample formulas and finite differences."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from sim.convex.errors import ConvexError
from sim.convex.objective import LogisticObjective, log1p_exp, sigmoid


def _data(seed: int = 0, n: int = 40, d: int = 6):
    rng = np.random.default_rng(seed)
    X = (rng.random((n, d)) < 0.4).astype(float) * rng.choice([1.0, 2.0], size=(n, d))
    X[5] = X[3]  # duplicate rows with equal and with opposite labels
    X[6] = X[3]
    y = rng.choice([-1.0, 1.0], size=n)
    y[5] = y[3]
    y[6] = -y[3]
    return sp.csr_matrix(X), y


def _plain_value(X, y, lam, w):
    Xd = X.toarray()
    terms = [math.log1p(math.exp(-y[i] * float(Xd[i] @ w))) for i in range(len(y))]
    return math.fsum(terms) / len(y) + 0.5 * lam * float(w @ w)


def test_value_matches_plain_sum_with_duplicates_merged():
    X, y = _data()
    obj = LogisticObjective(X, y)
    unique = {(y[i], tuple(X.toarray()[i])) for i in range(X.shape[0])}
    assert obj.Xu.shape[0] == len(unique) < X.shape[0]
    assert obj.weight.sum() == X.shape[0]
    rng = np.random.default_rng(1)
    W = rng.normal(size=(6, 4))
    vals = obj.value(W)
    for j in range(4):
        assert vals[j] == pytest.approx(_plain_value(X, y, obj.lam, W[:, j]), rel=1e-14, abs=0)
    assert obj.value(np.zeros(6)) == pytest.approx(math.log(2), rel=1e-15)


def test_gradient_and_hessian_match_finite_differences():
    X, y = _data(2)
    obj = LogisticObjective(X, y, lam=0.1)
    w = np.random.default_rng(3).normal(size=6)
    g = obj.gradient(w)
    Hm = obj.hessian(w)
    h = 1e-6
    for i in range(6):
        e = np.zeros(6)
        e[i] = h
        assert g[i] == pytest.approx((obj.value(w + e) - obj.value(w - e)) / (2 * h), abs=1e-8)
        np.testing.assert_allclose(Hm[:, i], (obj.gradient(w + e) - obj.gradient(w - e)) / (2 * h), atol=1e-7)


def test_stable_elementwise_helpers():
    z = np.array([-800.0, -1.0, 0.0, 2.0, 800.0])
    np.testing.assert_allclose(log1p_exp(z), [0.0, math.log1p(math.exp(-1)), math.log(2), math.log1p(math.exp(2)), 800.0])
    np.testing.assert_allclose(sigmoid(z), [0.0, 1 / (1 + math.e), 0.5, 1 / (1 + math.exp(-2)), 1.0])


def test_bad_inputs():
    X, y = _data()
    with pytest.raises(ConvexError, match="labels must be -1 or \\+1.*got 0.0"):
        LogisticObjective(X, np.where(y > 0, 1.0, 0.0))
    with pytest.raises(ConvexError, match="lam must be a finite number >= 0, got -1"):
        LogisticObjective(X, y, lam=-1)
    with pytest.raises(ConvexError, match="rows"):
        LogisticObjective(X, y[:-1])
    with pytest.raises(ConvexError, match=r"shape \(6,\) or \(6, m\), got \(5,\)"):
        LogisticObjective(X, y).value(np.zeros(5))
