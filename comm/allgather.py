"""comm.allgather: every rank's equal-sized block gathered on every rank, by recursive doubling for any p."""
from __future__ import annotations

from typing import Any

import numpy as np

from .allreduce import private_comm, resolve_comm
from .errors import CommError

__all__ = ["allgather", "ALLGATHER_ALGORITHMS"]

ALLGATHER_ALGORITHMS = ("recursive_doubling", "native")
_TAG = 11


def _as_bytes(buf: Any, what: str, writable: bool) -> tuple[np.ndarray, Any]:
    """A flat uint8 view of a host buffer (an all-gather only moves bytes), plus a write-back for CUDA tensors."""
    if type(buf).__module__.split(".")[0] == "torch" and hasattr(buf, "is_cuda"):
        t = buf.detach()
        if not t.is_contiguous():
            raise CommError(f"{what} tensor of shape {tuple(t.shape)} is not contiguous; pass tensor.contiguous()")
        if t.is_cuda:  # staged through host memory (a copy each call: the compressed payloads are small)
            host = t.cpu()
            return _as_bytes(host, what, writable)[0], (lambda: t.copy_(host)) if writable else None
        import torch

        arr = t.view(-1).view(torch.uint8).numpy()
    elif isinstance(buf, np.ndarray):
        arr = buf
    else:
        try:
            arr = np.asarray(memoryview(buf))
        except TypeError:
            raise CommError(f"{what} of type {type(buf).__name__} is not a buffer; pass a numpy array or a torch "
                            "tensor") from None
    if not (arr.flags.c_contiguous or arr.flags.f_contiguous):
        raise CommError(f"{what} of shape {arr.shape} is not contiguous; pass a contiguous array")
    if writable and not arr.flags.writeable:
        raise CommError(f"{what} is read-only; the all-gather writes into it")
    return arr.reshape(-1, order="A").view(np.uint8), None


def _block_ranges(p: int) -> tuple[int, int, list[int]]:
    """After the fold, rank i of the power-of-two group holds blocks [start[i], start[i + 1])."""
    pof2 = 1 << (p.bit_length() - 1)
    r = p - pof2
    start = [2 * i if i < r else i + r for i in range(pof2)] + [p]
    return pof2, r, start


def _recursive_doubling(comm: Any, out: np.ndarray, block: int) -> None:
    p, rank = comm.Get_size(), comm.Get_rank()
    pof2, r, start = _block_ranges(p)
    if rank < 2 * r and rank % 2 == 0:  # fold: hand my block to the odd neighbour, sit out, get the result back
        comm.Send(out[rank * block:(rank + 1) * block], dest=rank + 1, tag=_TAG)
        comm.Recv(out, source=rank + 1, tag=_TAG)
        return
    if rank < 2 * r:
        comm.Recv(out[(rank - 1) * block:rank * block], source=rank - 1, tag=_TAG)
        newrank = rank // 2
    else:
        newrank = rank - r

    def real(nr: int) -> int:
        return nr * 2 + 1 if nr < r else nr + r

    mask = 1
    while mask < pof2:
        mine, theirs = newrank & ~(mask - 1), (newrank ^ mask) & ~(mask - 1)
        m0, m1 = start[mine] * block, start[mine + mask] * block
        t0, t1 = start[theirs] * block, start[theirs + mask] * block
        partner = real(newrank ^ mask)
        comm.Sendrecv(out[m0:m1], partner, _TAG, out[t0:t1], partner, _TAG)
        mask <<= 1
    if rank < 2 * r:
        comm.Send(out, dest=rank - 1, tag=_TAG)


def allgather(sendbuf: Any, recvbuf: Any = None, *, algorithm: str = "recursive_doubling", comm: Any = None) -> Any:
    """Gather every rank's `sendbuf` (the same byte size on every rank) into `recvbuf`, rank-ordered, on all ranks.

    recvbuf must hold p times sendbuf's bytes; when omitted, a uint8 numpy array of that size is returned. Any
    dtype (bytes are moved as they are), any p (non-powers of two fold onto the largest power of two below).
    algorithm: "recursive_doubling" (ours) or "native" (MPI_Allgather).
    """
    if algorithm not in ALLGATHER_ALGORITHMS:
        raise CommError(f"algorithm must be one of {', '.join(ALLGATHER_ALGORITHMS)}; got {algorithm!r}")
    comm = resolve_comm(comm)
    p, rank = comm.Get_size(), comm.Get_rank()
    src, _ = _as_bytes(sendbuf, "sendbuf", writable=False)
    block = src.size
    if recvbuf is None:
        recvbuf = np.empty(p * block, dtype=np.uint8)
    out, write_back = _as_bytes(recvbuf, "recvbuf", writable=True)
    if out.size != p * block:
        raise CommError(f"recvbuf holds {out.size} bytes; it must hold p * sendbuf = {p} * {block} = {p * block}")
    if algorithm == "native" and p > 1:
        private_comm(comm).Allgather(src, out)
    else:
        out[rank * block:(rank + 1) * block] = src
        if p > 1 and block > 0:
            _recursive_doubling(private_comm(comm), out, block)
    if write_back is not None:
        write_back()
    return recvbuf
