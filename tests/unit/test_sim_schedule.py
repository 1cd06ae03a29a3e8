"""Tests of sim.schedule against a brute-force counter and the SPEC's closed-form counts."""
from __future__ import annotations

import itertools
import math
import random
import subprocess
import sys

import pytest

from sim.errors import SimError
from sim.schedule import ALGORITHMS, SyncSchedule, total_steps


def ref_h(alg: str, H: int, switch: int, warmup: str, W: int, t: int) -> int:
    """Independent restatement of the documented H-in-force rule."""
    if alg == "minibatch":
        return 1
    s0 = switch if alg == "postlocal" else 0
    if t < s0:
        return 1
    u = t - s0
    if warmup == "constant" or W == 0 or u >= W:
        return H
    if warmup == "linear":
        return min(H, 1 + math.floor(u * H / W))
    L = math.ceil(math.log2(H)) if H > 1 else 0
    return min(H, 2 ** math.floor(u * (L + 1) / W))


def ref_events(alg: str, H: int, Hb: int, switch: int, warmup: str, W: int, T: int) -> list[tuple[int, str]]:
    """Brute force: a per-step counter, exactly as the trainer would run it."""
    out, counter, k = [], 0, 0
    for t in range(T):
        counter += 1
        if counter >= ref_h(alg, H, switch, warmup, W, t) or t == T - 1:
            k += 1
            level = "global"
            if alg == "hierarchical" and k % Hb != 0 and t != T - 1:
                level = "block"
            out.append((t, level))
            counter = 0
    return out


def configs():
    for alg in ALGORITHMS:
        for H, Hb, switch, warmup, W in itertools.product(
                (1, 2, 3, 5, 8), (1, 2, 3) if alg == "hierarchical" else (1,),
                (0, 4, 7) if alg == "postlocal" else (0,), ("constant", "linear", "exponential"),
                (0, 5, 12)):
            yield alg, H, Hb, switch, warmup, W


@pytest.mark.parametrize("T", [1, 2, 7, 16, 37])
def test_events_sync_after_counts_match_brute_force(T):
    for alg, H, Hb, switch, warmup, W in configs():
        s = SyncSchedule(algorithm=alg, H=H, Hb=Hb, switch_step=switch, warmup=warmup, warmup_steps=W)
        want = ref_events(alg, H, Hb, switch, warmup, W, T)
        assert list(s.events(T)) == want, (alg, H, Hb, switch, warmup, W, T)
        by_step = dict(want)
        assert [s.sync_after(t, T) for t in range(T)] == [by_step.get(t) for t in range(T)]
        n_global = sum(1 for _, lv in want if lv == "global")
        assert s.counts(T) == {"block": len(want) - n_global, "global": n_global}
        for t in range(T):
            assert s.h_at(t) == ref_h(alg, H, switch, warmup, W, t)


def test_spec_counts_closed_form_random():
    rng = random.Random(3)
    for _ in range(2000):
        N, K, B = rng.randint(1, 10**7), rng.randint(1, 64), rng.randint(1, 512)
        H, Hb = rng.randint(1, 40), rng.randint(1, 12)
        T = total_steps(N, K, B)
        assert math.ceil(N / (K * B)) == T or N > 2**52
        s = SyncSchedule(algorithm="hierarchical", H=H, Hb=Hb)
        g = -(-N // (K * B * H * Hb))
        b = -(-N // (K * B * H)) - g
        assert s.counts(T) == {"block": b, "global": g}
        assert SyncSchedule(algorithm="local", H=H).counts(T) == {"block": 0, "global": -(-N // (K * B * H))}


def test_warmup_sequences_known_values():
    lin = SyncSchedule(algorithm="local", H=4, warmup="linear", warmup_steps=8)
    assert [lin.h_at(t) for t in range(10)] == [1, 1, 2, 2, 3, 3, 4, 4, 4, 4]
    exp = SyncSchedule(algorithm="local", H=8, warmup="exponential", warmup_steps=8)
    assert [exp.h_at(t) for t in range(10)] == [1, 1, 2, 2, 4, 4, 8, 8, 8, 8]
    capped = SyncSchedule(algorithm="local", H=6, warmup="exponential", warmup_steps=8)
    assert [capped.h_at(t) for t in range(9)] == [1, 1, 2, 2, 4, 4, 6, 6, 6]
    post = SyncSchedule(algorithm="postlocal", H=4, switch_step=3, warmup="linear", warmup_steps=4)
    assert [post.h_at(t) for t in range(9)] == [1, 1, 1, 1, 2, 3, 4, 4, 4]
    # Syncs: 0..3 at H=1; from step 4 the counter chases the growing H (1<2, 2<3, 3<4, 4>=4) -> 7.
    assert [t for t, _ in post.events(12)] == [0, 1, 2, 3, 7, 11]


def test_minibatch_forces_H_1_and_hierarchical_final_is_global():
    mb = SyncSchedule(algorithm="minibatch", H=9)
    assert mb.H == 1 and mb.counts(5) == {"block": 0, "global": 5}
    hi = SyncSchedule(algorithm="hierarchical", H=2, Hb=4)
    assert list(hi.events(7)) == [(1, "block"), (3, "block"), (5, "block"), (6, "global")]


def test_large_run_is_fast_path():
    s = SyncSchedule(algorithm="hierarchical", H=3, Hb=5)
    T = 10**12
    assert s.counts(T) == {"block": -(-T // 3) - -(-T // 15), "global": -(-T // 15)}
    assert s.sync_after(T - 1, T) == "global" and s.sync_after(14, T) == "global"
    assert s.sync_after(2, T) == "block" and s.sync_after(3, T) is None


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(algorithm="sgd"), "algorithm must be one of"),
    (dict(algorithm="local", H=0), "H must be an integer >= 1, got 0"),
    (dict(algorithm="local", H=2.0), "got 2.0"),
    (dict(algorithm="hierarchical", Hb=0), "Hb must be an integer >= 1, got 0"),
    (dict(algorithm="local", Hb=2), "Hb must be 1 unless"),
    (dict(algorithm="local", switch_step=3), "switch_step must be 0 unless"),
    (dict(algorithm="postlocal", switch_step=-1), "switch_step must be an integer >= 0, got -1"),
    (dict(algorithm="local", warmup="cosine"), "warmup must be one of"),
    (dict(algorithm="local", warmup_steps=-2), "warmup_steps must be an integer >= 0, got -2"),
])
def test_bad_input_one_line_error(kwargs, fragment):
    with pytest.raises(SimError) as exc:
        SyncSchedule(**kwargs)
    assert fragment in str(exc.value) and "\n" not in str(exc.value)


def test_bad_queries():
    s = SyncSchedule(algorithm="local", H=2)
    with pytest.raises(SimError, match="step must be < total_steps=4, got 4"):
        s.sync_after(4, 4)
    with pytest.raises(SimError, match="K must be an integer >= 1, got 0"):
        total_steps(10, 0, 1)
    with pytest.raises(ValueError):  # SimError is a ValueError
        s.h_at(-1)


def test_schedule_is_pure():
    code = ("import sys, sim.schedule; bad = {'numpy', 'simpy', 'mpi4py', 'torch'} & set(sys.modules); "
            "sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
