"""comm.allreduce: in-place all-reduce of any contiguous buffer with our own algorithms or MPI_Allreduce."""
from __future__ import annotations

import os
import threading
from typing import Any

from mpi4py import MPI

from .algorithms import ALGORITHM_FUNCS
from .buffers import adapt
from .errors import CommError
from .nodes import MPI_OPS, leader_allreduce, multinode_choice, node_layout, rail_inter_algorithm
from .pipeline import pipelined_rail_allreduce, rail_segments

__all__ = ["allreduce", "ALGORITHMS", "OPS", "AUTO_THRESHOLD_BYTES", "auto_algorithm", "auto_choice", "private_comm",
           "check_args", "check_work", "reduce_work", "reduce_on", "resolve_comm"]

ALGORITHMS = ("auto", "recursive_doubling", "rabenseifner", "ring", "rail", "hierarchical", "native")
OPS = ("sum", "mean", "max", "min")
# Messages up to this many bytes go to recursive doubling under "auto", longer ones to Rabenseifner. Measured on
# the 2-core CI machine (MPICH 5, shared memory): recursive doubling stays faster up to 512 KiB at K = 8, 1 MiB
# at K = 4 and 2 MiB at K = 2 (benchmarks/allreduce_vs_native.py --ours recursive_doubling --baseline
# rabenseifner; see the README). LOCALSGD_AUTO_THRESHOLD_BYTES overrides it for other machines.
def _threshold_from_env(default: int = 512 * 1024) -> int:
    text = os.environ.get("LOCALSGD_AUTO_THRESHOLD_BYTES", "")
    if not text:
        return default
    if not text.isdigit():
        raise CommError(f"LOCALSGD_AUTO_THRESHOLD_BYTES must be a byte count (digits only); got {text!r}")
    return int(text)


AUTO_THRESHOLD_BYTES = _threshold_from_env()

_KEYVAL: int | None = None
# Keyvals are made once per process; a helper thread of comm.nonblocking may ask for one at the same moment as the
# caller's thread, and two keyvals would make one rank look a communicator's attribute up under the wrong one.
_KEYVAL_LOCK = threading.Lock()


def check_args(op: str, algorithm: str) -> None:
    """Validate the arguments every rank passes alike, before any communication."""
    if op not in OPS:
        raise CommError(f"op must be one of {', '.join(OPS)}; got {op!r}")
    if algorithm not in ALGORITHMS:
        raise CommError(f"algorithm must be one of {', '.join(ALGORITHMS)}; got {algorithm!r}")


def auto_algorithm(nbytes: int, layout: Any = None) -> str:
    """The algorithm "auto" picks for a message of `nbytes` on a communicator with this node layout (a
    comm.nodes.NodeLayout; None or one node: the single-node choice). Where several nodes hold more than one rank
    each, ranks share a NIC and the choice is among the ring and the two-level rail all-reduce
    (comm.nodes.multinode_choice); otherwise recursive doubling up to AUTO_THRESHOLD_BYTES, Rabenseifner above."""
    if layout is not None and layout.shared_nics:
        return multinode_choice(nbytes, layout)
    return "recursive_doubling" if nbytes <= AUTO_THRESHOLD_BYTES else "rabenseifner"


def auto_choice(nbytes: int, comm: Any = None) -> str:
    """What "auto" picks for a message of `nbytes` on `comm` (default MPI.COMM_WORLD), knowing its node layout.
    Collective over `comm` the first time (the layout is found once and cached). Gradient buckets use it to run
    every bucket with the algorithm the whole gradient would get (train/buckets.py)."""
    comm = resolve_comm(comm)
    if comm.Get_size() == 1:
        return auto_algorithm(nbytes)
    return auto_algorithm(nbytes, node_layout(private_comm(comm)))


def _free_private(comm: Any, keyval: int, attr: Any) -> None:
    if attr is not None and attr != MPI.COMM_NULL and not MPI.Is_finalized():
        attr.Free()


