"""Simulate one training run: workers alternate compute and syncs; a fast engine and the event-level reference."""
# Semantics shared by both engines: a sync's collective starts when the last worker of its group
# (the node for a "block" sync, all K workers for a "global" one) arrives; the time a worker spends
# before that is "waiting". Collectives then run at message level on the shared network. Block
# syncs of different nodes overlap in time (they use disjoint intra-node ports). An extra delay per
# level is added to every worker of the group after the collective, and so is the topology's fitted
# per-sync software overhead (sync_overhead_s plus sync_collective_factor times the sync's collective duration, both 0
# unless `sim calibrate --runs` wrote them). Compute times
# are the compute model's seconds times the stragglers' and the jitter's per-(worker, step) factors. With `cpu`
# (ranks sharing one machine's cores, sim/cpushare.py) those seconds are work, and the ranks that compute at the
# same time share the cores (processor sharing; the fast engine only).
#
# engine "event": every worker is a SimPy process and every collective is simulated message by message
# on one network (the reference). engine "fast": the same barrier recurrence in numpy, with each
# distinct collective simulated once at message level and memoised (a collective that starts
# together always takes the same per-rank times, stragglers or not). Tests check both agree.
from __future__ import annotations

import logging
import math
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simpy

from sim.collectives import ALL_ALGORITHMS, FLAT_ALGORITHMS
from sim.compute import ModelSpec
from sim.costs import auto_algorithm, eq6
from sim.cpushare import SharedCPU
from sim.engine import (
    CollectiveResult,
    CountingEnvironment,
    Network,
    interval_measure,
    simulate_collective,
    start_collective,
)
from sim.errors import SimError
from sim.jitter import StepJitter
from sim.schedule import SyncSchedule, total_steps
from sim.stragglers import Stragglers
from sim.topology import Topology

__all__ = ["ALLREDUCE_CHOICES", "COMPRESSIONS", "ENGINES", "RunConfig", "RunResult", "Timeline", "simulate",
           "resolve_allreduce"]

log = logging.getLogger(__name__)

ALLREDUCE_CHOICES = ("auto", "paper") + ALL_ALGORITHMS
#: Sign compression (SPEC section 2): 1 bit per parameter, gathered with a recursive-doubling
#: all-gather; "ef-sign" also sends its float32 scale ||p||_1 / d.
COMPRESSIONS = ("none", "sign", "ef-sign")
ENGINES = ("fast", "event")
SCHEMA = "sim.run/1"


def _nonneg(name: str, v: object) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise SimError(f"{name} must be a finite number >= 0, got {v!r}")


