"""Tests of the vectorised local-SGD simulation against a plain per-worker, per-sample loop."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from sim.convex.errors import ConvexError
from sim.convex.fstar import solve_fstar
from sim.convex.localsgd import Problem, Protocol, Run, simulate, step_size, trajectory
from sim.convex.objective import LogisticObjective
from sim.convex.sampler import Sampler
from sim.convex.target import TargetChecker


def _problem(seed: int = 0, n: int = 90, d: int = 7):
    rng = np.random.default_rng(seed)
    X = (rng.random((n, d)) < 0.35).astype(float)
    X[4] = 0.0  # an empty row, like w8a's
    y = np.where(X @ rng.normal(size=d) + 0.3 * rng.normal(size=n) > 0.5, 1.0, -1.0)
    obj = LogisticObjective(sp.csr_matrix(X), y)
    return X, y, obj, solve_fstar(obj).fstar


def _naive(X, y, lam, *, K, H, B, schedule, c, cap, seed, rounds, power):
    """Local SGD written as plainly as possible: loops over workers and samples."""
    n, d = X.shape
    sampler = Sampler(n=n, K=K, B_loc=B, seed=seed)
    w = [np.zeros(d) for _ in range(K)]
    acc = [np.zeros(d) for _ in range(K)]
    wsum = 0.0
    out = []
    for t in range(rounds * H):
        gamma = min(cap, c * n / (t + 1)) if schedule == "decay" else cap * c
        idx = sampler.indices(t)
        for k in range(K):
            g = lam * w[k]
            for i in idx[k]:
                g = g - (1.0 / B) * y[i] * X[i] / (1.0 + math.exp(y[i] * float(X[i] @ w[k])))
            w[k] = w[k] - gamma * g
        s = float(t + 1) ** power
        wsum += s
        for k in range(K):
            acc[k] = acc[k] + s * w[k]
        if (t + 1) % H == 0:
            mean = sum(w) / K
            w = [mean.copy() for _ in range(K)]
            out.append((mean, sum(acc) / K / wsum))
    return out


def _plain_f(X, y, lam, w):
    return math.fsum(math.log1p(math.exp(-y[i] * float(X[i] @ w))) for i in range(len(y))) / len(y) \
        + 0.5 * lam * float(w @ w)


@pytest.mark.parametrize("K, H, B, average", [(3, 2, 2, "quadratic"), (1, 1, 3, "uniform"), (4, 3, 1, "linear")])
def test_models_at_every_sync_match_the_plain_loop(K, H, B, average):
    X, y, obj, fstar = _problem()
    rounds = 7
    protocol = Protocol(epsilon=1e-12, max_time=rounds * (H * B + (25 if K > 1 else 0)), average=average, seed=5)
    runs = [Run(schedule="decay", c_exp=-4), Run(schedule="const", c_exp=-3), Run(schedule="decay", c_exp=2)]
    seen = []
    simulate(Problem(obj, fstar=fstar), protocol, K=K, H=H, B=B, runs=runs,
             on_sync=lambda r, now, last, avg: seen.append((r, now, last.copy(), avg.copy())))
    assert [s[0] for s in seen] == list(range(1, rounds + 1))
    assert [s[1] for s in seen] == [r * protocol.round_time(K, H, B) for r in range(1, rounds + 1)]
    power = {"uniform": 0, "linear": 1, "quadratic": 2}[average]
    for j, run in enumerate(runs):
        ref = _naive(X, y, obj.lam, K=K, H=H, B=B, schedule=run.schedule, c=run.c, cap=32.0, seed=5,
                     rounds=rounds, power=power)
        for (_, _, last, avg), (ref_last, ref_avg) in zip(seen, ref):
            np.testing.assert_allclose(last[:, j], ref_last, rtol=1e-11, atol=1e-12)
            np.testing.assert_allclose(avg[:, j], ref_avg, rtol=1e-11, atol=1e-12)


def test_time_to_target_is_the_first_sync_where_either_iterate_meets_it():
    X, y, obj, fstar = _problem(1)
    eps = 0.02
    K, H, B = 2, 2, 3
    protocol = Protocol(epsilon=eps, unit_comm=7.0, seed=3, max_time=1e5)
    runs = [Run(schedule="decay", c_exp=-3), Run(schedule="const", c_exp=-9)]
    res = {r.c_exp: r for r in simulate(Problem(obj, fstar=fstar), protocol, K=K, H=H, B=B, runs=runs)}
    ref = _naive(X, y, obj.lam, K=K, H=H, B=B, schedule="decay", c=2.0 ** -3, cap=32.0, seed=3,
                 rounds=400, power=2)
    first = next(r for r, (last, avg) in enumerate(ref, start=1)
                 if min(_plain_f(X, y, obj.lam, last), _plain_f(X, y, obj.lam, avg)) - fstar <= eps)
    assert res[-3].time == first * (H * B + 7.0) and res[-3].steps == first * H
    # The other run of the group is slower (tiny constant step) and stops at the winner's time.
    assert res[-9].time is None and res[-9].stopped_at == res[-3].time and res[-9].gap > eps


def test_target_checker_agrees_with_brute_force():
    _X, _y, obj, fstar = _problem(2)
    checker = TargetChecker(obj, fstar=fstar, epsilon=0.01)
    rng = np.random.default_rng(0)
    wstar = np.linalg.solve(obj.hessian(np.zeros(7)), -obj.gradient(np.zeros(7)))
    for step in range(60):
        W = wstar[:, None] * (step / 60) + rng.normal(scale=0.3 * (1 - step / 60), size=(7, 5))
        gaps = checker.gaps(W)
        true = obj.value(W) - fstar
        evaluated = np.isfinite(gaps)
        np.testing.assert_allclose(gaps[evaluated], true[evaluated], rtol=1e-12, atol=1e-15)
        assert np.all(true[~evaluated] > 0.01)  # skipped only when the target was truly not met
        assert np.all(checker.lower_bound(W) <= true + fstar + 1e-12)
    assert checker.skipped > 0 and checker.full_evaluations > 0


def test_step_sizes():
    np.testing.assert_allclose(step_size("decay", np.array([1.0, 1e-3]), 9, 100, 32.0), [10.0, 0.01])
    assert step_size("decay", 1.0, 0, 100, 32.0) == 32.0
    assert step_size("const", 0.25, 1000, 100, 32.0) == 8.0
    with pytest.raises(ConvexError, match="decay, const, got 'cosine'"):
        step_size("cosine", 1.0, 0, 100, 32.0)


def test_round_time_and_k1():
    p = Protocol()
    assert p.round_time(16, 4, 8) == 4 * 8 + 25
    assert p.round_time(1, 4, 8) == 32
    assert Protocol(k1_comm=True).round_time(1, 4, 8) == 57


@pytest.mark.parametrize("kwargs, words", [
    (dict(epsilon=0), "epsilon must be a finite number > 0, got 0"),
    (dict(unit_comm=-1.0), "unit_comm must be a finite number >= 0, got -1.0"),
    (dict(max_time=float("inf")), "max_time must be a finite number > 0, got inf"),
    (dict(average="cubic"), "uniform, linear, quadratic, got 'cubic'"),
    (dict(seed=-2), "seed must be an integer >= 0, got -2"),
])
def test_protocol_validation(kwargs, words):
    with pytest.raises(ConvexError, match=words):
        Protocol(**kwargs)


def test_run_and_simulate_validation():
    with pytest.raises(ConvexError, match="schedule must be one of decay, const, got 'step'"):
        Run(schedule="step", c_exp=0)
    with pytest.raises(ConvexError, match=r"c_exp must be an integer in \[-60, 60\].*got 0.5"):
        Run(schedule="decay", c_exp=0.5)
    _, _, obj, fstar = _problem()
    with pytest.raises(ConvexError, match="H must be an integer >= 1, got 0"):
        simulate(Problem(obj, fstar=fstar), Protocol(), K=2, H=0, B=1, runs=[Run(schedule="decay", c_exp=0)])
    with pytest.raises(ConvexError, match="at least one Run"):
        simulate(Problem(obj, fstar=fstar), Protocol(), K=2, H=1, B=1, runs=[])


def test_trajectory_gives_f_at_every_sync_past_the_target():
    X, y, obj, fstar = _problem(3)
    rows = trajectory(Problem(obj, fstar=fstar), Protocol(seed=2, epsilon=0.5), K=3, H=2, B=2,
                      run=Run(schedule="const", c_exp=-4), rounds=12)
    ref = _naive(X, y, obj.lam, K=3, H=2, B=2, schedule="const", c=2.0 ** -4, cap=32.0, seed=2, rounds=12, power=2)
    assert [r["round"] for r in rows] == list(range(1, 13)) and rows[-1]["step"] == 24
    assert rows[-1]["time"] == 12 * (2 * 2 + 25)
    for row, (last, avg) in zip(rows, ref):
        assert row["f_last"] == pytest.approx(_plain_f(X, y, obj.lam, last), rel=1e-12)
        assert row["f_average"] == pytest.approx(_plain_f(X, y, obj.lam, avg), rel=1e-12)
    with pytest.raises(ConvexError, match="rounds must be an integer >= 1, got 0"):
        trajectory(Problem(obj, fstar=fstar), Protocol(), K=1, H=1, B=1, run=Run(schedule="decay", c_exp=0), rounds=0)
