"""Fair-shared links: max-min rates, k flows through one NIC, and the 8 x 2 shared-NIC cases of issue 12."""
from __future__ import annotations

import dataclasses

import pytest

from sim.compute import ComputeModel
from sim.engine import CountingEnvironment, Network, _Recorder, simulate_collective
from sim.links import max_min_rates
from sim.topology import Level, Topology, load_topology

NOCOMP = ComputeModel(kind="fixed", seconds_per_iter=(0.0,))
LV = Level(latency_s=3e-6, bandwidth_GBps=2.0, overhead_s=1e-6, gamma_s_per_byte=1e-10)
INTER = Level(latency_s=4e-5, bandwidth_GBps=1.25, overhead_s=1e-5, gamma_s_per_byte=2e-11)


def topo(nodes: int, b: int, sharing: str = "fair") -> Topology:
    return Topology(name=f"t{nodes}x{b}", nodes=nodes, gpus_per_node=b, intra=LV, inter=INTER, compute=NOCOMP,
                    link_sharing=sharing)


def send(t: Topology, msgs: list[tuple[int, int, float, float]]) -> list[float]:
    """Delivery times of messages (src, dst, bytes, start time) posted and sent at their start times."""
    env = CountingEnvironment()
    net = Network(env, t)
    rec = _Recorder(env)
    times = [0.0] * len(msgs)

    def one(i, s, d, n, t0):
        if t0 > 0:
            yield env.timeout(t0)
        posted, done = env.event(), env.event()
        posted.succeed()
        env.process(net.transfer(s, d, n, posted, done, rec))
        yield done
        times[i] = env.now

    for i, m in enumerate(msgs):
        env.process(one(i, *m))
    env.run()
    return times


def test_max_min_rates_water_filling():
    # Link a (capacity 10) carries flows 0, 1, 2; link b (capacity 4) carries flows 2 and 3.
    # b is the bottleneck: flows 2 and 3 get 2 each; a's remaining 8 goes to 0 and 1 (4 each).
    rates = max_min_rates({0: ("a",), 1: ("a",), 2: ("a", "b"), 3: ("b",)}, {"a": 10.0, "b": 4.0})
    assert rates == pytest.approx({0: 4.0, 1: 4.0, 2: 2.0, 3: 2.0})
    # One flow alone gets its slowest link.
    assert max_min_rates({7: ("a", "b")}, {"a": 10.0, "b": 4.0}) == pytest.approx({7: 4.0})


def test_max_min_rates_satisfy_the_bottleneck_property_on_random_networks():
    # Max-min fairness holds iff the rates are feasible and every flow has a saturated link on which no flow
    # gets more than it does (Bertsekas & Gallager, Data Networks, section 6.5.2).
    import random
    rng = random.Random(11)
    for _ in range(200):
        links = [f"l{i}" for i in range(rng.randint(1, 6))]
        cap = {lk: rng.choice([1.0, 2.0, 5.0, rng.uniform(0.5, 10)]) for lk in links}
        flows = {f: tuple(rng.sample(links, rng.randint(1, min(2, len(links))))) for f in range(rng.randint(1, 9))}
        rates = max_min_rates(flows, cap)
        assert set(rates) == set(flows)
        load = {lk: sum(rates[f] for f, ls in flows.items() if lk in ls) for lk in links}
        assert all(load[lk] <= cap[lk] * (1 + 1e-12) for lk in links)
        for f, ls in flows.items():
            assert any(load[lk] >= cap[lk] * (1 - 1e-9)
                       and all(rates[g] <= rates[f] * (1 + 1e-9) for g, gl in flows.items() if lk in gl)
                       for lk in ls), (flows, cap, rates)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_k_flows_through_one_nic_end_at_alpha_plus_k_m_beta(k):
    m = 3e5 + 7
    got = send(topo(2, k), [(i, k + i, m, 0.0) for i in range(k)])
    want = INTER.latency_s + INTER.overhead_s + k * m * INTER.beta
    assert got == pytest.approx([want] * k, rel=1e-12)
    fifo = send(topo(2, k, "fifo"), [(i, k + i, m, 0.0) for i in range(k)])
    hold = INTER.overhead_s + m * INTER.beta
    assert sorted(fifo) == pytest.approx([j * hold + INTER.latency_s for j in range(1, k + 1)], rel=1e-12)


def test_unequal_and_late_flows_share_by_processor_sharing():
    a = INTER.latency_s + INTER.overhead_s
    beta = INTER.beta
    m1, m2 = 1e5, 4e5
    small, large = send(topo(2, 2), [(0, 2, m1, 0.0), (1, 3, m2, 0.0)])
    assert small == pytest.approx(a + 2 * m1 * beta, rel=1e-12)     # half the NIC until it is done
    assert large == pytest.approx(a + (m1 + m2) * beta, rel=1e-12)  # then the whole NIC
    # A flow that starts while another is half done: both at half rate from then on.
    t0 = INTER.overhead_s + 0.5 * m2 * beta  # the first flow has m2 / 2 left when the second starts moving
    first, second = send(topo(2, 2), [(0, 2, m2, 0.0), (1, 3, m2, 0.5 * m2 * beta)])
    assert first == pytest.approx(t0 + m2 * beta + INTER.latency_s, rel=1e-12)
    assert second == pytest.approx(t0 + 1.5 * m2 * beta + INTER.latency_s, rel=1e-12)


