"""Event-level collectives: contention-free runs equal the closed forms (4b); a shared NIC shows contention (4c)."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest

from sim.compute import ComputeModel
from sim.costs import allreduce_cost, hierarchical_cost
from sim.engine import CountingEnvironment, Network, _Recorder, interval_measure, simulate_collective
from sim.topology import Level, Topology

NOCOMP = ComputeModel(kind="fixed", seconds_per_iter=(0.0,))
LV = Level(latency_s=3e-6, bandwidth_GBps=2.0, overhead_s=1e-6, gamma_s_per_byte=1e-10)
INTER = Level(latency_s=4e-5, bandwidth_GBps=1.25, overhead_s=1e-5, gamma_s_per_byte=2e-11)


def topo(nodes: int, b: int, intra: Level = LV, inter: Level = INTER, sharing: str = "fair") -> Topology:
    return Topology(name=f"t{nodes}x{b}", nodes=nodes, gpus_per_node=b, intra=intra, inter=inter, compute=NOCOMP,
                    link_sharing=sharing)


@pytest.mark.parametrize("alg", ["recursive_doubling", "rabenseifner", "ring", "binomial"])
def test_contention_free_equals_closed_form_p1_to_64(alg):
    n = 1e6 + 3.0
    for p in range(1, 65):
        t = topo(1, p)  # one node: every rank has its own ports, so nothing contends
        got = simulate_collective(t, tuple(range(p)), alg, n).duration_s
        want = allreduce_cost(alg, p, n, LV.cost)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-15), (alg, p)


@pytest.mark.parametrize("alg", ["recursive_doubling", "rabenseifner", "ring"])
def test_one_gpu_per_node_uses_inter_level_without_contention(alg):
    for p in (2, 3, 8, 13):
        got = simulate_collective(topo(p, 1), tuple(range(p)), alg, 5e5).duration_s
        assert got == pytest.approx(allreduce_cost(alg, p, 5e5, INTER.cost), rel=1e-9)


def test_hierarchical_equals_closed_form():
    for nodes, b in ((1, 4), (2, 2), (3, 5), (8, 4), (16, 8)):
        for n in (1000.0, 1e6):
            t = topo(nodes, b)
            got = simulate_collective(t, tuple(range(nodes * b)), "hierarchical", n)
            assert got.duration_s == pytest.approx(hierarchical_cost(nodes, b, n, LV.cost, INTER.cost), rel=1e-9)


def test_bytes_per_level_are_counted():
    n, p = 4096.0, 16
    rd = simulate_collective(topo(1, p), tuple(range(p)), "recursive_doubling", n)
    assert rd.bytes_intra == pytest.approx(p * 4 * n) and rd.bytes_inter == 0 and rd.messages == p * 4
    ring = simulate_collective(topo(4, 4), tuple(range(p)), "ring", n)
    # 2(p-1) rounds of p chunks of n/p; a chunk crosses nodes on 4 of the 16 ring edges.
    assert ring.bytes_inter == pytest.approx(2 * (p - 1) * 4 * n / p)
    assert ring.bytes_intra == pytest.approx(2 * (p - 1) * 12 * n / p)


def _send_all(t: Topology, pairs: list[tuple[int, int]], n: float) -> list[float]:
    env = CountingEnvironment()
    net = Network(env, t)
    rec = _Recorder(env)
    done = [env.event() for _ in pairs]
    for (s, d), ev in zip(pairs, done):
        posted = env.event()
        posted.succeed()
        env.process(net.transfer(s, d, n, posted, ev, rec))
    times = [0.0] * len(pairs)

    def watch(i, ev):
        yield ev
        times[i] = env.now
    for i, ev in enumerate(done):
        env.process(watch(i, ev))
    env.run()
    return times


@pytest.mark.parametrize("sharing", ["fair", "fifo"])
def test_contention_two_gpus_share_the_nic(sharing):
    t, n = topo(2, 2, sharing=sharing), 1e6
    hold = INTER.overhead_s + n * INTER.beta
    one = _send_all(t, [(0, 2)], n)
    two = _send_all(t, [(0, 2), (1, 3)], n)
    assert one[0] == pytest.approx(hold + INTER.latency_s)
    assert max(two) > one[0]
    if sharing == "fifo":
        assert max(two) == pytest.approx(2 * hold + INTER.latency_s)  # serialised on node 0's NIC
        assert min(two) == pytest.approx(hold + INTER.latency_s)
    else:  # both flows share the NIC and end together; each pays its own overhead and latency once
        assert two == pytest.approx([INTER.latency_s + INTER.overhead_s + 2 * n * INTER.beta] * 2, rel=1e-12)
    # Inside a node each GPU has its own port: no contention.
    intra = _send_all(t, [(0, 1), (1, 0)], n)
    assert intra == pytest.approx([LV.message_s(n)] * 2)


@pytest.mark.parametrize("sharing", ["fair", "fifo"])
def test_contention_slows_a_flat_allreduce_across_nodes(sharing):
    n = 1e6
    flat = simulate_collective(topo(2, 4, sharing=sharing), tuple(range(8)), "rabenseifner", n).duration_s
    # Rabenseifner's two far rounds carry 4 GPUs' traffic through each NIC: slower than any free model.
    free_bound = allreduce_cost("rabenseifner", 8, n, INTER.cost)
    assert flat > free_bound


def test_interval_measure_against_brute_force():
    rng = random.Random(5)
    for _ in range(50):
        iv = [(a, a + rng.uniform(0, 2)) for a in (rng.uniform(0, 10) for _ in range(rng.randint(0, 8)))]
        his = np.array([rng.uniform(0, 12) for _ in range(5)])
        grid = np.linspace(0, 12, 120001)[:-1] + 0.5e-4
        covered = np.zeros_like(grid, dtype=bool)
        for a, b in iv:
            covered |= (grid >= a) & (grid < b)
        want = [covered[grid < h].sum() * 1e-4 for h in his]
        assert interval_measure(iv, 0.0, his) == pytest.approx(want, abs=3e-4)


def test_paper_collective_costs_C_lg_p():
    t = topo(4, 2, intra=Level(latency_s=0.5, bandwidth_GBps=None), inter=Level(latency_s=2.0, bandwidth_GBps=None))
    assert simulate_collective(t, tuple(range(8)), "paper", 1e6, "inter").duration_s == pytest.approx(2.0 * 3)
    assert simulate_collective(t, (0, 1), "paper", 1e6, "intra").duration_s == pytest.approx(0.5)
    assert math.isclose(simulate_collective(t, tuple(range(6)), "paper", 1.0, "inter").duration_s,
                        2.0 * math.log2(6), rel_tol=1e-15)


def allgather_independent(p: int, c: float, lv: Level) -> float:
    """Recursive-doubling all-gather with the fold, as a critical-path recurrence over the core ranks."""
    a, b = lv.latency_s + lv.overhead_s, lv.beta
    q = 1 << (p.bit_length() - 1)
    r = p - q
    held = [2 * c if v < r else c for v in range(q)]  # bytes each core rank holds after the fold
    ready = [a + c * b if v < r else 0.0 for v in range(q)]
    mask = 1
    while mask < q:
        new_ready, new_held = ready[:], held[:]
        for v in range(q):
            u = v ^ mask
            new_ready[v] = max(ready[v], ready[u]) + a + max(held[v], held[u]) * b
            new_held[v] = held[v] + held[u]
        ready, held, mask = new_ready, new_held, mask << 1
    end = max(ready)
    return end + (a + p * c * b if r else 0.0)


def test_allgather_equals_closed_form_and_recurrence():
    from sim.costs import allgather_pow2_cost
    c = 33750.0
    for p in (1, 2, 4, 8, 16, 32, 64):
        got = simulate_collective(topo(1, p), tuple(range(p)), "allgather", c)
        assert got.duration_s == pytest.approx(allgather_pow2_cost(p, c, LV.cost), rel=1e-9, abs=1e-15)
        assert got.bytes_intra == pytest.approx(p * (p - 1) * c)  # every rank receives the p - 1 other blocks
    for p in (3, 5, 6, 7, 12, 13, 31):
        got = simulate_collective(topo(1, p), tuple(range(p)), "allgather", c).duration_s
        assert got == pytest.approx(allgather_independent(p, c, LV), rel=1e-9)


def test_compressed_runs_charge_the_packed_size():
    from sim.compute import MODELS
    from sim.run import RunConfig, simulate
    from sim.schedule import SyncSchedule
    t = topo(2, 2)
    m = MODELS["resnet20"]
    base = dict(topology=t, model=m, K=4, B=1, N=40, schedule=SyncSchedule(algorithm="local", H=2))
    sign = RunConfig(**base, compression="sign")
    ef = RunConfig(**base, compression="ef-sign")
    assert sign.wire_bytes == math.ceil(270_000 / 8) and ef.wire_bytes == sign.wire_bytes + 4
    r = simulate(sign)
    g = simulate_collective(t, (0, 1, 2, 3), "allgather", float(sign.wire_bytes))
    assert r.syncs_global == 5 and r.bytes_intra + r.bytes_inter == pytest.approx(5 * 4 * 3 * sign.wire_bytes)
    assert r.comm_accounted_s == pytest.approx(5 * g.duration_s)
    assert simulate(sign, "event").wall_s == pytest.approx(r.wall_s, rel=1e-9)
