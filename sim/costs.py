"""Closed-form costs: alpha-beta-gamma all-reduce costs (SPEC section 4) and the paper's eq. (6) (section 5)."""
# Every flat algorithm's cost is linear in (alpha, beta, gamma): ``cost = A alpha + Bc beta + G gamma``.
# :func:`terms` returns the coefficients (A, Bc, G), which is what both the cost functions and the
# least-squares calibration use. ``n`` is the message size in bytes (float allowed).
#
# Non-powers of two (MPICH's fold): with ``p'`` the largest power of two <= p and ``r = p - p'``, the
# even ranks among the first ``2r`` send their whole vector to their odd neighbour (alpha + n beta,
# reduced there: n gamma) and sit out; the ``p'`` remaining ranks run the power-of-two algorithm; the
# result goes back (alpha + n beta). So the fold adds exactly ``2 alpha + 2 n beta + n gamma`` to
# recursive doubling and Rabenseifner. Ring needs no fold. The binomial tree (reduce + broadcast)
# takes ``ceil(lg p)`` rounds each way.
#
# The hierarchical all-reduce (MPICH's default on several nodes) is a binomial reduce inside each node
# (b GPUs), an all-reduce among the node leaders on the inter-node level, then a binomial broadcast
# inside each node.
from __future__ import annotations

import math
from dataclasses import dataclass

from sim.errors import SimError

__all__ = ["FLAT_ALGORITHMS", "AUTO_SHORT_BYTES", "LevelCost", "pof2_floor", "ceil_lg", "terms",
           "allreduce_cost", "allgather_pow2_cost", "auto_algorithm", "hierarchical_cost", "eq6_counts", "eq6"]

FLAT_ALGORITHMS = ("recursive_doubling", "rabenseifner", "ring", "binomial")
#: MPICH switches from recursive doubling to Rabenseifner above about 2 KiB (SPEC section 4).
AUTO_SHORT_BYTES = 2048


@dataclass(kw_only=True, frozen=True)
class LevelCost:
    """alpha (s per message), beta (s per byte), gamma (s per byte reduced) of one network level."""

    alpha: float
    beta: float
    gamma: float

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise SimError(f"{name} must be a finite number >= 0, got {v!r}")


def _check_p(p: int) -> None:
    if isinstance(p, bool) or not isinstance(p, int) or p < 1:
        raise SimError(f"p must be an integer >= 1, got {p!r}")


def pof2_floor(p: int) -> int:
    """Largest power of two <= p."""
    _check_p(p)
    return 1 << (p.bit_length() - 1)


def ceil_lg(p: int) -> int:
    """ceil(log2 p) for p >= 1, exactly."""
    _check_p(p)
    return (p - 1).bit_length()


def terms(algorithm: str, p: int, n: float) -> tuple[float, float, float]:
    """Coefficients (A, Bc, G) with cost = A alpha + Bc beta + G gamma for a flat all-reduce."""
    _check_p(p)
    if not (isinstance(n, (int, float)) and n >= 0):
        raise SimError(f"message bytes must be a number >= 0, got {n!r}")
    if p == 1:
        return 0.0, 0.0, 0.0
    q = pof2_floor(p)
    lgq = float(q.bit_length() - 1)
    fold = p != q
    if algorithm == "recursive_doubling":
        a, b, g = lgq, n * lgq, n * lgq
    elif algorithm == "rabenseifner":
        frac = (q - 1) / q
        a, b, g = 2.0 * lgq, 2.0 * n * frac, n * frac
    elif algorithm == "ring":
        frac = (p - 1) / p
        return 2.0 * (p - 1), 2.0 * n * frac, n * frac
    elif algorithm == "binomial":
        L = float(ceil_lg(p))
        return 2.0 * L, 2.0 * n * L, n * L
    else:
        raise SimError(f"algorithm must be one of {', '.join(FLAT_ALGORITHMS)}, got {algorithm!r}")
    if fold:
        a, b, g = a + 2.0, b + 2.0 * n, g + n
    return a, b, g


def allreduce_cost(algorithm: str, p: int, n: float, level: LevelCost) -> float:
    """Contention-free time of one flat all-reduce of n bytes over p ranks on one level."""
    a, b, g = terms(algorithm, p, n)
    return a * level.alpha + b * level.beta + g * level.gamma


def auto_algorithm(n: float) -> str:
    """MPICH's choice among the node leaders: recursive doubling for short messages, else Rabenseifner."""
    return "recursive_doubling" if n <= AUTO_SHORT_BYTES else "rabenseifner"


def hierarchical_cost(nodes: int, gpus_per_node: int, n: float, intra: LevelCost, inter: LevelCost,
                      leader_algorithm: str = "auto") -> float:
    """Reduce in each node (binomial), all-reduce among node leaders, broadcast in each node (binomial)."""
    _check_p(nodes)
    _check_p(gpus_per_node)
    L = ceil_lg(gpus_per_node)
    alg = auto_algorithm(n) if leader_algorithm == "auto" else leader_algorithm
    reduce = L * (intra.alpha + n * intra.beta + n * intra.gamma)
    bcast = L * (intra.alpha + n * intra.beta)
    return reduce + allreduce_cost(alg, nodes, n, inter) + bcast


def _check_pos_int(name: str, v: object) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise SimError(f"{name} must be an integer >= 1, got {v!r}")


def eq6_counts(*, K: int, servers: int, N: int, B: int, H: int, Hb: int) -> tuple[int, int]:
    """(block-only syncs, global syncs) of eq. (6): ceil(N/(KBH)) - ceil(N/(KBHHb)) and ceil(N/(KBHHb))."""
    for name, v in (("K", K), ("servers", servers), ("N", N), ("B", B), ("H", H), ("Hb", Hb)):
        _check_pos_int(name, v)
    if K % servers:
        raise SimError(f"K must be a multiple of servers={servers}, got K={K}")
    g = -(-N // (K * B * H * Hb))
    return -(-N // (K * B * H)) - g, g


def eq6(*, K: int, servers: int, N: int, B: int, H: int, Hb: int, C1: float, C2: float) -> float:
    """The paper's communication cost, eq. (6); K devices over `servers` servers (K' in the paper)."""
    for name, v in (("C1", C1), ("C2", C2)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            raise SimError(f"{name} must be a finite number >= 0, got {v!r}")
    n_block, n_global = eq6_counts(K=K, servers=servers, N=N, B=B, H=H, Hb=Hb)
    return n_block * C1 * servers * math.log2(K // servers) + n_global * C2 * math.log2(K)



def allgather_pow2_cost(p: int, block: float, level: LevelCost) -> float:
    """Recursive-doubling all-gather of `block` bytes per rank, p a power of two: lg p alpha + (p-1) block beta."""
    _check_p(p)
    if p & (p - 1):
        raise SimError(f"p must be a power of two for the closed form, got {p}")
    return (p.bit_length() - 1) * level.alpha + (p - 1) * block * level.beta
