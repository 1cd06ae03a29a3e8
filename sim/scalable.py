"""One collective at any scale: the event engine's timing computed round by round in numpy, exact where certified."""
# The event engine (sim/engine.py) runs every rank's program message by message. Where no link is ever shared by
# flows that could get different rates, its times follow a recurrence that numpy evaluates a round at a time for all
# ranks at once (T[i]: when rank i starts the round):
#     begin    = max(T[src], T[dst])                       the send starts once the receiver has posted its receive
#     deliver  = begin + overhead + bytes / rate + latency  rate = 1 / beta, or 1 / (c beta) for c flows sharing
#     T'[i]    = max(deliver of its send, deliver of its receive) + reduced bytes x gamma
# The recurrence is exact when every inter-node flow shares its NIC (send and receive direction) only with flows that
# start at the same moment, carry as many bytes, and whose links all carry the same number c of such flows: then
# max-min fair sharing gives each 1 / c of the link from start to end and none changes rate (FIFO links allow c = 1
# only). Intra-node ports need no check: a rank has at most one message in flight each way (rendezvous). The
# executor checks this certificate on every round (same start and size per link, equal counts at both ends, no
# overlap with another round's flows on a link) and answers None where it fails; the caller then runs the event
# engine. Rounds repeated many times (rings) run on one period of ranks when the start times repeat with it, and
# once every rank advances by the same amount per round the remaining rounds are extrapolated.
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.rounds import Round, collective_rounds
from sim.topology import Level, Topology

__all__ = ["RoundsOutcome", "run_rounds", "simulate_rounds", "union_measure", "EXTRAPOLATE_AFTER"]

#: Consecutive rounds with one common advance of every rank before the rest of a repeated round is extrapolated.
EXTRAPOLATE_AFTER = 4
#: Relative tolerance of "the same start", "no overlap" and "the same advance" (float noise of sums of times).
_TOL = 1e-12


@dataclass(kw_only=True)
class RoundsOutcome:
    """Per-rank finish times, the inter-node message intervals (begin, deliver) and the bytes per level."""

    finish_s: np.ndarray
    inter_begin: np.ndarray
    inter_end: np.ndarray
    bytes_intra: float
    bytes_inter: float
    messages: int


def union_measure(begin: np.ndarray, end: np.ndarray, his: np.ndarray) -> np.ndarray:
    """For each h in `his`: the length of the union of the intervals [begin, end] clipped to [0, h] (vectorised
    engine.interval_measure)."""
    his = np.asarray(his, dtype=float)
    keep = end > np.maximum(begin, 0.0)
    if not keep.any():
        return np.zeros_like(his)
    order = np.argsort(begin[keep], kind="stable")
    b = np.maximum(begin[keep][order], 0.0)
    e = np.maximum.accumulate(end[keep][order])
    new = np.concatenate(([True], b[1:] > e[:-1]))        # a segment starts where the earlier ones have ended
    first = np.flatnonzero(new)
    last = np.concatenate((first[1:] - 1, [b.size - 1]))
    starts, ends = b[first], e[last]
    full = np.concatenate(([0.0], np.cumsum(ends - starts)))
    k = np.searchsorted(starts, his, side="right")
    j = np.maximum(k - 1, 0)
    part = np.where(k > 0, np.minimum(his, ends[j]) - starts[j], 0.0)
    return full[j] * (k > 0) + np.maximum(part, 0.0)


class _Uncertified(Exception):
    """The round breaks the certificate: its flows could change rate; the event engine must run it."""


class _Links:
    """Per-level constants and the per-NIC occupancy (end of the last flow) for the overlap check."""

    def __init__(self, topo: Topology, n_nodes: int) -> None:
        self.fair = topo.link_sharing == "fair"
        lv: tuple[Level, Level] = (topo.intra, topo.inter)
        self.lat = np.array([v.latency_s for v in lv])
        self.ovh = np.array([v.overhead_s for v in lv])
        self.beta = np.array([v.beta for v in lv])
        self.gamma = np.array([v.gamma_s_per_byte for v in lv])
        self.tx_end = np.full(n_nodes, -np.inf)
        self.rx_end = np.full(n_nodes, -np.inf)


def _same_per_group(keys: np.ndarray, *vals: np.ndarray) -> bool:
    """Whether each of `vals` is constant (to _TOL) within every group of equal `keys`."""
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    cut = np.flatnonzero(np.diff(k)) + 1
    starts = np.concatenate(([0], cut))
    for v in vals:
        s = v[order]
        hi, lo = np.maximum.reduceat(s, starts), np.minimum.reduceat(s, starts)
        if np.any(hi - lo > _TOL * np.maximum(1.0, np.abs(hi))):
            return False
    return True


