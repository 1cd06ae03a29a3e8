"""Whole-run simulation: paper-mode exactness against eq. (6) (4a), fast engine against the event-level reference."""
from __future__ import annotations

import itertools
import math
import subprocess
import sys

import numpy as np
import pytest

from sim.compute import MODELS, ComputeModel
from sim.errors import SimError
from sim.run import RunConfig, simulate
from sim.schedule import SyncSchedule
from sim.stragglers import Stragglers, parse_stragglers
from sim.topology import Level, Topology, load_topology

RESNET = MODELS["resnet20"]


def paper_topology(servers: int, per_server: int, C1: float, C2: float, compute_s: float = 0.0) -> Topology:
    return Topology(name="paper-mode", nodes=servers, gpus_per_node=per_server,
                    intra=Level(latency_s=C1, bandwidth_GBps=None), inter=Level(latency_s=C2, bandwidth_GBps=None),
                    compute=ComputeModel(kind="fixed", seconds_per_iter=(compute_s,)))


def eq6_independent(K, S, N, B, H, Hb, C1, C2):
    """Eq. (6) restated from SPEC section 5, written here without sim.costs."""
    n_global = math.ceil(N / (K * B * H * Hb))
    n_block = math.ceil(N / (K * B * H)) - n_global
    return n_block * C1 * S * math.log2(K / S) + n_global * C2 * math.log2(K)


def test_paper_mode_equals_eq6_on_a_grid():
    C1, C2 = 0.0137, 0.731
    worst = 0.0
    layouts = [(1, 1), (1, 4), (2, 1), (2, 2), (3, 2), (4, 4), (5, 3), (8, 2), (2, 8)]
    for (S, per), N, B, H, Hb in itertools.product(layouts, [1, 7, 95, 96, 97, 1000, 4097], [1, 3, 8],
                                                   [1, 2, 5], [1, 2, 3, 4]):
        K = S * per
        cfg = RunConfig(topology=paper_topology(S, per, C1, C2), model=RESNET, K=K, B=B, N=N,
                        schedule=SyncSchedule(algorithm="hierarchical", H=H, Hb=Hb), allreduce="paper")
        got = simulate(cfg).comm_accounted_s
        want = eq6_independent(K, S, N, B, H, Hb, C1, C2)
        assert math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-300), (S, per, N, B, H, Hb, got, want)
        worst = max(worst, abs(got - want) / want if want else 0.0)
    assert worst < 1e-12


def test_paper_mode_event_engine_also_equals_eq6():
    for S, per, N, B, H, Hb in [(2, 2, 97, 3, 2, 3), (4, 2, 1000, 8, 1, 2), (1, 4, 33, 1, 4, 1)]:
        cfg = RunConfig(topology=paper_topology(S, per, 0.01, 0.2), model=RESNET, K=S * per, B=B, N=N,
                        schedule=SyncSchedule(algorithm="hierarchical", H=H, Hb=Hb), allreduce="paper")
        assert simulate(cfg, "event").comm_accounted_s == pytest.approx(
            eq6_independent(S * per, S, N, B, H, Hb, 0.01, 0.2), rel=1e-12)


CASES = [
    ("local", 4, 1, 0, "auto", Stragglers()),
    ("hierarchical", 2, 3, 0, "auto", Stragglers(kind="random", prob=0.3, slowdown=2.0, seed=5)),
    ("minibatch", 1, 1, 0, "ring", Stragglers(kind="fixed", rank=3, slowdown=1.5)),
    ("postlocal", 4, 1, 5, "rabenseifner", Stragglers()),
    ("hierarchical", 3, 2, 0, "recursive_doubling", Stragglers(kind="random", prob=0.5, slowdown=3.0, seed=1)),
]


@pytest.mark.parametrize("alg, H, Hb, switch, allreduce, strag", CASES)
def test_fast_engine_equals_event_reference(alg, H, Hb, switch, allreduce, strag):
    topo = load_topology("paper-8x2-10gbps")
    cfg = RunConfig(topology=topo, model=RESNET, K=8, B=128, N=128 * 8 * 23 + 5, allreduce=allreduce,
                    schedule=SyncSchedule(algorithm=alg, H=H, Hb=Hb, switch_step=switch), stragglers=strag,
                    delay_global_s=0.01, delay_block_s=0.001)
    fast, ref = simulate(cfg, "fast").to_json(), simulate(cfg, "event").to_json()
    for key in ("wall_s", "compute_s", "comm_intra_s", "comm_inter_s", "wait_s", "delay_s", "bytes_intra",
                "bytes_inter", "comm_accounted_s", "speedup"):
        assert fast[key] == pytest.approx(ref[key], rel=1e-9, abs=1e-12), key
    assert (fast["syncs_block"], fast["syncs_global"]) == (ref["syncs_block"], ref["syncs_global"])
    counts = cfg.schedule.counts(cfg.total_steps)
    assert (fast["syncs_block"], fast["syncs_global"]) == (counts["block"], counts["global"])


