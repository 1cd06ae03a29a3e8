"""Message-level schedules of the all-reduce algorithms: one program of rounds per rank."""
# A program is a list of rounds; a round is ``(sends, recvs)`` with ``sends = ((dst, nbytes), ...)`` and
# ``recvs = ((src, nbytes, reduce), ...)``. Ranks are local indices 0..p-1 of the group. A rank starts
# its round's sends, waits until they are delivered and its receives have arrived, then reduces the
# received bytes flagged ``reduce``. Messages between a pair of ranks match in program order.
# The pairings follow MPICH (SPEC section 4), including the fold for non-powers of two.
from __future__ import annotations

from sim.costs import FLAT_ALGORITHMS, auto_algorithm, pof2_floor
from sim.errors import SimError

__all__ = ["Round", "Program", "flat_programs", "hierarchical_programs", "rail_programs", "allgather_programs",
           "ALL_ALGORITHMS", "NODE_ALGORITHMS"]

Round = tuple[tuple[tuple[int, float], ...], tuple[tuple[int, float, bool], ...]]
Program = list[Round]

#: Two-level all-reduces that need whole nodes of b consecutive ranks (comm/topology.py, comm/nodes.py).
NODE_ALGORITHMS = ("hierarchical", "rail")
ALL_ALGORITHMS = FLAT_ALGORITHMS + NODE_ALGORITHMS


def _rnd(sends=(), recvs=()) -> Round:
    return tuple(sends), tuple(recvs)


def _fold(p: int, n: float, core) -> list[Program]:
    """MPICH's fold around a power-of-two core: `core(q, n)` gives the programs of q = pof2(p) ranks."""
    q = pof2_floor(p)
    r = p - q
    progs: list[Program] = [[] for _ in range(p)]
    real = [2 * v + 1 if v < r else v + r for v in range(q)]  # virtual rank -> real rank
    for i in range(2 * r):
        if i % 2 == 0:
            progs[i].append(_rnd(sends=[(i + 1, n)]))
        else:
            progs[i].append(_rnd(recvs=[(i - 1, n, True)]))
    for v, prog in enumerate(core(q, n)):
        for sends, recvs in prog:
            progs[real[v]].append(_rnd([(real[d], m) for d, m in sends],
                                       [(real[s], m, red) for s, m, red in recvs]))
    for i in range(2 * r):
        if i % 2 == 0:
            progs[i].append(_rnd(recvs=[(i + 1, n, False)]))
        else:
            progs[i].append(_rnd(sends=[(i - 1, n)]))
    return progs


def _rd_core(q: int, n: float) -> list[Program]:
    progs: list[Program] = [[] for _ in range(q)]
    mask = 1
    while mask < q:
        for v in range(q):
            progs[v].append(_rnd([(v ^ mask, n)], [(v ^ mask, n, True)]))
        mask <<= 1
    return progs


def _rab_core(q: int, n: float) -> list[Program]:
    progs: list[Program] = [[] for _ in range(q)]
    mask, size = 1, n
    while mask < q:  # reduce-scatter by recursive halving: nearest partner first, half the data
        size /= 2
        for v in range(q):
            progs[v].append(_rnd([(v ^ mask, size)], [(v ^ mask, size, True)]))
        mask <<= 1
    mask >>= 1
    while mask >= 1:  # all-gather by recursive doubling, in reverse
        for v in range(q):
            progs[v].append(_rnd([(v ^ mask, size)], [(v ^ mask, size, False)]))
        size *= 2
        mask >>= 1
    return progs


def _ring_phase(p: int, chunk: float, reduce: bool) -> list[Program]:
    """One half of the ring: p - 1 rounds of `chunk` bytes to the next rank (reduce-scatter, or all-gather)."""
    progs: list[Program] = [[] for _ in range(p)]
    for _ in range(p - 1):
        for i in range(p):
            progs[i].append(_rnd([((i + 1) % p, chunk)], [((i - 1) % p, chunk, reduce)]))
    return progs


def _ring(p: int, n: float) -> list[Program]:
    chunk = n / p
    return [a + b for a, b in zip(_ring_phase(p, chunk, True), _ring_phase(p, chunk, False))]


def _binomial_reduce(p: int, n: float) -> list[Program]:
    progs: list[Program] = [[] for _ in range(p)]
    k = 1
    while k < p:
        for i in range(0, p, 2 * k):
            if i + k < p:
                progs[i].append(_rnd(recvs=[(i + k, n, True)]))
                progs[i + k].append(_rnd(sends=[(i, n)]))
        k <<= 1
    return progs


def _binomial_bcast(p: int, n: float) -> list[Program]:
    progs: list[Program] = [[] for _ in range(p)]
    k = 1
    while k < p:
        k <<= 1
    k >>= 1
    while k >= 1:
        for i in range(0, p, 2 * k):
            if i + k < p:
                progs[i].append(_rnd(sends=[(i + k, n)]))
                progs[i + k].append(_rnd(recvs=[(i, n, False)]))
        k >>= 1
    return progs


