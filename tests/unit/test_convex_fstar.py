"""Tests of f*: Newton against an independent solver and the known w8a optimum, and the sha256 cache."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import scipy.optimize
import scipy.sparse as sp

from sim.convex.errors import ConvexError
from sim.convex.fstar import FSTAR_PAPER, default_cache_dir, fstar_cached, resolve_fstar, solve_fstar
from sim.convex.libsvm import load_libsvm
from sim.convex.objective import LogisticObjective

#: Independent Newton solve recorded in shared/data/README (||grad|| < 1e-15, L-BFGS-B agrees).
W8A_FSTAR = 0.126180686510513
SHA = "ab" * 32


def _small(seed: int = 0) -> LogisticObjective:
    rng = np.random.default_rng(seed)
    X = sp.csr_matrix((rng.random((80, 5)) < 0.5) * rng.normal(size=(80, 5)))
    y = rng.choice([-1.0, 1.0], size=80)
    return LogisticObjective(X, y)


def test_newton_matches_an_independent_quasi_newton_solve():
    obj = _small()
    res = solve_fstar(obj)
    ref = scipy.optimize.minimize(obj.value, np.zeros(5), jac=obj.gradient, method="L-BFGS-B",
                                  options={"gtol": 1e-13, "ftol": 1e-16, "maxiter": 10000})
    assert res.fstar == pytest.approx(ref.fun, abs=1e-12)
    assert res.gap_bound <= 1e-12 and res.grad_norm < 1e-8


def test_w8a_fstar_to_1e12(w8a):
    data = load_libsvm(w8a, n_features=300)
    res = solve_fstar(LogisticObjective(data.X, data.y))
    assert abs(res.fstar - W8A_FSTAR) <= 1e-12
    assert res.w_norm == pytest.approx(27.6896, abs=1e-4)
    assert abs(FSTAR_PAPER - res.fstar - 2.52e-4) < 1e-6


def test_cache_is_keyed_by_sha256_and_written_atomically(tmp_path):
    obj = _small(1)
    first = fstar_cached(obj, sha256=SHA, cache_dir=str(tmp_path))
    files = os.listdir(tmp_path)
    assert not first.cached and len(files) == 1 and SHA in files[0] and not files[0].startswith(".tmp")
    rec = json.loads((tmp_path / files[0]).read_text())
    assert rec["sha256"] == SHA and rec["fstar"] == first.fstar
    # A planted value proves the second call reads the file instead of solving again.
    rec["fstar"] = 1.25
    (tmp_path / files[0]).write_text(json.dumps(rec))
    again = fstar_cached(obj, sha256=SHA, cache_dir=str(tmp_path))
    assert again.cached and again.fstar == 1.25
    other = fstar_cached(obj, sha256="cd" * 32, cache_dir=str(tmp_path))
    assert not other.cached and other.fstar == first.fstar
    assert fstar_cached(obj, sha256=SHA, cache_dir=str(tmp_path), refresh=True).fstar == first.fstar


def test_corrupt_cache_is_ignored(tmp_path):
    obj = _small(2)
    fstar_cached(obj, sha256=SHA, cache_dir=str(tmp_path))
    (path,) = tmp_path.iterdir()
    path.write_text("{not json")
    res = fstar_cached(obj, sha256=SHA, cache_dir=str(tmp_path))
    assert not res.cached and json.loads(path.read_text())["fstar"] == res.fstar


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == os.path.join(str(tmp_path), "localsgd")


def test_resolve_fstar_choices():
    assert resolve_fstar("computed", computed=0.5) == (0.5, "computed")
    assert resolve_fstar("paper", computed=0.5) == (FSTAR_PAPER, "paper")
    assert resolve_fstar("0.125", computed=None) == (0.125, "value")
    with pytest.raises(ConvexError, match="'computed', 'paper' or a number, got 'best'"):
        resolve_fstar("best", computed=0.5)
    with pytest.raises(ConvexError, match="finite number, got 'nan'"):
        resolve_fstar("nan", computed=0.5)
    with pytest.raises(ConvexError, match="64 lowercase hex"):
        fstar_cached(_small(), sha256="xyz")