def test_flows_through_different_nics_do_not_interact():
    m = 2e5
    got = send(topo(4, 1), [(0, 1, m, 0.0), (2, 3, m, 0.0)])
    assert got == pytest.approx([INTER.message_s(m)] * 2, rel=1e-12)
    # two senders into one receiving NIC share that NIC's receive direction
    got = send(topo(3, 1), [(0, 2, m, 0.0), (1, 2, m, 0.0)])
    assert got == pytest.approx([INTER.latency_s + INTER.overhead_s + 2 * m * INTER.beta] * 2, rel=1e-12)


def _rd_8x2(t: Topology, m: float) -> float:
    """Recursive doubling on 8 nodes x 2: one intra round, then three rounds of 2 concurrent messages per NIC."""
    i, e = t.intra, t.inter
    return (i.latency_s + i.overhead_s + m * i.beta + m * i.gamma_s_per_byte
            + sum(e.latency_s + e.overhead_s + 2 * m * e.beta + m * e.gamma_s_per_byte for _ in range(3)))


def _rab_8x2(t: Topology, n: float) -> float:
    """Rabenseifner on 8 nodes x 2: halving (intra n/2, inter n/4, n/8, n/16) then doubling back, k = 2 inter."""
    i, e = t.intra, t.inter
    ai, ae = i.latency_s + i.overhead_s, e.latency_s + e.overhead_s
    rs = ai + n / 2 * (i.beta + i.gamma_s_per_byte) + sum(ae + 2 * s * e.beta + s * e.gamma_s_per_byte
                                                          for s in (n / 4, n / 8, n / 16))
    ag = sum(ae + 2 * s * e.beta for s in (n / 16, n / 8, n / 4)) + ai + n / 2 * i.beta
    return rs + ag


def test_8x2_shared_nic_cases_equal_the_closed_form():
    paper = load_topology("paper-8x2-10gbps")
    assert paper.link_sharing == "fair"
    ranks = tuple(range(16))
    rd = simulate_collective(paper, ranks, "recursive_doubling", 65536.0).duration_s
    rab = simulate_collective(paper, ranks, "rabenseifner", 1048576.0).duration_s
    assert rd == pytest.approx(_rd_8x2(paper, 65536.0), rel=1e-9)
    assert rab == pytest.approx(_rab_8x2(paper, 1048576.0), rel=1e-9)
    # The figures of the external flow-level simulator quoted in issue 12 (0.51 ms and 1.96 ms), to its 3 digits.
    assert rd == pytest.approx(0.51e-3, rel=0.02) and rab == pytest.approx(1.96e-3, rel=0.02)
    # FIFO hides the first message's latency under the second one's transfer: optimistic.
    fifo = dataclasses.replace(paper, link_sharing="fifo")
    assert simulate_collective(fifo, ranks, "recursive_doubling", 65536.0).duration_s < 0.95 * rd
    assert simulate_collective(fifo, ranks, "rabenseifner", 1048576.0).duration_s < 0.95 * rab


def test_link_sharing_is_validated_and_round_trips():
    from sim.errors import SimError
    from sim.topology import topology_from_json
    with pytest.raises(SimError, match="link_sharing must be one of fair, fifo, got 'tcp'"):
        topo(1, 1, "tcp")
    t = topo(2, 2, "fifo")
    back = topology_from_json(t.to_json())
    assert back.link_sharing == "fifo" and back.to_json() == t.to_json()


@pytest.mark.parametrize("nodes,b", [(4, 2), (3, 2), (4, 3), (2, 4)])
def test_rail_allreduce_shares_each_nic_among_its_rails(nodes, b):
    # comm's rail all-reduce: a free intra level leaves the b rails' rings, run at once through each node's NIC.
    # Each of the 2 (nodes - 1) ring steps sends b chunks of n / (b nodes) through every NIC: with fair sharing a
    # step takes alpha + n beta / nodes (each chunk pays its own latency and overhead; gamma on the received chunk).
    free = Level(latency_s=0.0, bandwidth_GBps=None)
    t = dataclasses.replace(topo(nodes, b), intra=free)
    n = 3.0e6
    chunk = n / (b * nodes)
    step = INTER.overhead_s + INTER.latency_s + b * chunk * INTER.beta
    reduce_steps = nodes - 1
    want = 2 * (nodes - 1) * step + reduce_steps * chunk * INTER.gamma_s_per_byte
    res = simulate_collective(t, tuple(range(nodes * b)), "rail", n)
    assert res.duration_s == pytest.approx(want, rel=1e-9)
    assert res.bytes_inter == pytest.approx(nodes * b * 2 * (nodes - 1) * chunk)


def test_rail_inside_nodes_is_a_reduce_scatter_and_an_all_gather():
    # One rank per node: the rail is a ring over the nodes; one node: only the intra phases (2 (b - 1) rounds).
    t = topo(1, 4)
    n = 1.0e6
    res = simulate_collective(t, (0, 1, 2, 3), "rail", n)
    ring = simulate_collective(t, (0, 1, 2, 3), "ring", n)
    assert res.duration_s == pytest.approx(ring.duration_s, rel=1e-12)
    t4 = topo(4, 1)
    assert simulate_collective(t4, (0, 1, 2, 3), "rail", n).duration_s == pytest.approx(
        simulate_collective(t4, (0, 1, 2, 3), "ring", n).duration_s, rel=1e-12)
