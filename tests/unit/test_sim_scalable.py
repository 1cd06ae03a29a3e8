"""The scalable collective path: round tables equal the programs, the recurrence equals the event engine, at scale."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import sim.engine as engine
import sim.run as run
from sim.collectives import NODE_ALGORITHMS
from sim.compute import MODELS, ComputeModel
from sim.costs import hierarchical_cost
from sim.engine import collective_programs, simulate_collective
from sim.errors import SimError
from sim.jitter import StepJitter
from sim.rounds import collective_rounds, round_messages
from sim.run import RunConfig, simulate
from sim.schedule import SyncSchedule
from sim.stragglers import Stragglers
from sim.topology import Level, Topology, load_topology

ALGS = ("recursive_doubling", "rabenseifner", "ring", "binomial", "hierarchical", "rail", "allgather")
LAYOUTS = ((1, 1), (1, 4), (2, 1), (3, 1), (2, 2), (3, 2), (4, 2), (2, 4), (3, 4), (5, 2), (6, 3), (4, 8), (7, 1))
INTRA = Level(latency_s=3e-6, bandwidth_GBps=2.0, overhead_s=1e-6, gamma_s_per_byte=1e-10)
INTER = Level(latency_s=4e-5, bandwidth_GBps=1.25, overhead_s=1e-5, gamma_s_per_byte=2e-11)


def topo(nodes: int, b: int, sharing: str = "fair") -> Topology:
    return Topology(name=f"t{nodes}x{b}", nodes=nodes, gpus_per_node=b, intra=INTRA, inter=INTER,
                    compute=ComputeModel(kind="fixed", seconds_per_iter=(0.0,)), link_sharing=sharing)


def _norm(progs):
    return [[(tuple(s), tuple(r)) for s, r in prog] for prog in progs]


@pytest.mark.parametrize("alg", ALGS)
def test_round_tables_run_the_same_programs_as_collectives_py(alg):
    for nodes, b in LAYOUTS:
        p = nodes * b
        for n in (1000.0, 3e5 + 7):
            want = collective_programs(alg, tuple(range(p)), n, b)
            got = round_messages(collective_rounds(alg, p, n, b), p)
            assert _norm(got) == _norm(want), (alg, nodes, b, n)


def _assert_same(fast, ref, what):
    assert fast.finish_s == pytest.approx(ref.finish_s, rel=1e-9, abs=1e-15), what
    assert fast.inter_s == pytest.approx(ref.inter_s, rel=1e-9, abs=1e-15), what
    assert fast.bytes_intra == pytest.approx(ref.bytes_intra, rel=1e-12), what
    assert fast.bytes_inter == pytest.approx(ref.bytes_inter, rel=1e-12), what
    assert fast.messages == ref.messages, what


@pytest.mark.parametrize("sharing", ["fair", "fifo"])
def test_recurrence_equals_the_event_engine_where_certified(sharing):
    certified = 0
    for alg in ALGS:
        for nodes, b in LAYOUTS:
            t = topo(nodes, b, sharing)
            ranks = tuple(range(nodes * b))
            ref = simulate_collective(t, ranks, alg, 2e5 + 3, method="event")
            out = engine._simulate_fast(t, ranks, alg, 2e5 + 3, "inter", "auto", False)
            if out is None:  # uncertified: flows out of step could share a NIC; "auto" runs the event engine
                # where it happens: NICs shared by unsynchronised flows (non-powers of two) or queued (FIFO)
                assert alg not in ("ring", "binomial", "hierarchical") and b > 1, (alg, nodes, b)
                assert sharing == "fifo" or nodes * b & (nodes * b - 1), (alg, nodes, b)
                _assert_same(simulate_collective(t, ranks, alg, 2e5 + 3), ref, (alg, nodes, b))
                continue
            certified += 1
            _assert_same(out, ref, (alg, nodes, b, sharing))
    assert certified >= (60 if sharing == "fair" else 45)


@pytest.mark.parametrize("alg, nodes, b, leader", [("ring", 12, 4, "auto"), ("rail", 24, 2, "auto"),
                                                   ("hierarchical", 40, 2, "ring")])
def test_long_rings_run_on_one_period_and_are_extrapolated_exactly(alg, nodes, b, leader):
    t = topo(nodes, b)
    ranks = tuple(range(nodes * b))
    fast = simulate_collective(t, ranks, alg, 1e6, "inter", leader, method="rounds")
    _assert_same(fast, simulate_collective(t, ranks, alg, 1e6, "inter", leader, method="event"), (alg, nodes, b))


def test_uncertified_collectives_fall_back_or_refuse_beyond_the_limit(monkeypatch):
    t = topo(3, 4)  # flat Rabenseifner over 12 ranks on nodes of 4: the fold desynchronises shared NICs
    ranks = tuple(range(12))
    with pytest.raises(SimError, match="shares NICs between flows that are not in step"):
        simulate_collective(t, ranks, "rabenseifner", 7e5, method="rounds")
    ref = simulate_collective(t, ranks, "rabenseifner", 7e5, method="event")
    assert simulate_collective(t, ranks, "rabenseifner", 7e5).duration_s == ref.duration_s
    monkeypatch.setattr(engine, "EVENT_MESSAGE_LIMIT", 10)
    with pytest.raises(SimError, match=r"simulating its 56 messages one by one exceeds the limit of 10"):
        simulate_collective(t, ranks, "rabenseifner", 7e5 + 1)


def test_65536_ranks_hierarchical_equals_its_closed_form():
    # 8,192 nodes x 8: far beyond the event engine; contention-free, so the closed form is exact
    t = dataclasses.replace(load_topology("v100-8x4-10gbps"), nodes=8192, gpus_per_node=8)
    n = float(MODELS["resnet50"].bytes)
    got = simulate_collective(t, tuple(range(65536)), "hierarchical", n)
    want = hierarchical_cost(8192, 8, n, t.intra.cost, t.inter.cost)
    assert got.duration_s == pytest.approx(want, rel=1e-9)
    assert got.bytes_inter == pytest.approx(8192 * 2 * n * (8191 / 8192), rel=1e-12)  # Rabenseifner among leaders


def test_65536_workers_resnet50_run_has_the_expected_wall_time():
    t = dataclasses.replace(load_topology("v100-8x4-10gbps"), nodes=8192, gpus_per_node=8,
                            compute=ComputeModel(kind="fixed", seconds_per_iter=(0.1,)))
    N = 90 * 1_281_167
    cfg = RunConfig(topology=t, model=MODELS["resnet50"], K=65536, B=32, N=N,
                    schedule=SyncSchedule(algorithm="local", H=1))
    res = simulate(cfg)
    T = math.ceil(N / (65536 * 32))
    coll = simulate_collective(t, tuple(range(65536)), "hierarchical", float(MODELS["resnet50"].bytes))
    assert res.syncs_global == T == 55
    assert res.wall_s == pytest.approx(T * (0.1 + coll.duration_s), rel=1e-12)


@pytest.mark.parametrize("allreduce", ["rail", "ring", "hierarchical", "rabenseifner"])
def test_whole_runs_agree_with_the_event_engine(allreduce):
    base = load_topology("paper-8x2-10gbps")
    t = dataclasses.replace(base, nodes=4, gpus_per_node=4, sync_overhead_s=(0.002, 0.0005),
                            sync_collective_factor=(1.5, 0.5))
    cfg = RunConfig(topology=t, model=MODELS["resnet20"], K=16, B=128, N=128 * 16 * 19 + 3, allreduce=allreduce,
                    schedule=SyncSchedule(algorithm="hierarchical", H=2, Hb=3), delay_global_s=0.003,
                    stragglers=Stragglers(kind="random", prob=0.2, slowdown=2.0, seed=3),
                    jitter=StepJitter(kind="lognormal", cv=0.1, seed=2))
    fast, ref = simulate(cfg, "fast").to_json(), simulate(cfg, "event").to_json()
    for key in ("wall_s", "compute_s", "comm_intra_s", "comm_inter_s", "wait_s", "delay_s", "overhead_s",
                "bytes_intra", "bytes_inter", "comm_accounted_s", "sync_global_s"):
        assert fast[key] == pytest.approx(ref[key], rel=1e-9, abs=1e-12), key


def test_factors_drawn_in_chunks_are_the_same_streams(monkeypatch):
    t = load_topology("paper-8x2-10gbps")
    cfg = RunConfig(topology=t, model=MODELS["resnet20"], K=16, B=128, N=128 * 16 * 40, allreduce="hierarchical",
                    schedule=SyncSchedule(algorithm="local", H=40),
                    stragglers=Stragglers(kind="random", prob=0.3, slowdown=2.0, seed=1),
                    jitter=StepJitter(kind="lognormal", cv=0.2, seed=4))
    whole = simulate(cfg).to_json()
    monkeypatch.setattr(run, "FACTOR_CHUNK", 16 * 3)  # three steps at a time
    chunked = simulate(cfg).to_json()
    for key in ("wall_s", "compute_s", "wait_s"):
        assert chunked[key] == pytest.approx(whole[key], rel=1e-12), key


def test_node_algorithms_need_whole_nodes_at_any_scale():
    t = dataclasses.replace(topo(1, 8), nodes=1024)
    for alg in NODE_ALGORITHMS:
        with pytest.raises(SimError, match="needs whole nodes of 8 consecutive ranks"):
            simulate_collective(t, tuple(range(1, 1001)), alg, 1e6)


def test_union_measure_equals_the_event_engines_interval_measure():
    from sim.engine import interval_measure
    from sim.scalable import union_measure
    rng = np.random.default_rng(5)
    b = rng.uniform(0, 10, 300)
    e = b + rng.exponential(0.05, 300) * (rng.random(300) < 0.9)
    his = np.sort(rng.uniform(0, 11, 50))
    want = interval_measure([[x, y] for x, y in zip(b, e)], 0.0, his)
    assert union_measure(b, e, his) == pytest.approx(want, rel=1e-12, abs=1e-15)
