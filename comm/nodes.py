"""The real node layout of a communicator (cached), and the two-level all-reduces that use it (rail, leader)."""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from mpi4py import MPI

from .algorithms import ALGORITHM_FUNCS, chunk_bounds

__all__ = ["NodeLayout", "node_layout", "rail_allreduce", "rail_shard", "leader_allreduce", "rail_inter_algorithm",
           "MULTINODE_THRESHOLDS", "multinode_choice", "MPI_OPS"]

# Our op names as MPI ops ("mean" sums; the caller divides): shared by every module of comm that calls MPI itself.
MPI_OPS = {"sum": MPI.SUM, "mean": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}
_KEYVAL: int | None = None
_KEYVAL_LOCK = threading.Lock()  # comm.nonblocking's helper thread may ask at the same moment (comm.allreduce)


@dataclass(kw_only=True, eq=False)
class NodeLayout:
    """How the ranks of a communicator sit on shared-memory nodes.

    node: this rank's node (ranks sharing memory with it); rail: the ranks with the same node rank on every node
    (None unless every node holds the same number of ranks).
    """

    node: Any
    rail: Any | None
    leaders: Any | None               # the node leaders (node rank 0); None on the other ranks
    n_nodes: int
    ranks_per_node: tuple[int, ...]   # per node, in node order

    @property
    def shared_nics(self) -> bool:
        """Several nodes, and more than one rank on some node: ranks of a node share its network link."""
        return self.n_nodes > 1 and max(self.ranks_per_node) > 1

    @property
    def uniform(self) -> bool:
        return len(set(self.ranks_per_node)) == 1


def _free(comm: Any, keyval: int, attr: Any) -> None:
    if attr is not None and not MPI.Is_finalized():
        for c in (attr.node, attr.rail, attr.leaders):
            if c is not None and c != MPI.COMM_NULL:
                c.Free()


def node_layout(private: Any) -> NodeLayout:
    """The node layout of `private` (the library's private communicator), found once (collectively) and cached
    on it: every rank must call this at the same point, which the all-reduce entry points guarantee."""
    global _KEYVAL
    with _KEYVAL_LOCK:
        if _KEYVAL is None:
            _KEYVAL = MPI.Comm.Create_keyval(delete_fn=_free)
    layout: NodeLayout | None = private.Get_attr(_KEYVAL)
    if layout is None:
        rank = private.Get_rank()
        node = private.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
        leaders = private.allgather(rank if node.Get_rank() == 0 else -1)
        leader_of = node.bcast(rank if node.Get_rank() == 0 else None, root=0)
        node_ids = sorted(r for r in leaders if r >= 0)
        sizes = private.allgather((leader_of, node.Get_size()))
        per_node = tuple(dict(sizes)[leader] for leader in node_ids)
        uniform = len(set(per_node)) == 1
        rail = private.Split(color=node.Get_rank(), key=rank) if uniform else None
        leaders = private.Split(color=0 if node.Get_rank() == 0 else MPI.UNDEFINED, key=rank)
        layout = NodeLayout(node=node, rail=rail, leaders=None if leaders == MPI.COMM_NULL else leaders,
                            n_nodes=len(node_ids), ranks_per_node=per_node)
        private.Set_attr(_KEYVAL, layout)
    return layout


def rail_shard(work: Any, layout: NodeLayout) -> tuple[Any, Any, list[int], Any]:
    """The rail all-reduce's pieces (blocking here, comm/schedules.py's request): the node and rail communicators,
    the element counts of the node ranks' shards and this rank's shard buffer (scratch)."""
    node, rail = layout.node, layout.rail
    assert rail is not None, "the rail all-reduce needs the same number of ranks on every node"
    q, r = node.Get_size(), node.Get_rank()
    bounds = chunk_bounds(work.count, q)
    counts = [bounds[i + 1] - bounds[i] for i in range(q)]
    return node, rail, counts, work.ops.scratch("rail", work.array, counts[r])


