"""Our all-reduce algorithms as resumable schedules: generators that yield the MPI requests each step waits for.

The same algorithms as comm.algorithms (recursive doubling, Rabenseifner with the fold, ring), comm.nodes (rail,
leader) and comm.topology (hierarchical over a Topology), step for step and with the same reductions in the same
order, so a request ends bitwise equal to the blocking call with the same algorithm (tested). Each step posts
nonblocking sends and receives (or a nonblocking collective inside the node) and yields them; whoever drives the
schedule decides how to wait: a helper thread that tests and naps between tests (comm.nonblocking's "thread"
progress), or the caller's own test() calls ("poll"). Differences from the blocking forms: the rail is never
pipelined (its blocking form is, from 4 MiB on), and native is MPI_Iallreduce rather than MPI_Allreduce.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import Any

from mpi4py import MPI

from .algorithms import _TAG, _pof2_below, chunk_bounds
from .nodes import MPI_OPS, NodeLayout, node_layout, rail_inter_algorithm, rail_shard

__all__ = ["Schedule", "SCHEDULES", "schedule_on", "hierarchical_schedule", "run_napping", "advance"]

#: A schedule: yields lists of MPI requests; it continues once all of them are complete.
Schedule = Generator[list[Any], None, None]
_Fold = Generator[list[Any], None, tuple[int, int, Callable[[int], int]]]


def _exchange(comm: Any, send: Any, recv: Any, partner: int) -> list[Any]:
    """Sendrecv as two nonblocking calls (the receive first, as MPICH's Sendrecv posts it)."""
    return [comm.Irecv(recv, source=partner, tag=_TAG), comm.Isend(send, dest=partner, tag=_TAG)]


def _fold(comm: Any, arr: Any, ops: Any, op: str) -> _Fold:
    p, rank = comm.Get_size(), comm.Get_rank()
    pof2 = _pof2_below(p)
    r = p - pof2
    if rank < 2 * r:
        if rank % 2 == 0:
            ops.sync()
            yield [comm.Isend(arr, dest=rank + 1, tag=_TAG)]
            newrank = -1
        else:
            recv = ops.scratch("fold", arr, len(arr))
            yield [comm.Irecv(recv, source=rank - 1, tag=_TAG)]
            ops.reduce(arr, recv, op)
            newrank = rank // 2
    else:
        newrank = rank - r

    def real(nr: int) -> int:
        return nr * 2 + 1 if nr < r else nr + r

    return newrank, pof2, real


def _unfold(comm: Any, arr: Any, ops: Any) -> Schedule:
    p, rank = comm.Get_size(), comm.Get_rank()
    r = p - _pof2_below(p)
    if rank < 2 * r:
        if rank % 2 == 0:
            yield [comm.Irecv(arr, source=rank + 1, tag=_TAG)]
        else:
            ops.sync()
            yield [comm.Isend(arr, dest=rank - 1, tag=_TAG)]


def recursive_doubling(comm: Any, arr: Any, ops: Any, op: str) -> Schedule:
    newrank, pof2, real = yield from _fold(comm, arr, ops, op)
    if newrank >= 0 and pof2 > 1:
        recv = ops.scratch("recv", arr, len(arr))
        mask = 1
        while mask < pof2:
            partner = real(newrank ^ mask)
            ops.sync()
            yield _exchange(comm, arr, recv, partner)
            ops.reduce(arr, recv, op)
            mask <<= 1
    ops.sync()
    yield from _unfold(comm, arr, ops)


def rabenseifner(comm: Any, arr: Any, ops: Any, op: str) -> Schedule:
    newrank, pof2, real = yield from _fold(comm, arr, ops, op)
    if newrank >= 0 and pof2 > 1:
        bounds = chunk_bounds(len(arr), pof2)
        recv = ops.scratch("recv", arr, bounds[pof2 // 2])
        lo, hi = 0, pof2
        mask = pof2 >> 1
        while mask >= 1:
            partner = real(newrank ^ mask)
            mid = lo + (hi - lo) // 2
            keep, send = ((mid, hi), (lo, mid)) if newrank & mask else ((lo, mid), (mid, hi))
            k0, k1 = bounds[keep[0]], bounds[keep[1]]
            s0, s1 = bounds[send[0]], bounds[send[1]]
            ops.sync()
            yield _exchange(comm, arr[s0:s1], recv[: k1 - k0], partner)
            ops.reduce(arr[k0:k1], recv[: k1 - k0], op)
            lo, hi = keep
            mask >>= 1
        ops.sync()
        mask = 1
        while mask < pof2:
            partner_new = newrank ^ mask
            mine = newrank & ~(mask - 1)
            theirs = partner_new & ~(mask - 1)
            m0, m1 = bounds[mine], bounds[mine + mask]
            t0, t1 = bounds[theirs], bounds[theirs + mask]
            yield _exchange(comm, arr[m0:m1], arr[t0:t1], real(partner_new))
            mask <<= 1
    ops.sync()
    yield from _unfold(comm, arr, ops)


def ring(comm: Any, arr: Any, ops: Any, op: str) -> Schedule:
    p, rank = comm.Get_size(), comm.Get_rank()
    if p == 1:
        return
    bounds = chunk_bounds(len(arr), p)
    recv = ops.scratch("recv", arr, bounds[1] - bounds[0])
    right, left = (rank + 1) % p, (rank - 1) % p
    for step in range(p - 1):
        s = (rank - step) % p
        g = (rank - step - 1) % p
        n_g = bounds[g + 1] - bounds[g]
        ops.sync()
        yield [comm.Irecv(recv[:n_g], source=left, tag=_TAG),
               comm.Isend(arr[bounds[s]:bounds[s + 1]], dest=right, tag=_TAG)]
        ops.reduce(arr[bounds[g]:bounds[g + 1]], recv[:n_g], op)
    ops.sync()
    for step in range(p - 1):
        s = (rank + 1 - step) % p
        g = (rank - step) % p
        yield [comm.Irecv(arr[bounds[g]:bounds[g + 1]], source=left, tag=_TAG),
               comm.Isend(arr[bounds[s]:bounds[s + 1]], dest=right, tag=_TAG)]


SCHEDULES: dict[str, Callable[[Any, Any, Any, str], Schedule]] = {
    "recursive_doubling": recursive_doubling, "rabenseifner": rabenseifner, "ring": ring}


def _rail(work: Any, layout: NodeLayout, op: str, inter: str) -> Schedule:
    node, rail, counts, shard = rail_shard(work, layout)
    q, r = node.Get_size(), node.Get_rank()
    work.ops.sync()
    if q > 1:
        yield [node.Ireduce_scatter(work.array, shard, counts, op=MPI_OPS[op])]
    else:
        shard[:] = work.array
    if rail.Get_size() > 1 and counts[r] > 0:
        yield from SCHEDULES[inter](rail, shard, work.ops, "sum" if op == "mean" else op)
    work.ops.sync()
    if q > 1:
        yield [node.Iallgatherv(shard, [work.array, counts])]
    else:
        work.array[:] = shard


def _leader(work: Any, node: Any, leaders: Any, is_leader: bool, op: str, inter: str) -> Schedule:
    """Reduce to the node leader, `inter` among the leaders (None: this rank is no leader), broadcast in the node."""
    mpi_op = MPI_OPS[op]
    work.ops.sync()
    if node.Get_size() > 1:
        yield [node.Ireduce(MPI.IN_PLACE if is_leader else work.array, work.array if is_leader else None,
                            op=mpi_op, root=0)]
    if leaders is not None and leaders.Get_size() > 1:
        yield from SCHEDULES[inter](leaders, work.array, work.ops, "sum" if op == "mean" else op)
    work.ops.sync()
    if node.Get_size() > 1:
        yield [node.Ibcast(work.array, root=0)]


def schedule_on(work: Any, op: str, algorithm: str, private: Any) -> Schedule:
    """comm.allreduce.reduce_on as a schedule (the mean's division included)."""
    from .allreduce import _itemsize, auto_algorithm

    p = private.Get_size()
    if p > 1 and work.count > 0:
        nbytes = work.count * _itemsize(work.dtype)
        if algorithm == "auto":
            algorithm = auto_algorithm(nbytes, node_layout(private))
        if algorithm == "rail":
            layout = node_layout(private)
            if not layout.uniform:
                from .errors import CommError
                raise CommError(f"algorithm 'rail' needs the same number of ranks on every node; this communicator "
                                f"has {list(layout.ranks_per_node)} (use 'ring' or 'auto')")
            yield from _rail(work, layout, op, rail_inter_algorithm(layout))
        elif algorithm == "hierarchical":
            layout = node_layout(private)
            yield from _leader(work, layout.node, layout.leaders, layout.leaders is not None, op,
                               auto_algorithm(nbytes))
        elif algorithm == "native":
            work.ops.sync()
            yield [private.Iallreduce(MPI.IN_PLACE, work.array, op=MPI_OPS[op])]
        else:
            yield from SCHEDULES[algorithm](private, work.array, work.ops, op)
    if op == "mean":
        work.ops.divide(work.array, p)


def hierarchical_schedule(work: Any, topology: Any, node: Any, leader: Any, op: str, algorithm: str) -> Schedule:
    """comm.topology.hierarchical_on as a schedule: `node` and `leader` are the caller's own communicators."""
    if work.count > 0 and topology.world.Get_size() > 1:
        mpi_op = MPI_OPS[op]
        work.ops.sync()
        if node.Get_size() > 1:
            yield [node.Ireduce(MPI.IN_PLACE if topology.is_leader else work.array,
                                work.array if topology.is_leader else None, op=mpi_op, root=0)]
        if topology.is_leader:
            yield from schedule_on(work, "sum" if op == "mean" else op, algorithm, leader)
            if op == "mean":
                work.ops.divide(work.array, topology.world.Get_size())
        work.ops.sync()
        if node.Get_size() > 1:
            yield [node.Ibcast(work.array, root=0)]
    elif op == "mean":
        work.ops.divide(work.array, topology.world.Get_size())


def advance(schedule: Schedule, pending: list[Any]) -> list[Any] | None:
    """Test `pending`; while it is complete, run the schedule to its next step. Returns what is pending now, or
    None when the schedule has finished."""
    while MPI.Request.Testall(pending):
        try:
            pending = next(schedule)
        except StopIteration:
            return None
    return pending


def run_napping(schedule: Schedule, nap_max_s: float) -> None:
    """Drive a schedule to its end from a helper thread: test the step's requests and, while they are not complete,
    sleep (doubling from 20 us up to nap_max_s) instead of spinning in MPI, so the thread leaves the cores to the
    caller's computation; 0 spins in MPI_Waitall instead."""
    for pending in schedule:
        if nap_max_s <= 0:
            MPI.Request.Waitall(pending)
            continue
        nap = 2e-5
        while not MPI.Request.Testall(pending):
            time.sleep(nap)
            nap = min(2 * nap, nap_max_s)
