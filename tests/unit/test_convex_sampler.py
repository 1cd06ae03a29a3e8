"""Tests of the shared sampler: its documented formula, random access, and the shuffle partition."""
from __future__ import annotations

import numpy as np
import pytest

from sim.convex.errors import ConvexError
from sim.convex.sampler import BLOCK_STEPS, Sampler


def test_iid_follows_the_documented_formula():
    s = Sampler(n=1000, K=3, B_loc=5, seed=7)
    for t in (0, 1, BLOCK_STEPS - 1, BLOCK_STEPS, 5 * BLOCK_STEPS + 3):
        block = np.random.default_rng([7, 0, t // BLOCK_STEPS]).integers(
            0, 1000, size=(BLOCK_STEPS, 3, 5), dtype=np.int64)
        np.testing.assert_array_equal(s.indices(t), block[t % BLOCK_STEPS])


def test_random_access_order_does_not_matter():
    a = Sampler(n=500, K=4, B_loc=3, seed=1)
    b = Sampler(n=500, K=4, B_loc=3, seed=1)
    forward = [a.indices(t).copy() for t in range(200)]
    for t in reversed(range(200)):
        np.testing.assert_array_equal(b.indices(t), forward[t])
        np.testing.assert_array_equal(b.worker_indices(2, t), forward[t][2])
    assert not np.array_equal(Sampler(n=500, K=4, B_loc=3, seed=2).indices(0), forward[0])


def test_shuffle_partitions_each_epoch():
    s = Sampler(n=103, K=4, B_loc=5, seed=3, mode="shuffle")
    assert s.steps_per_epoch == 5  # m = 25 samples per worker, 5 steps of 5
    for epoch in range(3):
        perm = np.random.default_rng([3, 1, epoch]).permutation(103)
        seen = np.concatenate([s.indices(epoch * 5 + j).ravel() for j in range(5)])
        assert len(set(seen.tolist())) == 100  # disjoint across workers and steps
        for k in range(4):
            mine = np.concatenate([s.worker_indices(k, epoch * 5 + j) for j in range(5)])
            np.testing.assert_array_equal(mine, perm[k * 25:(k + 1) * 25])


@pytest.mark.parametrize("kwargs, words", [
    (dict(n=0, K=1, B_loc=1), "n must be an integer >= 1, got 0"),
    (dict(n=10, K=0, B_loc=1), "K must be an integer >= 1, got 0"),
    (dict(n=10, K=1, B_loc=1.5), "B_loc must be an integer >= 1, got 1.5"),
    (dict(n=10, K=1, B_loc=1, seed=-1), "seed must be an integer >= 0, got -1"),
    (dict(n=10, K=1, B_loc=1, mode="zipf"), "iid, shuffle, got 'zipf'"),
    (dict(n=10, K=4, B_loc=3, mode="shuffle"), "n // K >= B_loc"),
])
def test_bad_construction(kwargs, words):
    with pytest.raises(ConvexError, match=words.replace("(", r"\(").replace(")", r"\)")):
        Sampler(**kwargs)


def test_bad_step_and_worker():
    s = Sampler(n=10, K=2, B_loc=1)
    with pytest.raises(ConvexError, match="t must be an integer >= 0, got -1"):
        s.indices(-1)
    with pytest.raises(ConvexError, match=r"worker k must be an integer in \[0, 2\), got 2"):
        s.worker_indices(2, 0)
