"""The all-reduce schedules of sim/collectives.py as global rounds of messages: numpy tables for any group size."""
# A collective is a list of Rounds. In one round every rank sends at most one message and receives at most one, and
# a rank that both sends and receives in a round does both in the same round of its own program (collectives.py),
# so running the rounds in order is running every rank's program in order: a rank that has no message in a round
# simply skips it. Indices are local ranks 0..p-1 of the group. A Round with `repeat` > 1 is the same messages
# `repeat` times in a row (the p - 1 steps of a ring); `period` > 0 says the round maps rank i + period to
# (its partner) + period (mod p), which lets the executor simulate one period of ranks when their times repeat.
# tests/unit/test_sim_scalable.py checks every table against the program lists of collectives.py.
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.collectives import NODE_ALGORITHMS
from sim.costs import FLAT_ALGORITHMS, auto_algorithm, pof2_floor
from sim.errors import SimError

__all__ = ["Round", "collective_rounds", "flat_rounds", "allgather_rounds", "hierarchical_rounds", "rail_rounds",
           "round_messages"]


@dataclass(frozen=True, eq=False)
class Round:
    """Messages src[i] -> dst[i] of nbytes[i]; the receiver reduces them when `reduce`; run `repeat` times."""

    src: np.ndarray
    dst: np.ndarray
    nbytes: np.ndarray
    reduce: bool
    repeat: int = 1
    period: int = 0

    def __post_init__(self) -> None:
        if not (self.src.shape == self.dst.shape == self.nbytes.shape) or self.src.ndim != 1:
            raise SimError(f"a round needs src, dst and nbytes of one 1-d shape, got {self.src.shape}, "
                           f"{self.dst.shape}, {self.nbytes.shape}")
        if self.repeat < 1:
            raise SimError(f"a round's repeat must be >= 1, got {self.repeat}")

    @property
    def messages(self) -> int:
        return int(self.src.size) * self.repeat


def _rnd(src: np.ndarray, dst: np.ndarray, n: float | np.ndarray, reduce: bool, repeat: int = 1,
         period: int = 0) -> Round:
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    nb = np.broadcast_to(np.asarray(n, dtype=float), src.shape).copy()
    return Round(src=src, dst=dst, nbytes=nb, reduce=reduce, repeat=repeat, period=period)


def _fold_map(p: int) -> tuple[int, int, np.ndarray]:
    """(q, r, real): the power-of-two core q = pof2(p), r = p - q, and the real rank of each virtual rank."""
    q = pof2_floor(p)
    r = p - q
    v = np.arange(q, dtype=np.int64)
    return q, r, np.where(v < r, 2 * v + 1, v + r)


def _fold(p: int, n: float, core: list[tuple[np.ndarray, np.ndarray, float, bool]]) -> list[Round]:
    """MPICH's fold (collectives._fold) around core rounds given on virtual ranks (src, dst, bytes, reduce)."""
    _, r, real = _fold_map(p)
    out = []
    if r:
        ev = np.arange(0, 2 * r, 2, dtype=np.int64)
        out.append(_rnd(ev, ev + 1, n, True))
    out += [_rnd(real[s], real[d], m, red) for s, d, m, red in core]
    if r:
        od = np.arange(1, 2 * r, 2, dtype=np.int64)
        out.append(_rnd(od, od - 1, n, False))
    return out


def _pairs(q: int, mask: int) -> tuple[np.ndarray, np.ndarray]:
    v = np.arange(q, dtype=np.int64)
    return v, v ^ mask


def flat_rounds(algorithm: str, p: int, n: float) -> list[Round]:
    """Rounds of a flat all-reduce of n bytes over p ranks (collectives.flat_programs)."""
    if isinstance(p, bool) or not isinstance(p, int) or p < 1:
        raise SimError(f"p must be an integer >= 1, got {p!r}")
    if p == 1:
        return []
    if algorithm == "recursive_doubling":
        q = pof2_floor(p)
        return _fold(p, n, [(*_pairs(q, 1 << k), n, True) for k in range(q.bit_length() - 1)])
    if algorithm == "rabenseifner":
        q = pof2_floor(p)
        core = []
        size, mask = n, 1
        while mask < q:
            size /= 2
            core.append((*_pairs(q, mask), size, True))
            mask <<= 1
        mask >>= 1
        while mask >= 1:
            core.append((*_pairs(q, mask), size, False))
            size *= 2
            mask >>= 1
        return _fold(p, n, core)
    if algorithm == "ring":
        i = np.arange(p, dtype=np.int64)
        return [_rnd(i, (i + 1) % p, n / p, True, p - 1, 1), _rnd(i, (i + 1) % p, n / p, False, p - 1, 1)]
    if algorithm == "binomial":
        return _binomial_reduce(p, n) + _binomial_bcast(p, n)
    raise SimError(f"all-reduce algorithm must be one of {', '.join(FLAT_ALGORITHMS + NODE_ALGORITHMS)}, "
                   f"got {algorithm!r}")


def _binomial_reduce(p: int, n: float) -> list[Round]:
    out, k = [], 1
    while k < p:
        i = np.arange(0, p, 2 * k, dtype=np.int64)
        i = i[i + k < p]
        out.append(_rnd(i + k, i, n, True))
        k <<= 1
    return out


