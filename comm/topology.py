"""Two-level topology (nodes of GPUs) and the hierarchical and block all-reduces built on it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mpi4py import MPI

from .allreduce import check_args, check_work, private_comm, reduce_on, resolve_comm
from .buffers import adapt
from .errors import CommError
from .nodes import MPI_OPS

__all__ = ["Topology", "hierarchical_allreduce", "block_allreduce", "hierarchical_on"]



@dataclass(kw_only=True, eq=False)
class Topology:
    """Ranks grouped into nodes: real nodes (shared memory) or virtual blocks of consecutive ranks.

    node_comm spans the ranks of this rank's node; leader_comm spans the node leaders (node_rank 0) and is None on
    the other ranks.
    """

    world: Any
    node_comm: Any
    leader_comm: Any | None
    node_id: int
    node_rank: int
    n_nodes: int
    gpus_per_node: int
    is_leader: bool
    virtual: bool

    @classmethod
    def from_comm(cls, world: Any = None, gpus_per_node: int | None = None) -> Topology:
        """Split `world` (default COMM_WORLD) into nodes: blocks of `gpus_per_node` consecutive ranks when given
        (one machine emulating a cluster), else the real shared-memory nodes. Collective over `world`."""
        world = resolve_comm(world)
        size, rank = world.Get_size(), world.Get_rank()
        if gpus_per_node is not None:
            if isinstance(gpus_per_node, bool) or not isinstance(gpus_per_node, int) or gpus_per_node < 1:
                raise CommError(f"gpus_per_node must be an integer >= 1; got {gpus_per_node!r}")
            if size % gpus_per_node:
                raise CommError(f"world size {size} is not divisible by gpus_per_node {gpus_per_node}; "
                                f"use a divisor of {size} or launch a multiple of {gpus_per_node} ranks")
            node_id = rank // gpus_per_node
            node_comm = world.Split(color=node_id, key=rank)
            virtual = True
        else:
            node_comm = world.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
            virtual = False
        node_rank = node_comm.Get_rank()
        is_leader = node_rank == 0
        leader = world.Split(color=0 if is_leader else MPI.UNDEFINED, key=rank)
        leader_comm = None if leader == MPI.COMM_NULL else leader
        if not virtual:
            node_id = node_comm.bcast(leader_comm.Get_rank() if leader_comm is not None else None, root=0)
        n_nodes = node_comm.bcast(leader_comm.Get_size() if leader_comm is not None else None, root=0)
        sizes: list[int] = world.allgather(node_comm.Get_size()) if gpus_per_node is None else [gpus_per_node]
        if len(set(sizes)) != 1:
            raise CommError(f"nodes have unequal numbers of ranks {sorted(set(sizes))}; the hierarchy needs the "
                            "same number of ranks on every node (pass gpus_per_node to use virtual blocks)")
        return cls(world=world, node_comm=node_comm, leader_comm=leader_comm, node_id=node_id, node_rank=node_rank,
                   n_nodes=n_nodes, gpus_per_node=sizes[0], is_leader=is_leader, virtual=virtual)

    def describe(self) -> str:
        kind = "virtual blocks" if self.virtual else "shared-memory nodes"
        return f"{self.n_nodes}x{self.gpus_per_node} ({kind})"


def hierarchical_allreduce(buf: Any, topology: Topology, *, op: str = "sum", algorithm: str = "auto") -> Any:
    """Global all-reduce in three phases: reduce inside each node to its leader (MPI_Reduce on the node's private
    communicator), all-reduce among the leaders with `algorithm`, broadcast inside each node. In place."""
    check_args(op, algorithm)
    if not isinstance(topology, Topology):
        raise CommError(f"topology must be a comm.Topology (from Topology.from_comm); got {type(topology).__name__}")
    work = adapt(buf)
    check_work(work, op)
    big = work.count > 0 and topology.world.Get_size() > 1
    leader = private_comm(topology.leader_comm) if big and topology.leader_comm is not None \
        and topology.leader_comm.Get_size() > 1 else topology.leader_comm
    hierarchical_on(work, topology, private_comm(topology.node_comm) if big else topology.node_comm, leader, op,
                    algorithm)
    work.finish()
    return buf


def hierarchical_on(work: Any, topology: Topology, node: Any, leader: Any, op: str, algorithm: str) -> None:
    """The three phases on communicators that are already the library's own: `node` (this rank's node) and `leader`
    (the leaders; None on the other ranks). Shared with the nonblocking all-reduce, which brings its own."""
    if work.count > 0 and topology.world.Get_size() > 1:
        mpi_op = MPI_OPS[op]
        work.ops.sync()
        if node.Get_size() > 1:
            if topology.is_leader:
                node.Reduce(MPI.IN_PLACE, work.array, op=mpi_op, root=0)
            else:
                node.Reduce(work.array, None, op=mpi_op, root=0)
        if topology.is_leader:
            reduce_on(work, "sum" if op == "mean" else op, algorithm, leader)
            if op == "mean":
                work.ops.divide(work.array, topology.world.Get_size())
        work.ops.sync()
        if node.Get_size() > 1:
            node.Bcast(work.array, root=0)
    elif op == "mean":
        work.ops.divide(work.array, topology.world.Get_size())


def block_allreduce(buf: Any, topology: Topology, *, op: str = "sum", algorithm: str = "auto") -> Any:
    """All-reduce inside this rank's node only (the block sync of hierarchical local SGD). In place."""
    from .allreduce import allreduce

    if not isinstance(topology, Topology):
        raise CommError(f"topology must be a comm.Topology (from Topology.from_comm); got {type(topology).__name__}")
    return allreduce(buf, op=op, algorithm=algorithm, comm=topology.node_comm)