@dataclass(kw_only=True)
class RunConfig:
    """One simulated run: K workers of `topology`, training `model` for N samples with batch B per worker."""

    topology: Topology
    model: ModelSpec
    K: int
    B: int
    N: int
    schedule: SyncSchedule
    allreduce: str = "auto"
    delay_global_s: float = 0.0
    delay_block_s: float = 0.0
    stragglers: Stragglers = field(default_factory=Stragglers)
    jitter: StepJitter = field(default_factory=StepJitter)
    compression: str = "none"
    epochs: float | None = None  # for the record only; N is what counts
    cpu: SharedCPU | None = None  # ranks sharing one machine's cores; None: each worker has its own device
    leader_allreduce: str = "auto"  # the hierarchical all-reduce's leader algorithm ("auto": MPICH's rule)
    block_allreduce: str | None = None  # the block syncs' algorithm; None: as resolve_allreduce picks it

    def __post_init__(self) -> None:
        self.nodes_used = self.topology.check_workers(self.K)
        for name in ("B", "N"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise SimError(f"{name} must be an integer >= 1, got {v!r}")
        if self.allreduce not in ALLREDUCE_CHOICES:
            raise SimError(f"allreduce must be one of {', '.join(ALLREDUCE_CHOICES)}, got {self.allreduce!r}")
        if self.leader_allreduce not in ("auto",) + FLAT_ALGORITHMS:
            raise SimError(f"leader_allreduce must be one of auto, {', '.join(FLAT_ALGORITHMS)}, "
                           f"got {self.leader_allreduce!r}")
        if self.block_allreduce is not None and self.block_allreduce not in FLAT_ALGORITHMS:
            raise SimError(f"block_allreduce must be one of {', '.join(FLAT_ALGORITHMS)}, got {self.block_allreduce!r}")
        _nonneg("delay_global_s", self.delay_global_s)
        _nonneg("delay_block_s", self.delay_block_s)
        self.stragglers.check_workers(self.K)
        if self.compression not in COMPRESSIONS:
            raise SimError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {self.compression!r}")
        if self.compression != "none" and self.allreduce == "paper":
            raise SimError(f"compression {self.compression!r} cannot be combined with allreduce 'paper' (eq. 6 mode)")

    @property
    def wire_bytes(self) -> int:
        """Bytes each worker contributes to a sync: the model, or its packed signs (+ a float32 scale)."""
        if self.compression == "none":
            return self.model.bytes
        return -(-self.model.params // 8) + (4 if self.compression == "ef-sign" else 0)

    def algorithms(self) -> tuple[str, str]:
        """(global, block) collective: all-reduces of the model, or all-gathers of compressed changes."""
        if self.compression != "none":
            return "allgather", "allgather"
        glob, block = resolve_allreduce(self.allreduce, self.nodes_used, self.topology.gpus_per_node, self.model.bytes)
        return glob, block if self.block_allreduce is None or block == "paper" else self.block_allreduce

    @property
    def total_steps(self) -> int:
        return total_steps(self.N, self.K, self.B)


def resolve_allreduce(choice: str, nodes: int, b: int, nbytes: float) -> tuple[str, str]:
    """(global algorithm over all K ranks, block algorithm over one node's b ranks)."""
    if choice == "paper":
        return "paper", "paper"
    block = auto_algorithm(nbytes) if choice in ("auto", "hierarchical") else choice
    if choice in ("auto", "hierarchical"):
        glob = "hierarchical" if nodes > 1 and b > 1 else auto_algorithm(nbytes)
        return glob, block
    if choice not in FLAT_ALGORITHMS + ("rail",):
        raise SimError(f"allreduce must be one of {', '.join(ALLREDUCE_CHOICES)}, got {choice!r}")
    return choice, block


@dataclass(kw_only=True, frozen=True)
class Timeline:
    """The run's clock at every sync: after step ``steps[i]`` the last worker finished computing at ``ready_s[i]``
    and the sync (with its delay and overhead) ended at ``end_s[i]`` for the last worker of it (seconds from the
    start, increasing). ``levels[i]`` is "global" or "block". The last step of a run always syncs."""

    steps: np.ndarray
    levels: tuple[str, ...]
    ready_s: np.ndarray
    end_s: np.ndarray

    def time_after(self, steps: np.ndarray | list[int]) -> np.ndarray:
        """Seconds from the start until 0-based step ``steps`` (each) has finished, with its sync if it has one.
        Inside a round of local steps the compute time is shared out evenly over the round's steps."""
        t = np.asarray(steps, dtype=np.int64)
        if t.size and (t.min() < 0 or t.max() > self.steps[-1]):
            raise SimError(f"steps must be in 0..{int(self.steps[-1])}, got {int(t.min())}..{int(t.max())}")
        i = np.searchsorted(self.steps, t)               # the first sync at or after each step
        prev_step = np.where(i > 0, self.steps[np.maximum(i - 1, 0)], -1)
        prev_end = np.where(i > 0, self.end_s[np.maximum(i - 1, 0)], 0.0)
        frac = (t - prev_step) / (self.steps[i] - prev_step)
        inside = prev_end + frac * (self.ready_s[i] - prev_end)
        return np.where(self.steps[i] == t, self.end_s[i], inside)

    def syncs_through(self, step: int) -> dict[str, int]:
        """Syncs of each level after steps 0..``step``."""
        n = int(np.searchsorted(self.steps, step, side="right"))
        glob = sum(1 for lvl in self.levels[:n] if lvl == "global")
        return {"global": glob, "block": n - glob}


@dataclass(kw_only=True)
class RunResult:
    """Per-worker means of the time split, counts and the comparison figures of one run."""

    config: RunConfig
    engine: str
    algorithms: tuple[str, str]
    wall_s: float
    compute_s: float
    comm_intra_s: float
    comm_inter_s: float
    wait_s: float
    delay_s: float
    syncs_block: int
    syncs_global: int
    bytes_intra: float
    bytes_inter: float
    comm_accounted_s: float
    sim_seconds: float
    sim_events: int
    overhead_s: float = 0.0
    #: (global, block): seconds of one sync's collective alone (the slowest rank), and of its fitted overhead
    collective_s: tuple[float, float] = (0.0, 0.0)
    overhead_per_sync_s: tuple[float, float] = (0.0, 0.0)
    timeline: Timeline | None = None  # the clock at every sync (not part of to_json: one entry per sync)

    def to_json(self) -> dict[str, Any]:
        c = self.config
        t, s = c.topology, c.schedule
        n = c.wire_bytes
        C1, C2 = t.intra.message_s(n), t.inter.message_s(n)
        e6 = eq6(K=c.K, servers=c.nodes_used, N=c.N, B=c.B, H=s.H, Hb=s.Hb, C1=C1, C2=C2)
        single = total_steps(c.N, 1, c.B) * t.compute.seconds(c.model, c.B)
        source, note = t.compute.provenance(c.model, c.B)
        return {
            "schema": SCHEMA, "topology": t.name, "nodes": c.nodes_used, "gpus_per_node": t.gpus_per_node,
            "K": c.K, "model": c.model.name, "model_bytes": c.model.bytes,
            "compression": c.compression, "wire_bytes": n, "B": c.B, "N": c.N, "epochs": c.epochs,
            "algorithm": s.algorithm, "H": s.H, "Hb": s.Hb, "switch_step": s.switch_step,
            "warmup": s.warmup, "warmup_steps": s.warmup_steps, "total_steps": c.total_steps,
            "allreduce": c.allreduce, "allreduce_global": self.algorithms[0],
            "allreduce_block": self.algorithms[1], "delay_global_s": c.delay_global_s,
            "delay_block_s": c.delay_block_s, "stragglers": c.stragglers.to_json(), "jitter": c.jitter.to_json(),
            "link_sharing": t.link_sharing, "sync_overhead_global_s": self.overhead_per_sync_s[0],
            "sync_overhead_block_s": self.overhead_per_sync_s[1],
            "sync_collective_factor_global": t.sync_collective_factor[0],
            "sync_collective_factor_block": t.sync_collective_factor[1],
            "sync_global_s": self.collective_s[0] + self.overhead_per_sync_s[0],
            "compute_source": source, "compute_note": note,
            "step_s": t.compute.seconds(c.model, c.B), "engine": self.engine,
            "wall_s": self.wall_s, "compute_s": self.compute_s, "comm_intra_s": self.comm_intra_s,
            "comm_inter_s": self.comm_inter_s, "wait_s": self.wait_s, "delay_s": self.delay_s,
            "overhead_s": self.overhead_s,
            "syncs_block": self.syncs_block, "syncs_global": self.syncs_global,
            "bytes_intra": self.bytes_intra, "bytes_inter": self.bytes_inter,
            "comm_accounted_s": self.comm_accounted_s, "eq6_s": e6, "eq6_C1_s": C1, "eq6_C2_s": C2,
            "single_worker_s": single, "speedup": single / self.wall_s if self.wall_s > 0 else None,
            "sim_seconds": self.sim_seconds, "sim_events": self.sim_events,
        }


def _collectives(cfg: RunConfig) -> tuple[tuple[str, str], CollectiveResult, CollectiveResult]:
    t, b, n = cfg.topology, cfg.topology.gpus_per_node, float(cfg.wire_bytes)
    algs = cfg.algorithms()
    gres = simulate_collective(t, tuple(range(cfg.K)), algs[0], n, "inter", cfg.leader_allreduce)
    bres = simulate_collective(t, tuple(range(b)), algs[1], n, "intra")
    return algs, gres, bres


def _overheads(cfg: RunConfig, gres: CollectiveResult, bres: CollectiveResult) -> tuple[float, float]:
    """Fitted seconds per (global, block) sync: the fixed part plus the factor times that sync's collective."""
    (og, ob), (fg, fb) = cfg.topology.sync_overhead_s, cfg.topology.sync_collective_factor
    return og + fg * gres.duration_s, ob + fb * bres.duration_s


def _factors(cfg: RunConfig, n_steps: int, K: int) -> np.ndarray:
    """Compute-time factors of the next n_steps steps: stragglers times jitter, each continuing its stream."""
    f = cfg.stragglers.block(n_steps, K) if cfg.stragglers.active else np.ones((n_steps, K))
    return f * cfg.jitter.block(n_steps, K) if cfg.jitter.active else f


#: At most this many (step, worker) factors are drawn at once: memory stays bounded at any K x steps.
FACTOR_CHUNK = 1 << 21


def _factor_sums(cfg: RunConfig, n_steps: int, K: int) -> np.ndarray:
    """Per worker, the sum of the next n_steps factors, drawn in chunks of rows (the streams are the same)."""
    rows = max(1, FACTOR_CHUNK // K)
    total = np.zeros(K)
    for a in range(0, n_steps, rows):
        total += _factors(cfg, min(rows, n_steps - a), K).sum(axis=0)
    return total


def _fast(cfg: RunConfig) -> RunResult:
    K, b, nodes = cfg.K, cfg.topology.gpus_per_node, cfg.nodes_used
    T = cfg.total_steps
    c0 = cfg.topology.compute.seconds(cfg.model, cfg.B)
    algs, gres, bres = _collectives(cfg)
    events = gres.events + bres.events
    strag, jit = cfg.stragglers, cfg.jitter
    strag.reset()
    jit.reset()
    random = strag.active or jit.active
    og, ob = _overheads(cfg, gres, bres)
    clock, comp, wait = np.zeros(K), np.zeros(K), np.zeros(K)
    intra, inter, delay = np.zeros(K), np.zeros(K), np.zeros(K)
    g_intra, g_inter = gres.finish_s - gres.inter_s, gres.inter_s
    b_intra, b_inter = np.tile(bres.finish_s - bres.inter_s, nodes), np.tile(bres.inter_s, nodes)
    b_fin = bres.finish_s[None, :]
    prev, n_g, n_b = -1, 0, 0
    tl_steps: list[int] = []
    tl_levels: list[str] = []
    tl_ready: list[float] = []
    tl_end: list[float] = []
    for step, level in cfg.schedule.events(T):
        seg = step - prev
        prev = step
        dt = c0 * _factor_sums(cfg, seg, K) if random else np.full(K, c0 * seg)
        if cfg.cpu is not None:             # work on shared cores: wall time by processor sharing
            end = cfg.cpu.finish(clock, dt)
            dt = end - clock
        clock += dt
        comp += dt
        tl_steps.append(step)
        tl_levels.append(level)
        tl_ready.append(float(clock.max()))
        if level == "global":
            n_g += 1
            start = clock.max()
            wait += start - clock
            clock = start + gres.finish_s + cfg.delay_global_s + og
            intra += g_intra
            inter += g_inter
            delay += cfg.delay_global_s
        else:
            n_b += 1
            grid = clock.reshape(nodes, b)
            start = grid.max(axis=1, keepdims=True)
            wait += (start - grid).ravel()
            clock = (start + b_fin).ravel() + cfg.delay_block_s + ob
            intra += b_intra
            inter += b_inter
            delay += cfg.delay_block_s
        tl_end.append(float(clock.max()))
    return RunResult(
        config=cfg, engine="fast", algorithms=algs, wall_s=float(clock.max()), compute_s=float(comp.mean()),
        comm_intra_s=float(intra.mean()), comm_inter_s=float(inter.mean()), wait_s=float(wait.mean()),
        delay_s=float(delay.mean()), overhead_s=n_g * og + n_b * ob, syncs_block=n_b, syncs_global=n_g,
        bytes_intra=n_g * gres.bytes_intra + n_b * nodes * bres.bytes_intra,
        bytes_inter=n_g * gres.bytes_inter + n_b * nodes * bres.bytes_inter,
        comm_accounted_s=n_g * gres.duration_s + n_b * nodes * bres.duration_s, sim_seconds=0.0,
        sim_events=events, collective_s=(gres.duration_s, bres.duration_s), overhead_per_sync_s=(og, ob),
        timeline=_timeline(tl_steps, tl_levels, tl_ready, tl_end))


def _timeline(steps: list[int], levels: list[str], ready: list[float], end: list[float]) -> Timeline:
    return Timeline(steps=np.asarray(steps, dtype=np.int64), levels=tuple(levels),
                    ready_s=np.asarray(ready, dtype=np.float64), end_s=np.asarray(end, dtype=np.float64))


def _event(cfg: RunConfig) -> RunResult:
    if cfg.cpu is not None:
        raise SimError("engine 'event' does not model ranks that share a machine's cores (cpu); use engine 'fast'")
    t = cfg.topology
    K, b, _nodes = cfg.K, t.gpus_per_node, cfg.nodes_used
    T = cfg.total_steps
    n = float(cfg.wire_bytes)
    c0 = t.compute.seconds(cfg.model, cfg.B)
    algs = cfg.algorithms()
    cfg.stragglers.reset()
    cfg.jitter.reset()
    factors = _factors(cfg, T, K) if cfg.stragglers.active or cfg.jitter.active else None
    _, gres, bres = _collectives(cfg)  # memoised: only the fitted overhead's factor needs their durations
    over = dict(zip(("global", "block"), _overheads(cfg, gres, bres)))
    env = CountingEnvironment()
    net = Network(env, t)
    acc = {k: np.zeros(K) for k in ("compute", "wait", "intra", "inter", "delay", "overhead", "finish")}
    barriers: dict[tuple[int, int], dict[str, Any]] = {}
    totals = {"block": 0, "global": 0, "bytes_intra": 0.0, "bytes_inter": 0.0, "accounted": 0.0}
    marks: dict[int, list[Any]] = {}  # sync number -> [step, level, last arrival, last end] over all workers

    def worker(k: int) -> Generator[simpy.Event, Any, None]:
        node, n_sync = k // b, 0
        for step in range(T):
            dt = c0 * (factors[step, k] if factors is not None else 1.0)
            if dt > 0:
                yield env.timeout(dt)
            acc["compute"][k] += dt
            level = cfg.schedule.sync_after(step, T)
            if level is None:
                continue
            n_sync += 1
            gid = -1 if level == "global" else node
            ranks = tuple(range(K)) if level == "global" else tuple(range(node * b, node * b + b))
            bar = barriers.setdefault((n_sync, gid), {"n": 0, "ev": env.event(), "max_fin": 0.0})
            arrive = env.now
            mark = marks.setdefault(n_sync, [step, level, 0.0, 0.0])
            mark[2] = max(mark[2], arrive)
            bar["n"] += 1
            if bar["n"] == len(ranks):
                paper = t.inter if level == "global" else t.intra  # eq. (6): global syncs cost C2
                procs, rec = start_collective(env, net, ranks, algs[0] if level == "global" else algs[1], n, paper,
                                              cfg.leader_allreduce)
                bar.update(procs=procs, rec=rec, start=env.now)
                totals[level] += 1 if level == "global" or node == 0 else 0  # count sync events, not groups
                bar["ev"].succeed()
            yield bar["ev"]
            start, rec = bar["start"], bar["rec"]
            acc["wait"][k] += start - arrive
            yield bar["procs"][ranks.index(k)]
            fin = env.now - start
            inter_k = float(interval_measure(rec.inter_intervals, start, np.array([env.now]))[0])
            acc["intra"][k] += fin - inter_k
            acc["inter"][k] += inter_k
            bar["n"] -= 1
            bar["max_fin"] = max(bar["max_fin"], fin)
            if bar["n"] == 0:  # last one out books the collective's bytes and its accounted duration
                totals["bytes_intra"] += rec.bytes["intra"]
                totals["bytes_inter"] += rec.bytes["inter"]
                totals["accounted"] += bar["max_fin"]
                del barriers[(n_sync, gid)]
            d = cfg.delay_global_s if level == "global" else cfg.delay_block_s
            if d + over[level] > 0:
                yield env.timeout(d + over[level])
            acc["delay"][k] += d
            acc["overhead"][k] += over[level]
            mark[3] = max(mark[3], env.now)
        acc["finish"][k] = env.now

    for k in range(K):
        env.process(worker(k))
    env.run()
    return RunResult(
        config=cfg, engine="event", algorithms=algs, wall_s=float(acc["finish"].max()),
        compute_s=float(acc["compute"].mean()), comm_intra_s=float(acc["intra"].mean()),
        comm_inter_s=float(acc["inter"].mean()), wait_s=float(acc["wait"].mean()),
        delay_s=float(acc["delay"].mean()), overhead_s=float(acc["overhead"].mean()),
        syncs_block=int(totals["block"]), syncs_global=int(totals["global"]),
        bytes_intra=totals["bytes_intra"], bytes_inter=totals["bytes_inter"],
        comm_accounted_s=totals["accounted"], sim_seconds=0.0, sim_events=env.n_events,
        collective_s=(gres.duration_s, bres.duration_s), overhead_per_sync_s=(over["global"], over["block"]),
        timeline=_timeline(*(list(col) for col in zip(*(marks[i] for i in sorted(marks))))))


def simulate(cfg: RunConfig, engine: str = "fast") -> RunResult:
    """Run the configuration on the chosen engine; sim_seconds records this call's own wall time."""
    if engine not in ENGINES:
        raise SimError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    t0 = time.perf_counter()
    res = _fast(cfg) if engine == "fast" else _event(cfg)
    res.sim_seconds = time.perf_counter() - t0
    log.info("%s engine: %d steps x %d workers in %.3f s", engine, cfg.total_steps, cfg.K, res.sim_seconds)
    return res