@dataclass(frozen=True, eq=False)
class _Msgs:
    """One round ready to run: local src and dst indices, bytes, level (1 inter), NIC ids of both ends, reduce."""

    src: np.ndarray
    dst: np.ndarray
    nbytes: np.ndarray
    inter: np.ndarray
    txn: np.ndarray
    rxn: np.ndarray
    reduce: bool
    active: np.ndarray  # ranks with a message in this round


def _compile(src: np.ndarray, dst: np.ndarray, nbytes: np.ndarray, inter: np.ndarray, txn: np.ndarray,
             rxn: np.ndarray, reduce: bool, size: int) -> _Msgs:
    active = np.zeros(size, dtype=bool)
    active[src] = True
    active[dst] = True
    return _Msgs(src=src, dst=dst, nbytes=nbytes, inter=inter, txn=txn, rxn=rxn, reduce=reduce, active=active)


def _step(T: np.ndarray, m: _Msgs, n_nodes: int, links: _Links,
          inter_log: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """One round: the new start times T of the next round."""
    s, d, nb, inter = m.src, m.dst, m.nbytes, m.inter
    lvl = inter.astype(np.int64)
    begin = np.maximum(T[s], T[d])
    beta = links.beta[lvl]
    c = np.ones(s.size)
    any_inter = bool(inter.any())
    shared = any_inter and (links.beta[1] > 0 or not links.fair)   # flows that occupy a NIC
    if shared:
        ns, nd = m.txn[inter], m.rxn[inter]
        ctx = np.bincount(ns, minlength=n_nodes)[ns]
        crx = np.bincount(nd, minlength=n_nodes)[nd]
        if np.any(ctx != crx) or (not links.fair and np.any(ctx > 1)):
            raise _Uncertified
        b_i, n_i = begin[inter], nb[inter]
        if ctx.max() > 1 and not (_same_per_group(ns, b_i, n_i) and _same_per_group(nd, b_i, n_i)):
            raise _Uncertified
        c[inter] = ctx
        # the NIC is busy from the flow's start to its end: no flow of another round may overlap it
        if links.fair:
            busy_from = b_i + links.ovh[1]
            busy_to = busy_from + n_i / ((1.0 / links.beta[1]) / ctx)
        else:
            busy_from = b_i
            busy_to = b_i + (links.ovh[1] + n_i * links.beta[1])
        tol = _TOL * np.maximum(1.0, np.abs(busy_from))
        if np.any(busy_from < links.tx_end[ns] - tol) or np.any(busy_from < links.rx_end[nd] - tol):
            raise _Uncertified
        links.tx_end[ns] = busy_to   # flows sharing a NIC end together (certified above)
        links.rx_end[nd] = busy_to
    ovh, lat = links.ovh[lvl], links.lat[lvl]
    if links.fair:  # as engine.Network.transfer: overhead, the flow at its fair rate, then the latency
        with np.errstate(divide="ignore", invalid="ignore"):
            wire = np.where(nb * beta > 0, nb / ((1.0 / np.where(beta > 0, beta, 1.0)) / c), 0.0)
        deliver = ((begin + ovh) + wire) + lat
    else:
        deliver = (begin + (ovh + nb * beta)) + lat
    if any_inter:
        inter_log.append((begin[inter], deliver[inter]))
    done = np.full(T.size, -np.inf)
    done[s] = deliver
    got = np.full(T.size, -np.inf)
    got[d] = deliver
    np.maximum(done, got, out=done)
    new = np.where(m.active, done, T)
    if m.reduce:
        red = nb * links.gamma[lvl]
        pos = red > 0
        new[d[pos]] += red[pos]
    return new


def _periodic(T: np.ndarray, P: int) -> bool:
    return T.size % P == 0 and bool(np.all(T.reshape(-1, P) == T[:P]))


def _fresh(links: _Links, n_nodes: int) -> _Links:
    """A copy of `links` with fresh NIC occupancy for n_nodes nodes (one period's worth)."""
    out = object.__new__(_Links)
    out.__dict__.update(links.__dict__)
    out.tx_end = np.full(n_nodes, -np.inf)
    out.rx_end = np.full(n_nodes, -np.inf)
    return out


def _run_round(T: np.ndarray, rd: Round, node: np.ndarray, n_nodes: int, b: int, contiguous: bool,
               links: _Links, inter_log: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """`rd.repeat` rounds; on one period of ranks when the round and T repeat with it (whole nodes only)."""
    p = T.size
    P = math.lcm(rd.period, b) if rd.period and contiguous else 0
    if rd.repeat > 1 and P and p > P and p % P == 0 and _periodic(T, P):
        keep = rd.src < P
        s, d = rd.src[keep], rd.dst[keep]
        n_per = P // b
        m = _compile(s, d % P, rd.nbytes[keep], (s // b) != (d // b), (s // b) % n_per, (d // b) % n_per,
                     rd.reduce, P)
        sub = _fresh(links, n_per)
        sub.tx_end[:] = links.tx_end.reshape(-1, n_per).max(axis=0)   # the busiest image of each node
        sub.rx_end[:] = links.rx_end.reshape(-1, n_per).max(axis=0)
        t = _iterate(T[:P].copy(), m, n_per, rd.repeat, sub, inter_log)
        links.tx_end[:] = np.resize(sub.tx_end, n_nodes)
        links.rx_end[:] = np.resize(sub.rx_end, n_nodes)
        return np.tile(t, p // P)
    m = _compile(rd.src, rd.dst, rd.nbytes, node[rd.src] != node[rd.dst], node[rd.src], node[rd.dst], rd.reduce, p)
    return _iterate(T, m, n_nodes, rd.repeat, links, inter_log)


def _iterate(T: np.ndarray, m: _Msgs, n_nodes: int, count: int, links: _Links,
             inter_log: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """`count` rounds of m; extrapolated once every active rank has advanced alike EXTRAPOLATE_AFTER times."""
    steady, prev, k = 0, None, 0
    act = m.active
    while k < count:
        new = _step(T, m, n_nodes, links, inter_log)
        k += 1
        adv = (new - T)[act]
        T = new
        a = float(adv[0]) if adv.size else 0.0
        uniform = adv.size > 0 and bool(np.all(np.abs(adv - a) <= _TOL * np.maximum(1.0, np.abs(T[act]))))
        steady = steady + 1 if uniform and prev is not None and abs(a - prev) <= _TOL * max(1.0, abs(a)) else 0
        prev = a if uniform else None
        if steady >= EXTRAPOLATE_AFTER and k < count:
            # every active rank advances by `a` per round: a fixed point of the round's (max, +) map, so the rest
            # of the rounds shift everything by `a` each: start times, message intervals and NIC occupancy
            left = count - k
            if m.inter.any():   # the last entry of the log is this round's
                last_b, last_e = inter_log[-1]
                shift = a * np.arange(1, left + 1)
                inter_log.append(((last_b[:, None] + shift).ravel(), (last_e[:, None] + shift).ravel()))
                links.tx_end[m.txn[m.inter]] += a * left
                links.rx_end[m.rxn[m.inter]] += a * left
            T = T.copy()
            T[act] += a * left
            return T
    return T


def run_rounds(rounds: list[Round], topo: Topology, ranks: tuple[int, ...]) -> RoundsOutcome | None:
    """Execute `rounds` on the group `ranks` of `topo` from a common start at 0; None where not certified."""
    p = len(ranks)
    b = topo.gpus_per_node
    glob = np.asarray(ranks, dtype=np.int64)
    node_g = glob // b
    _, node = np.unique(node_g, return_inverse=True)
    node = node.astype(np.int64)
    n_nodes = int(node.max()) + 1 if p else 0
    contiguous = p % b == 0 and p > 0 and glob[0] % b == 0 and bool(np.all(np.diff(glob) == 1))
    links = _Links(topo, n_nodes)
    T = np.zeros(p)
    inter_log: list[tuple[np.ndarray, np.ndarray]] = []
    b_intra = b_inter = 0.0
    msgs = 0
    try:
        for rd in rounds:
            lvl = node[rd.src] != node[rd.dst]
            tot = float(rd.nbytes.sum()) * rd.repeat
            b_inter += float(rd.nbytes[lvl].sum()) * rd.repeat
            b_intra += tot - float(rd.nbytes[lvl].sum()) * rd.repeat
            msgs += rd.messages
            T = _run_round(T, rd, node, n_nodes, b, contiguous, links, inter_log)
    except _Uncertified:
        return None
    if inter_log:
        ib = np.concatenate([x for x, _ in inter_log])
        ie = np.concatenate([y for _, y in inter_log])
    else:
        ib = ie = np.zeros(0)
    return RoundsOutcome(finish_s=T, inter_begin=ib, inter_end=ie, bytes_intra=b_intra, bytes_inter=b_inter,
                         messages=msgs)


def simulate_rounds(topo: Topology, ranks: tuple[int, ...], algorithm: str, nbytes: float,
                    leader: str = "auto") -> RoundsOutcome | None:
    """The collective's outcome from its round tables, or None where the certificate fails."""
    return run_rounds(collective_rounds(algorithm, len(ranks), nbytes, topo.gpus_per_node, leader), topo, ranks)
