"""Point-to-point all-reduce algorithms: recursive doubling, Rabenseifner (with the fold) and ring."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["recursive_doubling", "rabenseifner", "ring", "chunk_bounds", "ALGORITHM_FUNCS"]

# Every message of one all-reduce travels on the library's private duplicate communicator, so a fixed tag can
# never meet user traffic; MPI's non-overtaking rule orders successive steps between the same pair.
_TAG = 7


def chunk_bounds(count: int, parts: int) -> list[int]:
    """Boundaries of `parts` nearly equal chunks of `count` elements (the first count % parts get one more)."""
    base, extra = divmod(count, parts)
    bounds = [0]
    for i in range(parts):
        bounds.append(bounds[-1] + base + (1 if i < extra else 0))
    return bounds


def _pof2_below(p: int) -> int:
    return 1 << (p.bit_length() - 1)


def _fold(comm: Any, arr: Any, ops: Any, op: str) -> tuple[int, int, Callable[[int], int]]:
    """Fold p ranks onto p' = 2^floor(lg p): among the first 2r, each even rank hands its vector to the odd one.

    Returns (newrank, p', real) where newrank is -1 for the ranks that sit out and real(newrank) maps a rank of
    the power-of-two group back to the communicator's rank (MPICH's variant: the whole vector moves).
    """
    p, rank = comm.Get_size(), comm.Get_rank()
    pof2 = _pof2_below(p)
    r = p - pof2
    if rank < 2 * r:
        if rank % 2 == 0:
            ops.sync()
            comm.Send(arr, dest=rank + 1, tag=_TAG)
            newrank = -1
        else:
            recv = ops.scratch("fold", arr, len(arr))
            comm.Recv(recv, source=rank - 1, tag=_TAG)
            ops.reduce(arr, recv, op)
            newrank = rank // 2
    else:
        newrank = rank - r

    def real(nr: int) -> int:
        return nr * 2 + 1 if nr < r else nr + r

    return newrank, pof2, real


def _unfold(comm: Any, arr: Any, ops: Any) -> None:
    """Give the result back to the ranks that sat out of the power-of-two group."""
    p, rank = comm.Get_size(), comm.Get_rank()
    r = p - _pof2_below(p)
    if rank < 2 * r:
        if rank % 2 == 0:
            comm.Recv(arr, source=rank + 1, tag=_TAG)
        else:
            ops.sync()
            comm.Send(arr, dest=rank - 1, tag=_TAG)


def recursive_doubling(comm: Any, arr: Any, ops: Any, op: str) -> None:
    """lg p exchanges of the whole vector; each rank reduces its own and its partner's (commutative, so bitwise
    the same on both sides). Non-powers of two are folded first."""
    newrank, pof2, real = _fold(comm, arr, ops, op)
    if newrank >= 0 and pof2 > 1:
        recv = ops.scratch("recv", arr, len(arr))
        mask = 1
        while mask < pof2:
            partner = real(newrank ^ mask)
            ops.sync()
            comm.Sendrecv(arr, partner, _TAG, recv, partner, _TAG)
            ops.reduce(arr, recv, op)
            mask <<= 1
    ops.sync()
    _unfold(comm, arr, ops)


def rabenseifner(comm: Any, arr: Any, ops: Any, op: str) -> None:
    """Reduce-scatter by recursive halving, then all-gather by recursive doubling (Thakur, Rabenseifner, Gropp).

    Each chunk is reduced by exactly one rank and then copied to all, so every rank ends bitwise identical.
    Counts smaller than p' or not divisible by p' give empty or uneven chunks, which the exchanges handle as is.
    """
    newrank, pof2, real = _fold(comm, arr, ops, op)
    if newrank >= 0 and pof2 > 1:
        bounds = chunk_bounds(len(arr), pof2)
        recv = ops.scratch("recv", arr, bounds[pof2 // 2])  # the lower half is the larger one
        lo, hi = 0, pof2  # window of chunk indices this rank is still responsible for
        mask = pof2 >> 1
        while mask >= 1:
            partner = real(newrank ^ mask)
            mid = lo + (hi - lo) // 2
            if newrank & mask:
                keep, send = (mid, hi), (lo, mid)
            else:
                keep, send = (lo, mid), (mid, hi)
            k0, k1 = bounds[keep[0]], bounds[keep[1]]
            s0, s1 = bounds[send[0]], bounds[send[1]]
            ops.sync()
            comm.Sendrecv(arr[s0:s1], partner, _TAG, recv[: k1 - k0], partner, _TAG)
            ops.reduce(arr[k0:k1], recv[: k1 - k0], op)
            lo, hi = keep
            mask >>= 1
        # Now this rank owns chunk `newrank`, fully reduced. All-gather by recursive doubling of windows.
        ops.sync()
        mask = 1
        while mask < pof2:
            partner_new = newrank ^ mask
            mine = newrank & ~(mask - 1)
            theirs = partner_new & ~(mask - 1)
            m0, m1 = bounds[mine], bounds[mine + mask]
            t0, t1 = bounds[theirs], bounds[theirs + mask]
            partner = real(partner_new)
            comm.Sendrecv(arr[m0:m1], partner, _TAG, arr[t0:t1], partner, _TAG)
            mask <<= 1
    ops.sync()
    _unfold(comm, arr, ops)


def ring(comm: Any, arr: Any, ops: Any, op: str) -> None:
    """Ring reduce-scatter then ring all-gather: 2 (p-1) steps of n/p, any p without a fold."""
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
        comm.Sendrecv(arr[bounds[s]:bounds[s + 1]], right, _TAG, recv[:n_g], left, _TAG)
        ops.reduce(arr[bounds[g]:bounds[g + 1]], recv[:n_g], op)
    ops.sync()
    # Rank r now owns chunk (r + 1) % p; pass the finished chunks around the ring.
    for step in range(p - 1):
        s = (rank + 1 - step) % p
        g = (rank - step) % p
        comm.Sendrecv(arr[bounds[s]:bounds[s + 1]], right, _TAG, arr[bounds[g]:bounds[g + 1]], left, _TAG)


ALGORITHM_FUNCS: dict[str, Callable[[Any, Any, Any, str], None]] = {
    "recursive_doubling": recursive_doubling,
    "rabenseifner": rabenseifner,
    "ring": ring,
}
