"""Step-time jitter: the wait at each sync is E[max over K of the sum of H draws]; both engines agree; CV 0 = today."""
from __future__ import annotations

import json

import numpy as np
import pytest

from sim.compute import MODELS, ComputeModel
from sim.errors import SimError
from sim.jitter import StepJitter, lognormal_params, parse_jitter
from sim.run import RunConfig, simulate
from sim.schedule import SyncSchedule
from sim.topology import Level, Topology, load_topology

FREE = Level(latency_s=0.0, bandwidth_GBps=None)


def free_topology(K: int, c0: float) -> Topology:
    """No communication cost at all: every wall second is compute or waiting."""
    return Topology(name="free", nodes=1, gpus_per_node=K, intra=FREE, inter=FREE,
                    compute=ComputeModel(kind="fixed", seconds_per_iter=(c0,)))


def expected_max_of_sums(K: int, H: int, jitter: StepJitter, n: int = 100_000) -> float:
    """Monte Carlo E[max over K of the sum of H draws], from a stream independent of the simulator's."""
    rng = np.random.default_rng(12345)
    if jitter.kind == "lognormal":
        mu, sigma = lognormal_params(jitter.cv)
        draws = rng.lognormal(mu, sigma, size=(n, K, H))
    else:
        s = np.asarray(jitter.samples) / np.mean(jitter.samples)
        draws = rng.choice(s, size=(n, K, H))
    return float(draws.sum(axis=2).max(axis=1).mean())


@pytest.mark.parametrize("K,H,jit", [
    (8, 4, StepJitter(kind="lognormal", cv=0.3, seed=1)),
    (16, 1, StepJitter(kind="lognormal", cv=0.1, seed=2)),
    (4, 16, StepJitter(kind="empirical", samples=(0.9, 1.0, 1.05, 1.3, 0.8, 2.0), seed=3)),
])
def test_mean_wait_per_sync_is_expected_max_of_sums(K, H, jit):
    c0, syncs = 0.5, 4000
    cfg = RunConfig(topology=free_topology(K, c0), model=MODELS["resnet20"], K=K, B=1, N=K * H * syncs,
                    schedule=SyncSchedule(algorithm="local", H=H), allreduce="paper", jitter=jit)
    r = simulate(cfg)
    assert r.syncs_global == syncs
    want_max = c0 * expected_max_of_sums(K, H, jit)
    # Every sync starts when the slowest worker arrives: the wall time is the sum of the per-sync maxima.
    assert r.wall_s / syncs == pytest.approx(want_max, rel=0.01)
    # A worker waits max - its own sum; the mean of its own sum is H c0 (the draws have mean 1).
    assert r.wait_s / syncs == pytest.approx(want_max - H * c0, rel=0.01)
    assert r.compute_s == pytest.approx(H * c0 * syncs, rel=0.01)


def test_without_jitter_nobody_waits_and_cv0_is_today_exactly():
    topo = load_topology("paper-8x2-10gbps")
    base = dict(topology=topo, model=MODELS["resnet20"], K=16, B=128, N=16 * 128 * 200,
                schedule=SyncSchedule(algorithm="hierarchical", H=2, Hb=4))
    plain = simulate(RunConfig(**base)).to_json()
    zero = simulate(RunConfig(**base, jitter=StepJitter(kind="lognormal", cv=0.0, seed=9))).to_json()
    for key in ("wall_s", "compute_s", "comm_intra_s", "comm_inter_s", "wait_s", "bytes_inter", "comm_accounted_s"):
        assert zero[key] == plain[key], key
    noisy = simulate(RunConfig(**base, jitter=StepJitter(kind="lognormal", cv=0.2, seed=9))).to_json()
    assert noisy["wait_s"] > 0.05 * noisy["wall_s"] and noisy["wall_s"] > plain["wall_s"]


@pytest.mark.parametrize("jit", [StepJitter(kind="lognormal", cv=0.25, seed=4),
                                 StepJitter(kind="empirical", samples=(1.0, 1.1, 1.7, 0.95), seed=5)])
def test_engines_agree_with_jitter_stragglers_and_a_shared_nic(jit):
    from sim.stragglers import Stragglers
    topo = load_topology("paper-8x2-10gbps")
    cfg = dict(topology=topo, model=MODELS["resnet20"], K=8, B=64, N=8 * 64 * 40,
               schedule=SyncSchedule(algorithm="hierarchical", H=2, Hb=3), allreduce="rabenseifner", jitter=jit,
               stragglers=Stragglers(kind="random", prob=0.2, slowdown=2.0, seed=7))
    fast = simulate(RunConfig(**cfg), "fast").to_json()
    event = simulate(RunConfig(**cfg), "event").to_json()
    for key in ("wall_s", "compute_s", "comm_intra_s", "comm_inter_s", "wait_s", "bytes_inter"):
        assert event[key] == pytest.approx(fast[key], rel=1e-9), key
    again = simulate(RunConfig(**cfg), "fast").to_json()
    assert again["wall_s"] == fast["wall_s"]  # seeded


def test_jitter_parsing_and_validation(tmp_path):
    assert parse_jitter("none").kind == "none"
    j = parse_jitter("lognormal:0.15", seed=3)
    assert (j.kind, j.cv, j.seed) == ("lognormal", 0.15, 3)
    f = tmp_path / "machine.json"
    f.write_text(json.dumps({"step": {"samples_s": [0.1, 0.12, 0.11]}}))
    e = parse_jitter(f"empirical:{f}")
    assert e.kind == "empirical" and e.cv == pytest.approx(np.std([0.1, 0.12, 0.11]) / 0.11)
    with pytest.raises(SimError, match="jitter must be 'none', 'lognormal:CV'.*got 'gauss:1'"):
        parse_jitter("gauss:1")
    with pytest.raises(SimError, match="jitter cv must be a finite number >= 0, got -0.1"):
        StepJitter(kind="lognormal", cv=-0.1)
    with pytest.raises(SimError, match="empirical jitter needs >= 2 measured step times, got 1"):
        StepJitter(kind="empirical", samples=(1.0,))
    draws = StepJitter(kind="lognormal", cv=0.2).block(200_000, 1)
    assert draws.mean() == pytest.approx(1.0, rel=2e-3) and draws.std() == pytest.approx(0.2, rel=0.02)
