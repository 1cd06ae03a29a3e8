"""The rail all-reduce, pipelined: the intra-node steps of one segment overlap the inter-node ring of another.

The unpipelined rail (comm.nodes.rail_allreduce) runs its reduce-scatter and all-gather inside the node while the
node's link is idle. Here the vector is cut into a few segments; segment s+1's reduce-scatter and segment s-1's
all-gather are posted as MPI nonblocking collectives on the node communicator before the blocking ring of segment s
runs along the rail, so MPICH's progress engine (which the ring's Sendrecv drives) advances all of them at once.
"""
from __future__ import annotations

import os
from typing import Any

from mpi4py import MPI

from .algorithms import ALGORITHM_FUNCS, chunk_bounds
from .nodes import MPI_OPS, NodeLayout, _bytes_from_env, rail_allreduce

__all__ = ["RAIL_PIPELINE", "rail_segments", "segment_plan", "pipelined_rail_allreduce"]


def _segments_from_env(name: str, default: int) -> int:
    text = os.environ.get(name, "")
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        from .errors import CommError

        raise CommError(f"{name} must be a segment count >= 1 (1: no pipelining); got {text!r}")
    return int(text)


# The rail all-reduce of a message of at least min_bytes is cut into `segments` segments (1: never pipelined).
# Measured across 4 emulated nodes x 2 ranks at 500 Mbit/s, one run (benchmarks/cluster_auto_vs_native.py --ours
# rail@LOCALSGD_RAIL_PIPELINE_SEGMENTS=S; docs/README-cluster.md), ours/native at 4, 16, 64 MiB: S = 1 (unpipelined)
# 1.043, 0.904, 0.912; S = 2 0.906, 0.833, 0.872; S = 4 0.964, 0.803, 0.842; S = 8 0.927, 1.063, 0.783 (a cell
# or two taken while another job's 16 ranks started beside it). Four segments from 4 MiB on. Overridable per
# machine with LOCALSGD_RAIL_PIPELINE_SEGMENTS (1: off) and LOCALSGD_RAIL_PIPELINE_MIN_BYTES.
RAIL_PIPELINE = {"segments": _segments_from_env("LOCALSGD_RAIL_PIPELINE_SEGMENTS", 4),
                 "min_bytes": _bytes_from_env("LOCALSGD_RAIL_PIPELINE_MIN_BYTES", 4 * 1024 * 1024)}


def rail_segments(nbytes: int) -> int:
    """How many segments the rail all-reduce of `nbytes` is cut into (1: today's unpipelined path)."""
    return RAIL_PIPELINE["segments"] if nbytes >= RAIL_PIPELINE["min_bytes"] else 1


def segment_plan(count: int, segments: int, q: int) -> list[tuple[int, list[int]]]:
    """The segments of a `count`-element vector: (first element, per node rank shard sizes) for each non-empty one.

    The vector is cut into `segments` nearly equal parts (chunk_bounds), and each part into q shards, node rank r
    reducing shard r of every segment along its rail. Empty segments (count < segments) are left out; shards may
    be empty (a segment shorter than q). Every rank computes the same plan from the same count.
    """
    bounds = chunk_bounds(count, segments)
    plan = []
    for s in range(segments):
        n = bounds[s + 1] - bounds[s]
        if n > 0:
            shard = chunk_bounds(n, q)
            plan.append((bounds[s], [shard[i + 1] - shard[i] for i in range(q)]))
    return plan


def pipelined_rail_allreduce(work: Any, layout: NodeLayout, op: str, inter: str, segments: int) -> None:
    """comm.nodes.rail_allreduce in `segments` pipelined segments; the same result on every rank.

    Schedule (RS: the node's reduce-scatter of a segment, AG: its all-gather, ring: the rail's all-reduce of this
    rank's shard): RS(0) and wait; then for each segment s: post RS(s+1), run ring(s), post AG(s), wait for
    RS(s+1); finally wait for every AG. Each segment has its own part of the shard buffer, so a posted collective
    never shares memory with the ring that runs beside it. With one rank per node, one node or one segment there
    is nothing to overlap, and the unpipelined rail runs.
    """
    node, rail = layout.node, layout.rail
    assert rail is not None, "rail_allreduce needs the same number of ranks on every node"
    q, r = node.Get_size(), node.Get_rank()
    plan = segment_plan(work.count, segments, q)
    if q == 1 or rail.Get_size() == 1 or len(plan) < 2:
        rail_allreduce(work, layout, op, inter)
        return
    mpi_op, ring_op = MPI_OPS[op], "sum" if op == "mean" else op
    offsets = [0]  # where each segment's shard of this rank sits in the shard buffer
    for _, counts in plan:
        offsets.append(offsets[-1] + counts[r])
    shards = work.ops.scratch("rail", work.array, offsets[-1])
    arr = work.array

    def seg(s: int) -> tuple[Any, Any, list[int]]:
        start, counts = plan[s]
        return arr[start:start + sum(counts)], shards[offsets[s]:offsets[s + 1]], counts

    def reduce_scatter(s: int) -> Any:
        data, shard, counts = seg(s)
        return node.Ireduce_scatter(data, shard, counts, op=mpi_op)

    work.ops.sync()
    pending = reduce_scatter(0)
    gathers = []
    for s in range(len(plan)):
        pending.Wait()
        pending = reduce_scatter(s + 1) if s + 1 < len(plan) else MPI.REQUEST_NULL
        data, shard, counts = seg(s)
        if counts[r] > 0:  # the same on every rank of this rail: they share r and the plan
            ALGORITHM_FUNCS[inter](rail, shard, work.ops, ring_op)
        gathers.append(node.Iallgatherv(shard, [data, counts]))
    MPI.Request.Waitall(gathers)
