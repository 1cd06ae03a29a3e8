"""Communication backends of the averager: our comm over mpi4py, or an existing torch.distributed process group."""
from __future__ import annotations

import time
from typing import Any, Protocol

import numpy as np
import torch

from train.errors import TrainError

__all__ = ["Backend", "MPIBackend", "TorchBackend", "LEVELS", "Handle", "make_backend", "Delayed"]

#: "block": inside this rank's block (node) only; "global": over all ranks.
LEVELS = ("block", "global")


class Backend(Protocol):
    """What LocalSGD needs from a communicator. Every call is collective over the ranks of `level`."""

    rank: int
    size: int
    has_blocks: bool

    def allreduce_mean(self, buf: torch.Tensor, level: str) -> None: ...
    def iallreduce_mean(self, buf: torch.Tensor, level: str) -> Handle: ...
    def allgather_bytes(self, send: np.ndarray, level: str) -> np.ndarray: ...
    def broadcast(self, buf: torch.Tensor, root: int = 0) -> None: ...
    def group_size(self, level: str) -> int: ...
    def barrier(self, level: str) -> None: ...


class Handle(Protocol):
    """A nonblocking all-reduce in flight: test() (advances "poll" progress), wait(); started_at, completed_at."""

    started_at: float
    completed_at: float | None

    def test(self) -> bool: ...
    def wait(self) -> Any: ...


class Delayed:
    """A handle whose completion is `delay_s` later than the communication's: the emulated network delay of a sync
    that is overlapped with computation (hidden by it like the communication itself)."""

    def __init__(self, inner: Any, delay_s: float) -> None:
        self.inner, self.delay_s = inner, delay_s
        self.started_at: float = inner.started_at
        self.completed_at: float | None = None

    def _done_at(self) -> float | None:
        end = getattr(self.inner, "completed_at", None)
        return None if end is None else end + self.delay_s

    def test(self) -> bool:
        if not self.inner.test():
            return False
        at = self._done_at()
        if at is None or time.perf_counter() < at:
            return False
        self.completed_at = at
        return True

    def wait(self) -> Any:
        out = self.inner.wait()
        at = self._done_at() or time.perf_counter()
        left = at - time.perf_counter()
        if left > 0:
            time.sleep(left)
        self.completed_at = at
        return out


class _TorchHandle:
    """torch.distributed's async all_reduce (a SUM) with the division by the group size at completion."""

    def __init__(self, work: Any, buf: torch.Tensor, n: int) -> None:
        self.work, self.buf, self.n = work, buf, n
        self.started_at = time.perf_counter()
        self.completed_at: float | None = None

    def _finish(self) -> None:
        if self.completed_at is None:
            self.buf.div_(self.n)
            self.completed_at = time.perf_counter()

    def test(self) -> bool:
        if self.completed_at is None and self.work.is_completed():
            self.work.wait()
            self._finish()
        return self.completed_at is not None

    def wait(self) -> Any:
        if self.completed_at is None:
            self.work.wait()
            self._finish()
        return self.buf


def make_backend(backend: Any, *, hierarchical: bool = False, block_size: int | None = None,
                 algorithm: str = "auto", progress: str = "thread") -> Any:
    """"mpi" (or None): MPIBackend; "torch": TorchBackend; anything else is taken as a backend object."""
    if backend is None or backend == "mpi":
        return MPIBackend(hierarchical=hierarchical or block_size is not None, gpus_per_node=block_size,
                          algorithm=algorithm, progress=progress)
    if backend == "torch":
        return TorchBackend(block_size=block_size)
    if isinstance(backend, str):
        raise TrainError(f"backend must be 'mpi', 'torch' or a backend object, got {backend!r}")
    if block_size is not None:
        raise TrainError("block_size applies to backend 'mpi' or 'torch'; a backend object brings its own blocks")
    return backend


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
    all-reduce. `algorithm` is comm's all-reduce algorithm (auto, recursive_doubling, rabenseifner, ring, native);
    `progress` how its nonblocking all-reduces advance (comm.PROGRESS: "thread" or "poll").
    Collective to construct. mpi4py is imported here, not when `train` is imported.
    """

    def __init__(self, world: Any = None, *, hierarchical: bool = False, gpus_per_node: int | None = None,
                 algorithm: str = "auto", topology: Any = None, progress: str = "thread") -> None:
        from mpi4py import MPI

        import comm

        self._comm = comm
        self.world = world if world is not None else MPI.COMM_WORLD
        self.rank, self.size = self.world.Get_rank(), self.world.Get_size()
        self.algorithm = algorithm
        if algorithm not in comm.ALGORITHMS:
            raise TrainError(f"allreduce algorithm must be one of {', '.join(comm.ALGORITHMS)}, got {algorithm!r}")
        if progress not in comm.PROGRESS:
            raise TrainError(f"progress must be one of {', '.join(comm.PROGRESS)}, got {progress!r}")
        self.progress = progress
        self._choices: dict[tuple[str, int], str] = {}  # auto's choice per (level, message bytes), found once
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

    def iallreduce_mean(self, buf: torch.Tensor, level: str, as_bytes: int | None = None) -> Any:
        """Start the mean of `buf` at `level` and return the request (comm.Request: test(), wait()). `as_bytes`:
        under "auto", run the algorithm a message of that many bytes would get (a bucket of a larger gradient)."""
        _check_level(level, self.has_blocks)
        if buf.is_cuda:
            torch.cuda.synchronize(buf.device)
        c = self._comm
        alg = self.algorithm
        if alg == "auto" and as_bytes is not None:
            group = self.topology.leader_comm if self.hierarchical and level == "global" else self._group(level)
            if group is not None:  # hierarchical: the leaders' algorithm (non-leaders never use it)
                alg = self._choices.get((level, as_bytes)) or self._choices.setdefault(
                    (level, as_bytes), c.auto_choice(as_bytes, group))
        if level == "block":
            return c.iblock_allreduce(buf, self.topology, op="mean", algorithm=alg, progress=self.progress)
        if self.hierarchical:
            return c.ihierarchical_allreduce(buf, self.topology, op="mean", algorithm=alg, progress=self.progress)
        return c.iallreduce(buf, op="mean", algorithm=alg, comm=self.world, progress=self.progress)

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

    def iallreduce_mean(self, buf: torch.Tensor, level: str) -> Any:
        """Start the mean of `buf` at `level` (torch.distributed's async_op all_reduce) and return its handle."""
        group = self._group(level)
        work = self._dist.all_reduce(buf, op=self._dist.ReduceOp.SUM, group=group, async_op=True)
        return _TorchHandle(work, buf, self._dist.get_world_size(group))

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
