"""SimPy network model: ports and NICs as resources, and the message-level execution of one collective."""
# Contention model: every GPU has its own intra-node send port and receive port; all GPUs of a node
# share one NIC send direction and one NIC receive direction for inter-node messages. Two ways to share
# (the topology's ``link_sharing``):
# * "fair" (default): a message spends ``overhead_s`` on its own, then its n bytes flow through the
#   sender's and the receiver's port, which every concurrent flow shares max-min fairly (sim/links.py),
#   and it is delivered ``latency_s`` later. k messages of m bytes through one NIC at once all arrive
#   after alpha + k m beta, as TCP flows sharing a NIC do.
# * "fifo": ports are queues of capacity 1. A message first takes the sender's port, then the receiver's
#   port, holds both for ``overhead_s + n / bandwidth``, releases them, and is delivered ``latency_s``
#   later: the first message's latency hides under the second one's transfer. Ports are taken in that
#   order only, and nothing is awaited while holding a receive port, so no deadlock can occur.
# Rendezvous protocol: a message moves only once the receiver has posted the matching receive (has
# reached that round), and the send completes when the message is delivered. This makes a
# contention-free run equal the alpha-beta-gamma closed forms, also for the fold and binomial trees.
from __future__ import annotations

import functools
import logging
import math
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import simpy

from sim.collectives import (
    NODE_ALGORITHMS,
    Program,
    allgather_programs,
    flat_programs,
    hierarchical_programs,
    rail_programs,
)
from sim.errors import SimError
from sim.links import FairLinks
from sim.topology import Level, Topology

__all__ = ["CountingEnvironment", "Network", "CollectiveResult", "start_collective", "simulate_collective",
           "collective_programs", "interval_measure", "EVENT_MESSAGE_LIMIT", "METHODS"]

log = logging.getLogger(__name__)


class CountingEnvironment(simpy.Environment):
    """A SimPy environment that counts the events it processes (for events-per-second figures)."""

    def __init__(self) -> None:
        super().__init__()
        self.n_events = 0

    def step(self) -> None:
        self.n_events += 1
        super().step()