def flat_programs(algorithm: str, p: int, n: float) -> list[Program]:
    """Per-rank programs of a flat all-reduce of n bytes over p ranks."""
    if isinstance(p, bool) or not isinstance(p, int) or p < 1:
        raise SimError(f"p must be an integer >= 1, got {p!r}")
    if p == 1:
        return [[]]
    if algorithm == "recursive_doubling":
        return _fold(p, n, _rd_core)
    if algorithm == "rabenseifner":
        return _fold(p, n, _rab_core)
    if algorithm == "ring":
        return _ring(p, n)
    if algorithm == "binomial":
        red, bc = _binomial_reduce(p, n), _binomial_bcast(p, n)
        return [a + b for a, b in zip(red, bc)]
    raise SimError(f"all-reduce algorithm must be one of {', '.join(ALL_ALGORITHMS)}, got {algorithm!r}")


def _place(progs: list[Program], local: list[Program], rank_of) -> None:
    """Append a sub-group's programs (local ranks 0..len(local)-1) to `progs`, mapped by `rank_of`."""
    for j, prog in enumerate(local):
        progs[rank_of(j)].extend(
            _rnd([(rank_of(d), m) for d, m in s], [(rank_of(x), m, red) for x, m, red in r]) for s, r in prog)


def hierarchical_programs(nodes: int, b: int, n: float, leader_algorithm: str = "auto") -> list[Program]:
    """Programs for nodes*b ranks (node-major): reduce in node, all-reduce among leaders, broadcast."""
    alg = auto_algorithm(n) if leader_algorithm == "auto" else leader_algorithm
    progs: list[Program] = [[] for _ in range(nodes * b)]

    for node in range(nodes):
        _place(progs, _binomial_reduce(b, n), lambda j, node=node: node * b + j)
    _place(progs, flat_programs(alg, nodes, n), lambda j: j * b)
    for node in range(nodes):
        _place(progs, _binomial_bcast(b, n), lambda j, node=node: node * b + j)
    return progs


def rail_programs(nodes: int, b: int, n: float, rail_algorithm: str = "ring") -> list[Program]:
    """comm's rail all-reduce on nodes*b ranks (node-major), as comm/nodes.py runs it:
    reduce-scatter inside each node (b - 1 ring rounds of n/b), an all-reduce of its n/b shard among the ranks of
    equal node rank on every node (`rail_algorithm`, the b rails at once, sharing each node's NIC), and an
    all-gather inside the node (b - 1 rounds of n/b)."""
    progs: list[Program] = [[] for _ in range(nodes * b)]
    shard = n / b

    for node in range(nodes):
        _place(progs, _ring_phase(b, shard, True), lambda j, node=node: node * b + j)
    for r in range(b):
        _place(progs, flat_programs(rail_algorithm, nodes, shard), lambda j, r=r: j * b + r)
    for node in range(nodes):
        _place(progs, _ring_phase(b, shard, False), lambda j, node=node: node * b + j)
    return progs


def allgather_programs(p: int, block: float) -> list[Program]:
    """Recursive-doubling all-gather of `block` bytes per rank, folded for any p like comm.allgather.

    Fold: among the first 2r ranks the even ones hand their block to the odd neighbour and get the
    whole result (p blocks) back at the end; virtual rank v of the power-of-two core holds the
    blocks [start[v], start[v + 1]) and each round swaps the accumulated ranges with v ^ mask.
    """
    if isinstance(p, bool) or not isinstance(p, int) or p < 1:
        raise SimError(f"p must be an integer >= 1, got {p!r}")
    q = pof2_floor(p)
    r = p - q
    start = [2 * v if v < r else v + r for v in range(q)] + [p]
    real = [2 * v + 1 if v < r else v + r for v in range(q)]
    progs: list[Program] = [[] for _ in range(p)]
    for i in range(0, 2 * r, 2):
        progs[i].append(_rnd(sends=[(i + 1, block)]))
        progs[i + 1].append(_rnd(recvs=[(i, block, False)]))
    mask = 1
    while mask < q:
        for v in range(q):
            mine, theirs = v & ~(mask - 1), (v ^ mask) & ~(mask - 1)
            out = (start[mine + mask] - start[mine]) * block
            inc = (start[theirs + mask] - start[theirs]) * block
            progs[real[v]].append(_rnd([(real[v ^ mask], out)], [(real[v ^ mask], inc, False)]))
        mask <<= 1
    for i in range(0, 2 * r, 2):
        progs[i + 1].append(_rnd(sends=[(i, p * block)]))
        progs[i].append(_rnd(recvs=[(i + 1, p * block, False)]))
    return progs
