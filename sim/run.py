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
import time
from collections.abc import Generator
from typing import Any

import numpy as np
import simpy

from sim.engine import (
    CollectiveResult,
    CountingEnvironment,
    Network,
    interval_measure,
    simulate_collective,
    start_collective,
)
from sim.errors import SimError
from sim.overlap import bucketed_step, expose
from sim.runconfig import ALLREDUCE_CHOICES, COMPRESSIONS, RunConfig, RunResult, Timeline, resolve_allreduce

__all__ = ["ALLREDUCE_CHOICES", "COMPRESSIONS", "ENGINES", "RunConfig", "RunResult", "Timeline", "simulate",
           "resolve_allreduce"]

log = logging.getLogger(__name__)

ENGINES = ("fast", "event")


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
    intra, inter, delay, hidden = np.zeros(K), np.zeros(K), np.zeros(K), np.zeros(K)
    g_intra, g_inter = gres.finish_s - gres.inter_s, gres.inter_s
    b_intra, b_inter = np.tile(bres.finish_s - bres.inter_s, nodes), np.tile(bres.inter_s, nodes)
    b_fin = bres.finish_s[None, :]
    prev, n_g, n_b = -1, 0, 0
    # every bucket runs the whole gradient's algorithm, as train/buckets.py does
    bucket_res = [simulate_collective(cfg.topology, tuple(range(K)), algs[0], nb, "inter", cfg.leader_allreduce)
                  for nb, _ in cfg.buckets]
    events += sum(r.events for r in bucket_res)
    book = (intra, inter, delay, hidden)  # what expose() books a hidden sync's waited part to
    # overlapped sync in flight: (due step, per-rank completion time, its intra and inter seconds, its delay)
    pending: tuple[int, np.ndarray, np.ndarray, np.ndarray, float] | None = None
    tl_steps: list[int] = []
    tl_levels: list[str] = []
    tl_ready: list[float] = []
    tl_end: list[float] = []

    def compute(nsteps: int) -> np.ndarray:
        """Advance every rank by `nsteps` steps; returns the wall time of the last of them per rank."""
        nonlocal clock
        if nsteps <= 0:
            return np.zeros(K)
        last = np.full(K, c0)
        if not random:
            work = np.full(K, c0 * nsteps)
        elif cfg.buckets:  # the last step's own factor times a bucketed step's backward
            last = c0 * _factors(cfg, 1, K)[0]
            work = c0 * _factor_sums(cfg, nsteps - 1, K) + last
        else:
            work = c0 * _factor_sums(cfg, nsteps, K)
        dt = work
        if cfg.cpu is not None and cfg.overlap_steps:  # no barrier keeps the ranks in step: all K compute at once
            dt = work / cfg.cpu.rate(K)
        elif cfg.cpu is not None:           # work on shared cores: wall time by processor sharing
            dt = cfg.cpu.finish(clock, work) - clock
        clock = clock + dt
        comp[:] += dt
        return np.divide(dt * last, work, out=np.zeros(K), where=work > 0)  # c0 = 0: paper mode, no compute

    def apply() -> None:
        """Each rank waits for what is left of the pending overlapped sync."""
        nonlocal pending, clock
        assert pending is not None
        _, done, p_intra, p_inter, d = pending
        expose(np.clip(done - clock, 0.0, None), p_intra, p_inter, d, book)
        clock = np.maximum(clock, done)
        pending = None

    grad_until = T if cfg.schedule.algorithm == "minibatch" else cfg.schedule.local_start
    for step, level in cfg.schedule.events(T):
        if pending is not None and pending[0] < step:
            compute(pending[0] - prev)
            prev = pending[0]
            apply()
        last = compute(step - prev)
        prev = step
        if pending is not None:
            apply()
        tl_steps.append(step)
        tl_levels.append(level)
        tl_ready.append(float(clock.max()))
        final = step == T - 1
        if cfg.buckets and step < grad_until:       # gradient buckets all-reduced during backward
            n_g += 1
            clock = bucketed_step(clock, last, cfg.buckets, bucket_res, cfg.delay_global_s, book) + og
        elif cfg.overlap_steps and not final:         # overlapped: the ranks go on computing
            if level == "global":
                n_g += 1
                start = float(clock.max())
                pending = (step + cfg.overlap_steps, start + gres.finish_s + cfg.delay_global_s + og, g_intra,
                           g_inter, cfg.delay_global_s)
            else:
                n_b += 1
                grid = clock.reshape(nodes, b)
                start_b = grid.max(axis=1, keepdims=True)
                pending = (step + cfg.overlap_steps, (start_b + b_fin).ravel() + cfg.delay_block_s + ob, b_intra,
                           b_inter, cfg.delay_block_s)
        elif level == "global":
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
        tl_end.append(float(clock.max()))  # an overlapped sync: the ranks went on, its end is its start
    nb = min(T, grad_until) if cfg.buckets else 0  # bucketed syncs
    return RunResult(
        config=cfg, engine="fast", algorithms=algs, wall_s=float(clock.max()), compute_s=float(comp.mean()),
        comm_intra_s=float(intra.mean()), comm_inter_s=float(inter.mean()), wait_s=float(wait.mean()),
        delay_s=float(delay.mean()), overhead_s=n_g * og + n_b * ob, syncs_block=n_b, syncs_global=n_g,
        bytes_intra=(n_g - nb) * gres.bytes_intra + n_b * nodes * bres.bytes_intra
        + nb * sum(r.bytes_intra for r in bucket_res),
        bytes_inter=(n_g - nb) * gres.bytes_inter + n_b * nodes * bres.bytes_inter
        + nb * sum(r.bytes_inter for r in bucket_res),
        comm_accounted_s=(n_g - nb) * gres.duration_s + n_b * nodes * bres.duration_s
        + nb * sum(r.duration_s for r in bucket_res), sim_seconds=0.0,
        sim_events=events, hidden_s=float(hidden.mean()), collective_s=(gres.duration_s, bres.duration_s),
        overhead_per_sync_s=(og, ob), timeline=_timeline(tl_steps, tl_levels, tl_ready, tl_end))


def _timeline(steps: list[int], levels: list[str], ready: list[float], end: list[float]) -> Timeline:
    return Timeline(steps=np.asarray(steps, dtype=np.int64), levels=tuple(levels),
                    ready_s=np.asarray(ready, dtype=np.float64), end_s=np.asarray(end, dtype=np.float64))


def _event(cfg: RunConfig) -> RunResult:
    if cfg.cpu is not None:
        raise SimError("engine 'event' does not model ranks that share a machine's cores (cpu); use engine 'fast'")
    if cfg.buckets or cfg.overlap_steps:
        raise SimError("engine 'event' does not model gradient buckets or overlapped syncs; use engine 'fast'")
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