class Network:
    """The ports and NIC queues of a topology inside one SimPy environment."""

    def __init__(self, env: simpy.Environment, topo: Topology) -> None:
        self.env = env
        self.topo = topo
        self.b = topo.gpus_per_node
        self._res: dict[tuple[str, int], simpy.Resource] = {}
        self.fair = FairLinks(env) if topo.link_sharing == "fair" else None

    def _port(self, kind: str, idx: int) -> simpy.Resource:
        res = self._res.get((kind, idx))
        if res is None:
            res = self._res[(kind, idx)] = simpy.Resource(self.env, capacity=1)
        return res

    def level_of(self, src: int, dst: int) -> tuple[str, Level]:
        if src // self.b == dst // self.b:
            return "intra", self.topo.intra
        return "inter", self.topo.inter

    def transfer(self, src: int, dst: int, nbytes: float, posted: simpy.Event, done: simpy.Event,
                 record: _Recorder) -> Generator[simpy.Event, object, None]:
        """Move one message once `posted` (the receive) has fired; succeeds `done` on delivery."""
        if not posted.triggered:
            yield posted
        name, lv = self.level_of(src, dst)
        if self.fair is not None:
            flight = record.begin(name)
            if lv.overhead_s > 0:
                yield self.env.timeout(lv.overhead_s)
            if nbytes * lv.beta > 0:
                links = (("tx", src), ("rx", dst)) if name == "intra" else \
                    (("nic_tx", src // self.b), ("nic_rx", dst // self.b))
                yield self.fair.transfer(links, 1.0 / lv.beta, nbytes)
            if lv.latency_s > 0:
                yield self.env.timeout(lv.latency_s)
            record.end(name, nbytes, flight, self.env.now)
            done.succeed()
            return
        if name == "intra":
            tx, rx = self._port("tx", src), self._port("rx", dst)
        else:
            tx, rx = self._port("nic_tx", src // self.b), self._port("nic_rx", dst // self.b)
        flight = record.begin(name)
        req_tx = tx.request()
        yield req_tx
        req_rx = rx.request()
        yield req_rx
        hold = lv.overhead_s + nbytes * lv.beta
        if hold > 0:
            yield self.env.timeout(hold)
        rx.release(req_rx)
        tx.release(req_tx)
        if lv.latency_s > 0:
            yield self.env.timeout(lv.latency_s)
        record.end(name, nbytes, flight, self.env.now)
        done.succeed()


class _Recorder:
    """Bytes per level and the intervals during which inter-node messages were in flight."""

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self.bytes = {"intra": 0.0, "inter": 0.0}
        self.messages = 0
        # [start, end] of every inter-node message, from its first port request (queueing counts)
        # to delivery; end is +inf while still in flight, so a rank that finishes early already
        # sees the messages that are moving at that moment.
        self.inter_intervals: list[list[float]] = []

    def begin(self, level: str) -> list[float] | None:
        if level != "inter":
            return None
        flight = [self.env.now, math.inf]
        self.inter_intervals.append(flight)
        return flight

    def end(self, level: str, nbytes: float, flight: list[float] | None, now: float) -> None:
        self.bytes[level] += nbytes
        self.messages += 1
        if flight is not None:
            flight[1] = now


def interval_measure(intervals: list, lo: float, his: np.ndarray) -> np.ndarray:
    """For each h in `his`: length of the union of `intervals` clipped to [lo, h]."""
    his = np.asarray(his, dtype=float)
    merged: list[list[float]] = []
    for a, b in sorted(intervals):
        a = max(a, lo)
        if b <= a:
            continue
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    if not merged:
        return np.zeros_like(his)
    starts = np.array([m[0] for m in merged])
    ends = np.array([m[1] for m in merged])
    # Union measure up to h: full intervals ending before h plus the part of the one containing h.
    full = np.concatenate(([0.0], np.cumsum(ends - starts)))
    k = np.searchsorted(starts, his, side="right")  # intervals starting before h
    part = np.where(k > 0, np.minimum(his, ends[np.maximum(k - 1, 0)]) - starts[np.maximum(k - 1, 0)], 0.0)
    return full[np.maximum(k - 1, 0)] * (k > 0) + np.maximum(part, 0.0)


@dataclass(kw_only=True, frozen=True)
class CollectiveResult:
    """One collective started by all its ranks at time 0: per-rank finish and inter-node share."""

    finish_s: np.ndarray        # per local rank: time from the common start to that rank's completion
    inter_s: np.ndarray         # per local rank: part of finish_s with an inter-node message in flight
    bytes_intra: float
    bytes_inter: float
    messages: int
    events: int

    @property
    def duration_s(self) -> float:
        return float(self.finish_s.max()) if self.finish_s.size else 0.0


def collective_programs(algorithm: str, ranks: tuple[int, ...], nbytes: float, b: int,
                        leader: str = "auto") -> list[Program]:
    """Programs for a group of global `ranks`; hierarchical and rail need whole nodes of b consecutive ranks.

    "allgather" gathers `nbytes` from every rank (compressed syncs) instead of reducing `nbytes`.
    """
    p = len(ranks)
    if algorithm == "allgather":
        return allgather_programs(p, nbytes)
    if algorithm in NODE_ALGORITHMS:
        if p % b or any(r != ranks[0] + i for i, r in enumerate(ranks)) or ranks[0] % b:
            raise SimError(f"{algorithm} all-reduce needs whole nodes of {b} consecutive ranks, got {p} ranks")
        if algorithm == "hierarchical":
            return hierarchical_programs(p // b, b, nbytes, leader)
        return rail_programs(p // b, b, nbytes)
    return flat_programs(algorithm, p, nbytes)


def start_collective(env: simpy.Environment, net: Network, ranks: tuple[int, ...], algorithm: str,
                     nbytes: float, paper_level: Level | None = None,
                     leader: str = "auto") -> tuple[list[simpy.Process], _Recorder]:
    """Launch one collective now; returns the per-rank processes (in `ranks` order) and its recorder.

    algorithm "paper": no messages; every rank spends C lg p, C = alpha of `paper_level` (SPEC eq. 6).
    """
    rec = _Recorder(env)
    if algorithm == "paper":
        p = len(ranks)
        cost = paper_level.latency_s + paper_level.overhead_s if paper_level is not None else 0.0
        dt = cost * float(np.log2(p))
        inter = paper_level is net.topo.inter
        start = env.now

        def paper_proc() -> Generator[simpy.Event, object, None]:
            if dt > 0:
                yield env.timeout(dt)
            if inter:
                rec.inter_intervals.append([start, env.now])
        return [env.process(paper_proc()) for _ in ranks], rec

    programs = collective_programs(algorithm, ranks, nbytes, net.b, leader)
    events: dict[tuple[int, int, int], tuple[simpy.Event, simpy.Event]] = {}

    def msg_events(src: int, dst: int, seq: int) -> tuple[simpy.Event, simpy.Event]:
        """(receive posted, message delivered) of the seq-th message src -> dst."""
        evs = events.get((src, dst, seq))
        if evs is None:
            evs = events[(src, dst, seq)] = (env.event(), env.event())
        return evs

    def rank_proc(i: int, prog: Program) -> Generator[simpy.Event, object, None]:
        me = ranks[i]
        sent: dict[int, int] = {}
        got: dict[int, int] = {}
        for sends, recvs in prog:
            waits = []
            for d, m in sends:
                seq = sent.get(d, 0)
                sent[d] = seq + 1
                posted, done = msg_events(i, d, seq)
                env.process(net.transfer(me, ranks[d], m, posted, done, rec))
                waits.append(done)
            red = 0.0
            for s, m, reduce in recvs:
                seq = got.get(s, 0)
                got[s] = seq + 1
                posted, done = msg_events(s, i, seq)
                posted.succeed()
                waits.append(done)
                if reduce:
                    red += m * net.level_of(ranks[s], me)[1].gamma_s_per_byte
            yield waits[0] if len(waits) == 1 else simpy.AllOf(env, waits)
            if red > 0:
                yield env.timeout(red)

    return [env.process(rank_proc(i, prog)) for i, prog in enumerate(programs)], rec


#: Collectives whose round tables fail the certificate of sim/scalable.py run message by message on the event
#: engine: 2,000 to 7,500 messages a second on this shared machine and about 1.2 GB per million messages (a flat
#: Rabenseifner over 65,528 ranks: 1.05 M messages, 527 s, 1.2 GB). Above this many messages it refuses (exit 2).
EVENT_MESSAGE_LIMIT = 250_000
METHODS = ("auto", "rounds", "event")


@functools.lru_cache(maxsize=256)
def simulate_collective(topo: Topology, ranks: tuple[int, ...], algorithm: str, nbytes: float,
                        paper_level: str = "inter", leader: str = "auto", method: str = "auto") -> CollectiveResult:
    """One collective alone on the network, all ranks starting at 0 (memoised).

    `paper_level` ("intra" or "inter") is the level whose C a "paper" collective charges: eq. (6)
    charges C2 for every global sync, even when all devices share one server.
    `method` "auto": the round-by-round recurrence of sim/scalable.py where its certificate holds (the same times
    as the event engine, at any scale), else the event engine; "rounds": the recurrence or an error; "event": the
    SimPy message-level reference.
    """
    if method not in METHODS:
        raise SimError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method != "event":
        res = _simulate_fast(topo, ranks, algorithm, nbytes, paper_level, leader, method == "rounds")
        if res is not None:
            return res
    return _simulate_event(topo, ranks, algorithm, nbytes, paper_level, leader)


def _simulate_fast(topo: Topology, ranks: tuple[int, ...], algorithm: str, nbytes: float, paper_level: str,
                   leader: str, required: bool) -> CollectiveResult | None:
    """The collective by closed form (paper) or round tables; None where the round tables are not certified and
    the event engine can run it within EVENT_MESSAGE_LIMIT messages."""
    from sim.rounds import collective_rounds
    from sim.scalable import run_rounds, union_measure

    p = len(ranks)
    if algorithm == "paper":
        level = topo.inter if paper_level == "inter" else topo.intra
        dt = (level.latency_s + level.overhead_s) * float(np.log2(p)) if p else 0.0
        fin = np.full(p, dt)
        inter = fin.copy() if paper_level == "inter" and dt > 0 else np.zeros(p)
        return CollectiveResult(finish_s=fin, inter_s=inter, bytes_intra=0.0, bytes_inter=0.0, messages=0, events=0)
    if algorithm in NODE_ALGORITHMS:
        collective_programs(algorithm, ranks, nbytes, topo.gpus_per_node, leader) if p <= 64 else _check_nodes(
            algorithm, ranks, topo.gpus_per_node)
    rounds = collective_rounds(algorithm, p, nbytes, topo.gpus_per_node, leader)
    out = run_rounds(rounds, topo, ranks)
    if out is None:
        msgs = sum(rd.messages for rd in rounds)
        if required or msgs > EVENT_MESSAGE_LIMIT:
            raise SimError(f"the {algorithm} collective over {p} ranks with {topo.link_sharing} link sharing shares "
                           f"NICs between flows that are not in step (no symmetry to exploit), and simulating its "
                           f"{msgs:,} messages one by one exceeds the limit of {EVENT_MESSAGE_LIMIT:,}; use K a "
                           f"power of two or --allreduce auto, hierarchical or rail"
                           + (", or fair link sharing" if topo.link_sharing == "fifo" else ""))
        log.info("collective %s over %d ranks not certified for the round recurrence: event engine (%d messages)",
                 algorithm, p, msgs)
        return None
    inter = union_measure(out.inter_begin, out.inter_end, out.finish_s)
    return CollectiveResult(finish_s=out.finish_s, inter_s=inter, bytes_intra=out.bytes_intra,
                            bytes_inter=out.bytes_inter, messages=out.messages, events=0)


def _check_nodes(algorithm: str, ranks: tuple[int, ...], b: int) -> None:
    p = len(ranks)
    r = np.asarray(ranks)
    if p % b or r[0] % b or np.any(np.diff(r) != 1):
        raise SimError(f"{algorithm} all-reduce needs whole nodes of {b} consecutive ranks, got {p} ranks")


def _simulate_event(topo: Topology, ranks: tuple[int, ...], algorithm: str, nbytes: float,
                    paper_level: str = "inter", leader: str = "auto") -> CollectiveResult:
    """Event-level simulation of one collective alone on the network, all ranks starting at 0."""
    env = CountingEnvironment()
    net = Network(env, topo)
    level = topo.inter if paper_level == "inter" else topo.intra
    procs, rec = start_collective(env, net, ranks, algorithm, nbytes, level, leader)
    finish = np.zeros(len(ranks))

    def watch(i: int, proc: simpy.Process) -> Generator[simpy.Event, object, None]:
        yield proc
        finish[i] = env.now

    for i, proc in enumerate(procs):
        env.process(watch(i, proc))
    env.run()
    inter = interval_measure(rec.inter_intervals, 0.0, finish)
    log.debug("collective %s over %d ranks, %g bytes: %.6g s, %d events", algorithm, len(ranks), nbytes,
              finish.max() if finish.size else 0.0, env.n_events)
    return CollectiveResult(finish_s=finish, inter_s=inter, bytes_intra=rec.bytes["intra"],
                            bytes_inter=rec.bytes["inter"], messages=rec.messages, events=env.n_events)