def test_known_values_fixed_straggler_and_paper_costs():
    # K=4 on 2 servers, compute c per step, worker 1 is s times slower: everyone else waits (s-1) c per step.
    c, s, C1, C2, T = 0.1, 1.5, 0.01, 0.2, 12
    topo = paper_topology(2, 2, C1, C2, compute_s=c)
    cfg = RunConfig(topology=topo, model=RESNET, K=4, B=1, N=4 * T, allreduce="paper",
                    schedule=SyncSchedule(algorithm="local", H=3), stragglers=Stragglers(kind="fixed", rank=1, slowdown=s),
                    delay_global_s=0.5)
    r = simulate(cfg)
    n_sync = T // 3
    assert r.compute_s == pytest.approx(c * T * (3 + s) / 4)
    assert r.wait_s == pytest.approx(3 / 4 * (s - 1) * c * T)
    assert r.comm_inter_s == pytest.approx(n_sync * C2 * 2) and r.comm_intra_s == 0
    assert r.delay_s == pytest.approx(0.5 * n_sync)
    assert r.wall_s == pytest.approx(s * c * T + n_sync * (2 * C2 + 0.5))
    j = r.to_json()
    assert j["single_worker_s"] == pytest.approx(4 * T * c)
    assert j["speedup"] == pytest.approx(4 * T * c / r.wall_s)


def test_random_stragglers_follow_the_documented_stream():
    c, K, T, prob, slow, seed = 0.2, 4, 9, 0.4, 2.5, 7
    topo = paper_topology(1, K, 0.0, 0.0, compute_s=c)
    cfg = RunConfig(topology=topo, model=RESNET, K=K, B=1, N=K * T, allreduce="paper",
                    schedule=SyncSchedule(algorithm="minibatch"), stragglers=parse_stragglers(f"random:{prob}:{slow}", seed))
    r = simulate(cfg)
    f = np.where(np.random.default_rng(seed).random((T, K)) < prob, slow, 1.0)
    assert r.compute_s == pytest.approx(c * f.sum() / K)
    assert r.wall_s == pytest.approx(c * f.max(axis=1).sum())  # every step syncs: the slowest sets the pace
    assert r.wait_s == pytest.approx(c * (f.max(axis=1, keepdims=True) - f).sum() / K)


def test_block_syncs_of_nodes_overlap():
    # Hierarchical with Hb large: block syncs of the nodes run at the same time, so the wall clock
    # pays one block all-reduce per sync while eq. (6)'s accounting pays one per node.
    topo = paper_topology(4, 2, 0.01, 0.3)
    cfg = RunConfig(topology=topo, model=RESNET, K=8, B=1, N=8 * 40, allreduce="paper",
                    schedule=SyncSchedule(algorithm="hierarchical", H=1, Hb=10))
    r = simulate(cfg)
    assert (r.syncs_block, r.syncs_global) == (36, 4)
    assert r.wall_s == pytest.approx(36 * 0.01 + 4 * 0.3 * 3)
    assert r.comm_accounted_s == pytest.approx(36 * 0.01 * 4 + 4 * 0.3 * 3)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(K=3), "K must be a multiple of gpus_per_node=2"),
    (dict(K=32), "K must be at most 16"),
    (dict(B=0), "B must be an integer >= 1, got 0"),
    (dict(allreduce="tree"), "allreduce must be one of"),
    (dict(delay_global_s=-1.0), "delay_global_s must be a finite number >= 0, got -1.0"),
    (dict(stragglers=Stragglers(kind="fixed", rank=9, slowdown=2.0)), "straggler rank must be < K=8, got 9"),
])
def test_bad_run_config(kwargs, fragment):
    base = dict(topology=load_topology("paper-8x2-10gbps"), model=RESNET, K=8, B=128, N=10000,
                schedule=SyncSchedule(algorithm="local", H=2))
    base.update(kwargs)
    with pytest.raises(SimError, match=fragment):
        RunConfig(**base)


@pytest.mark.parametrize("text, fragment", [
    ("random:2:3", "prob must be a number in [0, 1], got 2.0"),
    ("fixed:1:0.5", "slowdown must be a finite number >= 1, got 0.5"),
    ("slow", "straggler must be 'none'"),
])
def test_bad_stragglers(text, fragment):
    with pytest.raises(SimError) as exc:
        parse_stragglers(text)
    assert fragment in str(exc.value)


def test_sim_imports_neither_mpi4py_nor_torch():
    code = ("import sys, sim, sim.cli, sim.run, sim.engine, sim.calibrate, sim.whatif; "
            "bad = {'mpi4py', 'torch'} & {m.split('.')[0] for m in sys.modules}; print(sorted(bad)); "
            "sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
