"""Communication backends of the averager: our comm over mpi4py, or an existing torch.distributed process group."""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from train.errors import TrainError

__all__ = ["Backend", "MPIBackend", "TorchBackend", "LEVELS"]

#: "block": inside this rank's block (node) only; "global": over all ranks.
LEVELS = ("block", "global")


class Backend(Protocol):
    """What LocalSGD needs from a communicator. Every call is collective over the ranks of `level`."""

    rank: int
    size: int
    has_blocks: bool

    def allreduce_mean(self, buf: torch.Tensor, level: str) -> None: ...
    def allgather_bytes(self, send: np.ndarray, level: str) -> np.ndarray: ...
    def broadcast(self, buf: torch.Tensor, root: int = 0) -> None: ...
    def group_size(self, level: str) -> int: ...
    def barrier(self, level: str) -> None: ...


def _check_level(level: str, has_blocks: bool) -> None:
    if level not in LEVELS:
        raise TrainError(f"sync level must be one of {', '.join(LEVELS)}, got {level!r}")
    if level == "block" and not has_blocks:
        raise TrainError("a block sync needs a backend with blocks: MPIBackend(hierarchical=True) or "
                         "TorchBackend(block_size=G)")


class MPIBackend:
    """Our comm/ all-reduce over an mpi4py communicator (default COMM_WORLD).

    With ``hierarchical=True`` the ranks are grouped into nodes (the real shared-memory nodes, or virtual blocks of
    `gpus_per_node` consecutive ranks): block syncs reduce inside a node, global syncs use comm's hierarchical
    all-reduce. `algorithm` is comm's all-reduce algorithm (auto, recursive_doubling, rabenseifner, ring, native).
    Collective to construct. mpi4py is imported here, not when `train` is imported.
    """

    def __init__(self, world: Any = None, *, hierarchical: bool = False, gpus_per_node: int | None = None,
                 algorithm: str = "auto", topology: Any = None) -> None:
        from mpi4py import MPI

        import comm

        self._comm = comm
        self.world = world if world is not None else MPI.COMM_WORLD
        self.rank, self.size = self.world.Get_rank(), self.world.Get_size()
        self.algorithm = algorithm
        if algorithm not in comm.ALGORITHMS:
            raise TrainError(f"allreduce algorithm must be one of {', '.join(comm.ALGORITHMS)}, got {algorithm!r}")
        if topology is None and hierarchical:
            topology = comm.Topology.from_comm(self.world, gpus_per_node)
        self.topology = topology
        self.hierarchical = hierarchical
        self.has_blocks = topology is not None

    def _group(self, level: str) -> Any:
        _check_level(level, self.has_blocks)
        return self.topology.node_comm if level == "block" else self.world

    def group_size(self, level: str) -> int:
        return int(self._group(level).Get_size())

    def barrier(self, level: str) -> None:
        self._group(level).Barrier()

    def allreduce_mean(self, buf: torch.Tensor, level: str) -> None:
        _check_level(level, self.has_blocks)
        if buf.is_cuda:  # comm reads the buffer directly: queued copies into it must be done
            torch.cuda.synchronize(buf.device)
        if level == "block":
            self._comm.block_allreduce(buf, self.topology, op="mean", algorithm=self.algorithm)
        elif self.hierarchical:
            self._comm.hierarchical_allreduce(buf, self.topology, op="mean", algorithm=self.algorithm)
        else:
            self._comm.allreduce(buf, op="mean", algorithm=self.algorithm, comm=self.world)

    def allgather_bytes(self, send: np.ndarray, level: str) -> np.ndarray:
        group = self._group(level)
        recv = np.empty(group.Get_size() * send.size, dtype=np.uint8)
        self._comm.allgather(send, recv, comm=group)
        return recv

    def broadcast(self, buf: torch.Tensor, root: int = 0) -> None:
        host = buf.detach().cpu().numpy().copy()
        self.world.Bcast(host, root=root)
        buf.copy_(torch.from_numpy(host))


class TorchBackend:
    """An existing torch.distributed process group (gloo on CPU, NCCL on GPUs), e.g. a job started by torchrun.

    `group` defaults to the default (WORLD) group. With ``block_size=G`` the ranks of `group` form blocks of G
    consecutive ranks (torch.distributed.new_subgroups, collective) for hierarchical block syncs; a global sync is
    one all-reduce over `group`. The mean is a SUM all-reduce divided by the group size.
    """

    def __init__(self, group: Any = None, *, block_size: int | None = None) -> None:
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            raise TrainError("TorchBackend needs an initialised torch.distributed process group "
                             "(torch.distributed.init_process_group), found none")
        self._dist = dist
        self.group: Any = group if group is not None else dist.group.WORLD
        self.rank, self.size = dist.get_rank(self.group), dist.get_world_size(self.group)
        self.block: Any = None
        if block_size is not None:
            if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1 \
                    or self.size % block_size:
                raise TrainError(f"block_size must be an integer >= 1 dividing the group size {self.size}, "
                                 f"got {block_size!r}")
            new_subgroups: Any = dist.new_subgroups  # untyped in torch
            self.block, _ = new_subgroups(group_size=block_size, group=group)
        self.has_blocks = self.block is not None
        self.device = torch.device("cuda", torch.cuda.current_device()) \
            if dist.get_backend(self.group) == "nccl" else torch.device("cpu")

    def _group(self, level: str) -> Any:
        _check_level(level, self.has_blocks)
        return self.block if level == "block" else self.group

    def group_size(self, level: str) -> int:
        return int(self._dist.get_world_size(self._group(level)))

    def barrier(self, level: str) -> None:
        self._dist.barrier(group=self._group(level))

    def allreduce_mean(self, buf: torch.Tensor, level: str) -> None:
        group = self._group(level)
        self._dist.all_reduce(buf, op=self._dist.ReduceOp.SUM, group=group)
        buf.div_(self._dist.get_world_size(group))

    def allgather_bytes(self, send: np.ndarray, level: str) -> np.ndarray:
        group = self._group(level)
        n = self._dist.get_world_size(group)
        mine = torch.from_numpy(np.ascontiguousarray(send, dtype=np.uint8)).to(self.device)
        parts = [torch.empty_like(mine) for _ in range(n)]
        self._dist.all_gather(parts, mine, group=group)
        return torch.cat(parts).cpu().numpy()

    def broadcast(self, buf: torch.Tensor, root: int = 0) -> None:
        self._dist.broadcast(buf, src=self._dist.get_global_rank(self.group, root)
                             if self.group is not self._dist.group.WORLD else root, group=self.group)