def rail_allreduce(work: Any, layout: NodeLayout, op: str, inter: str) -> None:
    """Two-level all-reduce for ranks that share their node's link (NCCL's shape, with MPI inside the node):

    1. reduce-scatter inside the node: node rank r ends with the node's sum of shard r (shared memory);
    2. all-reduce of shard r among the ranks with node rank r on every node (the "rail"), with `inter`
       (rail_inter_algorithm);
    3. all-gather of the shards inside the node.
    Every rank's NIC share carries 2 (n-1)/n of 1/q of the vector, so the node's link carries 2 (n-1)/n of it, as
    with one leader, but the q ranks of a node work in parallel and no rank waits for a leader's reduction.
    Steps 1 and 3 leave the link idle; comm.pipeline.pipelined_rail_allreduce overlaps them with step 2 of other
    segments (comm.allreduce takes it for large messages).
    """
    node, rail, counts, shard = rail_shard(work, layout)
    q, r = node.Get_size(), node.Get_rank()
    work.ops.sync()
    if q > 1:
        node.Reduce_scatter(work.array, shard, counts, op=MPI_OPS[op])
    else:
        shard[:] = work.array
    if rail.Get_size() > 1 and counts[r] > 0:
        ALGORITHM_FUNCS[inter](rail, shard, work.ops, "sum" if op == "mean" else op)
    work.ops.sync()
    if q > 1:
        node.Allgatherv(shard, [work.array, counts])
    else:
        work.array[:] = shard


def leader_allreduce(work: Any, layout: NodeLayout, op: str, inter: str) -> None:
    """The classic hierarchical all-reduce on the real nodes: reduce to the node leader (shared memory), all-reduce
    among the leaders with `inter`, broadcast inside the node (comm.hierarchical_allreduce's shape)."""
    node = layout.node
    mpi_op = MPI_OPS[op]
    work.ops.sync()
    if node.Get_size() > 1:
        if node.Get_rank() == 0:
            node.Reduce(MPI.IN_PLACE, work.array, op=mpi_op, root=0)
        else:
            node.Reduce(work.array, None, op=mpi_op, root=0)
    if layout.leaders is not None and layout.leaders.Get_size() > 1:
        ALGORITHM_FUNCS[inter](layout.leaders, work.array, work.ops, "sum" if op == "mean" else op)
    work.ops.sync()
    if node.Get_size() > 1:
        node.Bcast(work.array, root=0)


def rail_inter_algorithm(layout: NodeLayout) -> str:
    """The all-reduce along each rail: the ring (2 (n-1) steps of 1/n of the shard, no fold). Measured across 4
    emulated nodes x 2 ranks at 100 Mbit/s (benchmarks/cluster_auto_vs_native.py --ours rail with
    LOCALSGD_RAIL_ALGORITHM=ring|rabenseifner), the ring was 1.01x native at 64 MiB and 0.97x at 16 MiB, and
    Rabenseifner 1.21x and 1.16x: its first halving step sends half the shard at once through the shared NIC.
    LOCALSGD_RAIL_ALGORITHM overrides."""
    forced = os.environ.get("LOCALSGD_RAIL_ALGORITHM", "")
    if forced:
        if forced not in ALGORITHM_FUNCS:
            from .errors import CommError

            raise CommError(f"LOCALSGD_RAIL_ALGORITHM must be one of {', '.join(ALGORITHM_FUNCS)}; got {forced!r}")
        return forced
    return "ring"


def _bytes_from_env(name: str, default: int) -> int:
    text = os.environ.get(name, "")
    if not text:
        return default
    if not text.isdigit():
        from .errors import CommError

        raise CommError(f"{name} must be a byte count (digits only); got {text!r}")
    return int(text)


# Under "auto", on a communicator spanning several nodes with more than one rank on some node (ranks share a
# NIC): messages up to RING_MAX go to the ring in node order, longer ones to the rail all-reduce. Measured
# across emulated nodes (4 x 2 at 100-500 Mbit/s, benchmarks/cluster_auto_vs_native.py; see the README).
# Overridable per machine with LOCALSGD_AUTO_MULTINODE_RING_MAX_BYTES.
MULTINODE_THRESHOLDS = {"ring_max": _bytes_from_env("LOCALSGD_AUTO_MULTINODE_RING_MAX_BYTES", 256 * 1024)}


def multinode_choice(nbytes: int, layout: NodeLayout) -> str:
    """The algorithm "auto" picks for `nbytes` on a communicator whose nodes share links."""
    if not layout.uniform:
        return "ring"
    return "ring" if nbytes <= MULTINODE_THRESHOLDS["ring_max"] else "rail"