def _binomial_bcast(p: int, n: float) -> list[Round]:
    out, k = [], 1
    while k < p:
        k <<= 1
    k >>= 1
    while k >= 1:
        i = np.arange(0, p, 2 * k, dtype=np.int64)
        i = i[i + k < p]
        out.append(_rnd(i, i + k, n, False))
        k >>= 1
    return out


def _place(rounds: list[Round], rank_of: np.ndarray, period: int = 0) -> list[Round]:
    """Rounds of a sub-group mapped to group ranks: rank_of[j] for each local j; `rank_of` may be 2-d (copies of
    the sub-group side by side, one per row), whose messages share each round."""
    out = []
    for rd in rounds:
        s, d = rank_of[..., rd.src].ravel(), rank_of[..., rd.dst].ravel()
        nb = np.broadcast_to(rd.nbytes, rank_of[..., rd.src].shape).ravel()
        out.append(Round(src=s, dst=d, nbytes=nb.copy(), reduce=rd.reduce, repeat=rd.repeat,
                         period=period if rd.repeat > 1 or rd.period else 0))
    return out


def hierarchical_rounds(nodes: int, b: int, n: float, leader_algorithm: str = "auto") -> list[Round]:
    """Reduce in each node (binomial), all-reduce among the node leaders, broadcast in each node."""
    alg = auto_algorithm(n) if leader_algorithm == "auto" else leader_algorithm
    grid = np.arange(nodes * b, dtype=np.int64).reshape(nodes, b)
    leader_period = b if alg == "ring" else 0  # a ring among leaders repeats every node
    return (_place(_binomial_reduce(b, n), grid) + _place(flat_rounds(alg, nodes, n), grid[:, 0], leader_period)
            + _place(_binomial_bcast(b, n), grid))


def rail_rounds(nodes: int, b: int, n: float) -> list[Round]:
    """comm's rail all-reduce (collectives.rail_programs): ring reduce-scatter in each node, a ring all-reduce of each
    n/b shard among the ranks of equal node rank (all rails at once), ring all-gather in each node."""
    shard = n / b
    grid = np.arange(nodes * b, dtype=np.int64).reshape(nodes, b)
    j = np.arange(b, dtype=np.int64)
    in_node = [] if b == 1 else [(j, (j + 1) % b)]
    rs = [_rnd(s, d, shard, True, b - 1, 1) for s, d in in_node]
    ag = [_rnd(s, d, shard, False, b - 1, 1) for s, d in in_node]
    return (_place(rs, grid, b) + _place(flat_rounds("ring", nodes, shard), grid.T, b) + _place(ag, grid, b))


def allgather_rounds(p: int, block: float) -> list[Round]:
    """Recursive-doubling all-gather of `block` bytes per rank with the fold (collectives.allgather_programs)."""
    if isinstance(p, bool) or not isinstance(p, int) or p < 1:
        raise SimError(f"p must be an integer >= 1, got {p!r}")
    q, r, real = _fold_map(p)
    v = np.arange(q + 1, dtype=np.int64)
    start = np.where(v < r, 2 * v, v + r)
    start[q] = p
    out = []
    if r:
        ev = np.arange(0, 2 * r, 2, dtype=np.int64)
        out.append(_rnd(ev, ev + 1, block, False))
    mask = 1
    while mask < q:
        vv = np.arange(q, dtype=np.int64)
        mine = vv & ~(mask - 1)
        out.append(_rnd(real[vv], real[vv ^ mask], (start[mine + mask] - start[mine]) * block, False))
        mask <<= 1
    if r:
        od = np.arange(1, 2 * r, 2, dtype=np.int64)
        out.append(_rnd(od, od - 1, p * block, False))
    return out


def collective_rounds(algorithm: str, p: int, nbytes: float, b: int, leader: str = "auto") -> list[Round]:
    """Rounds of `algorithm` on p ranks; hierarchical and rail need p = whole nodes of b (checked by the caller)."""
    if algorithm == "allgather":
        return allgather_rounds(p, nbytes)
    if algorithm == "hierarchical":
        return hierarchical_rounds(p // b, b, nbytes, leader)
    if algorithm == "rail":
        return rail_rounds(p // b, b, nbytes)
    return flat_rounds(algorithm, p, nbytes)


def round_messages(rounds: list[Round], p: int) -> list[list[tuple[tuple[tuple[int, float], ...],
                                                                 tuple[tuple[int, float, bool], ...]]]]:
    """The per-rank programs the rounds run (collectives.py's form), for tests on small p."""
    progs: list[list] = [[] for _ in range(p)]
    for rd in rounds:
        for _ in range(rd.repeat):
            step: dict[int, tuple[list, list]] = {}
            for s, d, m in zip(rd.src.tolist(), rd.dst.tolist(), rd.nbytes.tolist()):
                step.setdefault(s, ([], []))[0].append((d, m))
                step.setdefault(d, ([], []))[1].append((s, m, rd.reduce))
            for k in sorted(step):
                progs[k].append((tuple(step[k][0]), tuple(step[k][1])))
    return progs
