"""Closed forms of sim.costs against the SPEC's formulas restated here independently."""
from __future__ import annotations

import math
import random

import pytest

from sim.costs import LevelCost, allreduce_cost, eq6, eq6_counts, hierarchical_cost, terms
from sim.errors import SimError
from sim.schedule import SyncSchedule, total_steps

LV = LevelCost(alpha=2e-5, beta=1e-9, gamma=3e-10)


def spec_pow2(alg: str, p: int, n: float, a: float, b: float, g: float) -> float:
    """SPEC section 4 table, power-of-two p."""
    lg = math.log2(p)
    if alg == "recursive_doubling":
        return lg * a + n * lg * b + n * lg * g
    if alg == "rabenseifner":
        return 2 * lg * a + 2 * n * (p - 1) / p * b + n * (p - 1) / p * g
    if alg == "ring":
        return 2 * (p - 1) * a + 2 * n * (p - 1) / p * b + n * (p - 1) / p * g
    return 2 * lg * a + 2 * n * lg * b + n * lg * g  # binomial reduce + broadcast


@pytest.mark.parametrize("alg", ["recursive_doubling", "rabenseifner", "ring", "binomial"])
def test_power_of_two_matches_spec_table(alg):
    for p in (2, 4, 8, 16, 64, 1024):
        for n in (4.0, 1e3, 1.08e6):
            got = allreduce_cost(alg, p, n, LV)
            assert got == pytest.approx(spec_pow2(alg, p, n, LV.alpha, LV.beta, LV.gamma), rel=1e-13)


@pytest.mark.parametrize("alg", ["recursive_doubling", "rabenseifner"])
def test_fold_adds_exactly_two_alpha_two_n_beta_n_gamma(alg):
    n = 12345.0
    for p in (3, 5, 6, 7, 12, 63, 100):
        q = 2 ** math.floor(math.log2(p))
        want = spec_pow2(alg, q, n, LV.alpha, LV.beta, LV.gamma) + 2 * LV.alpha + 2 * n * LV.beta + n * LV.gamma
        assert allreduce_cost(alg, p, n, LV) == pytest.approx(want, rel=1e-13)


def test_ring_and_binomial_any_p_and_p1_free():
    n = 999.0
    for p in (3, 5, 7, 33):
        assert allreduce_cost("ring", p, n, LV) == pytest.approx(spec_pow2("ring", p, n, LV.alpha, LV.beta, LV.gamma))
        L = math.ceil(math.log2(p))
        assert allreduce_cost("binomial", p, n, LV) == pytest.approx(
            2 * L * LV.alpha + 2 * n * L * LV.beta + n * L * LV.gamma)
    for alg in ("recursive_doubling", "rabenseifner", "ring", "binomial"):
        assert allreduce_cost(alg, 1, n, LV) == 0.0


def test_hierarchical_is_reduce_leaders_broadcast():
    intra, inter = LevelCost(alpha=1e-6, beta=1e-10, gamma=1e-11), LevelCost(alpha=5e-5, beta=8e-10, gamma=1e-11)
    n, nodes, b = 1e6, 8, 4
    want = (2 * (intra.alpha + n * intra.beta + n * intra.gamma) + 2 * (intra.alpha + n * intra.beta)
            + spec_pow2("rabenseifner", 8, n, inter.alpha, inter.beta, inter.gamma))
    assert hierarchical_cost(nodes, b, n, intra, inter) == pytest.approx(want, rel=1e-13)
    # Short messages: MPICH's auto picks recursive doubling among the leaders.
    assert hierarchical_cost(8, 1, 100.0, intra, inter) == pytest.approx(
        spec_pow2("recursive_doubling", 8, 100.0, inter.alpha, inter.beta, inter.gamma))


def eq6_independent(K, S, N, B, H, Hb, C1, C2):
    g = math.ceil(N / (K * B * H * Hb))
    return (math.ceil(N / (K * B * H)) - g) * C1 * S * math.log2(K / S) + g * C2 * math.log2(K)


def test_eq6_random_sets_and_counts_agree_with_schedule():
    rng = random.Random(11)
    for _ in range(3000):
        S = rng.choice([1, 2, 3, 4, 5, 8, 16])
        K = S * rng.choice([1, 2, 3, 4, 8])
        N, B, H, Hb = rng.randint(1, 10**8), rng.randint(1, 1024), rng.randint(1, 64), rng.randint(1, 16)
        C1, C2 = rng.uniform(0, 1e-2), rng.uniform(0, 1.0)
        got = eq6(K=K, servers=S, N=N, B=B, H=H, Hb=Hb, C1=C1, C2=C2)
        want = eq6_independent(K, S, N, B, H, Hb, C1, C2)
        assert got == pytest.approx(want, rel=1e-12, abs=1e-300)
        blk, glob = eq6_counts(K=K, servers=S, N=N, B=B, H=H, Hb=Hb)
        assert SyncSchedule(algorithm="hierarchical", H=H, Hb=Hb).counts(total_steps(N, K, B)) == \
            {"block": blk, "global": glob}


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(K=6, servers=4), "K must be a multiple of servers=4, got K=6"),
    (dict(H=0), "H must be an integer >= 1, got 0"),
    (dict(C1=-1.0), "C1 must be a finite number >= 0, got -1.0"),
])
def test_eq6_bad_input(kwargs, fragment):
    base = dict(K=16, servers=8, N=1000, B=8, H=2, Hb=2, C1=1.0, C2=2.0)
    base.update(kwargs)
    with pytest.raises(SimError, match=fragment):
        eq6(**base)


def test_terms_bad_input():
    with pytest.raises(SimError, match="p must be an integer >= 1, got 0"):
        terms("ring", 0, 1.0)
    with pytest.raises(SimError, match="algorithm must be one of"):
        terms("tree", 4, 1.0)
    with pytest.raises(SimError, match="alpha must be a finite number >= 0, got -1"):
        LevelCost(alpha=-1, beta=0, gamma=0)