def private_comm(comm: Any) -> Any:
    """The library's own duplicate of `comm`, made once (collectively) and cached on `comm` as an MPI attribute,
    so our messages can never match a user's receive and the duplicate is freed with `comm`."""
    global _KEYVAL
    with _KEYVAL_LOCK:
        if _KEYVAL is None:
            _KEYVAL = MPI.Comm.Create_keyval(delete_fn=_free_private)
    dup = comm.Get_attr(_KEYVAL)
    if dup is None:
        dup = comm.Dup()
        comm.Set_attr(_KEYVAL, dup)
    return dup


def resolve_comm(comm: Any) -> Any:
    if comm is None:
        return MPI.COMM_WORLD
    if not isinstance(comm, MPI.Intracomm) or comm == MPI.COMM_NULL:
        raise CommError(f"comm must be an mpi4py intracommunicator (e.g. MPI.COMM_WORLD); got {comm!r}")
    return comm


def allreduce(buf: Any, *, op: str = "sum", algorithm: str = "auto", comm: Any = None) -> Any:
    """All-reduce `buf` in place over `comm` (default MPI.COMM_WORLD) and return it.

    buf: any contiguous buffer: a numpy array, a torch CPU or CUDA tensor, or an object with DLPack,
    __cuda_array_interface__ or the buffer protocol; dtypes float16, bfloat16 (accumulated in float32), float32,
    float64, int32, int64. op: "sum", "mean" (floating types), "max" or "min". algorithm: "auto" (on one node, or
    one rank per node: recursive doubling up to AUTO_THRESHOLD_BYTES, Rabenseifner above; across nodes that hold
    several ranks each: see auto_algorithm), "recursive_doubling", "rabenseifner", "ring", "rail" (reduce-scatter
    in the node, all-reduce of each shard across the nodes, all-gather in the node; large messages in pipelined
    segments, comm.pipeline), "hierarchical" (reduce to the node leader, all-reduce among leaders, broadcast) or
    "native" (MPI_Allreduce). Every rank ends with a bitwise identical result. For CUDA buffers the caller must have
    synchronised the stream that wrote them.
    """
    check_args(op, algorithm)
    comm = resolve_comm(comm)
    work = adapt(buf)  # validates the buffer before any communication
    check_work(work, op)
    reduce_work(work, op, algorithm, comm)
    work.finish()
    return buf


def check_work(work: Any, op: str) -> None:
    """Refuse what no algorithm can do with an adapted buffer: a mean of integers, memory still in flight."""
    if op == "mean" and work.dtype.startswith("int"):
        raise CommError(f"op 'mean' needs a floating dtype; got {work.dtype} (use op='sum' and divide yourself)")
    from .nonblocking import refuse_in_flight
    refuse_in_flight(work.span)


def reduce_work(work: Any, op: str, algorithm: str, comm: Any) -> None:
    """Run the chosen algorithm on an adapted work array (shared with the hierarchical all-reduce)."""
    reduce_on(work, op, algorithm, private_comm(comm) if comm.Get_size() > 1 and work.count > 0 else comm)


def reduce_on(work: Any, op: str, algorithm: str, private: Any) -> None:
    """reduce_work on a communicator that is already the library's own (a private duplicate nobody else uses)."""
    p = private.Get_size()
    if p > 1 and work.count > 0:
        if algorithm == "auto":
            algorithm = auto_algorithm(work.count * _itemsize(work.dtype), node_layout(private))
        if algorithm == "rail":
            layout = node_layout(private)
            if not layout.uniform:
                raise CommError(f"algorithm 'rail' needs the same number of ranks on every node; this communicator "
                                f"has {list(layout.ranks_per_node)} (use 'ring' or 'auto')")
            pipelined_rail_allreduce(work, layout, op, rail_inter_algorithm(layout),
                                     rail_segments(work.count * _itemsize(work.dtype)))
        elif algorithm == "hierarchical":
            leader_allreduce(work, node_layout(private), op, auto_algorithm(work.count * _itemsize(work.dtype)))
        elif algorithm == "native":
            work.ops.sync()
            private.Allreduce(MPI.IN_PLACE, work.array, op=MPI_OPS[op])
        else:
            ALGORITHM_FUNCS[algorithm](private, work.array, work.ops, op)
    if op == "mean":
        work.ops.divide(work.array, p)


def _itemsize(dtype: str) -> int:
    return {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8, "int32": 4, "int64": 8}[dtype]
