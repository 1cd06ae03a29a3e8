"""Communication hidden behind computation: bucketed gradient all-reduces and overlapped local-SGD syncs (timing)."""
# The fast engine (sim/run.py) calls these for two kinds of sync, both on a per-rank lane that runs one collective at
# a time in order, as comm's helper thread does:
#  * a mini-batch step with gradient buckets: bucket i's gradients are all there at fraction f_i of the step's
#    compute (the trainer's predictor derives f_i from the model's backward FLOPs, `sim run` assumes gradients appear
#    uniformly over the backward, the last 2/3 of the step); its all-reduce starts when the last rank has it ready and
#    the lane is free, and a rank's step ends when both its compute and the last bucket are done;
#  * an overlapped local-SGD sync (tau = overlap_steps): the all-reduce starts when the last rank of its group posts
#    it, the ranks go on computing, and after tau more steps each waits for whatever of it is left.
# What is not modelled: the CPU the communication itself takes from the computation (kernel TCP work, the helper
# thread's reductions), which on shared cores makes the hidden part cost a little compute time.
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from sim.errors import SimError

__all__ = ["BACKWARD_SHARE", "parse_bytes", "uniform_buckets", "check_buckets", "check_overlap_steps",
           "bucket_finish", "expose", "bucketed_step"]

#: Share of a training step that is the backward pass (forward : backward = 1 : 2 in FLOPs), for `sim run`'s
#: uniform bucket readiness when no per-layer profile is given.
BACKWARD_SHARE = 2.0 / 3.0

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MB": 1 << 20, "MIB": 1 << 20,
          "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30}


def parse_bytes(text: str) -> int:
    """'256K' -> 262144 (K, M, G are powers of 1024; a plain number is bytes); ValueError names the text."""
    m = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).upper() if m else ""
    if not m or unit not in _UNITS:
        raise ValueError(f"expected a byte count such as 0, 65536, 64K or 1M, got {text!r}")
    return int(m.group(1)) * _UNITS[unit]


def check_buckets(buckets: Sequence[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    """(bytes, ready fraction) per bucket, in the order they start; fractions in [0, 1], non-decreasing."""
    out = tuple((float(b), float(f)) for b, f in buckets)
    last = 0.0
    for i, (b, f) in enumerate(out):
        if not (b > 0 and 0.0 <= f <= 1.0 and f + 1e-12 >= last):
            raise SimError(f"bucket {i} must have bytes > 0 and a ready fraction in [0, 1] not below the one before "
                           f"it, got ({b!r}, {f!r})")
        last = f
    return out


def check_overlap_steps(tau: int) -> None:
    if isinstance(tau, bool) or not isinstance(tau, int) or tau < 0:
        raise SimError(f"overlap_steps must be an integer >= 0 (0: blocking syncs), got {tau!r}")


def uniform_buckets(total_bytes: float, bucket_bytes: int, first_bucket_bytes: int,
                    backward_share: float = BACKWARD_SHARE) -> tuple[tuple[float, float], ...]:
    """Buckets of a payload whose gradients appear uniformly over the backward pass: the first of
    first_bucket_bytes, then bucket_bytes each (the last one smaller); bucket i ready once backward has produced
    its last byte."""
    if total_bytes <= 0:
        raise SimError(f"total_bytes must be > 0, got {total_bytes!r}")
    for name, v in (("bucket_bytes", bucket_bytes), ("first_bucket_bytes", first_bucket_bytes)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise SimError(f"{name} must be an integer >= 1, got {v!r}")
    out: list[tuple[float, float]] = []
    done = 0.0
    while done < total_bytes:
        n = min(float(first_bucket_bytes if not out else bucket_bytes), total_bytes - done)
        done += n
        out.append((n, (1.0 - backward_share) + backward_share * done / total_bytes))
    return tuple(out)


def bucket_finish(step_start: np.ndarray, step_wall: np.ndarray, fractions: Sequence[float],
                  durations: Sequence[float]) -> float:
    """When the last bucket's all-reduce ends: bucket i starts once every rank has it ready (step_start + f_i
    step_wall, the latest rank) and the one before it has ended, and takes durations[i]."""
    end = -np.inf
    for f, d in zip(fractions, durations):
        ready = float((step_start + f * step_wall).max())
        end = max(end, ready) + d
    return float(end)


def expose(waited: np.ndarray, c_intra: np.ndarray, c_inter: np.ndarray, delay_s: float,
           book: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> None:
    """Book (in place, per rank) the part of a hidden sync that a rank waited for: the sync's delay (which comes
    last) first, then its communication; the rest ran beside computation. book = (intra, inter, delay, hidden)."""
    intra, inter, delay, hidden = book
    on_delay = np.minimum(waited, delay_s)
    on_wire = waited - on_delay
    total = c_intra + c_inter
    share = np.minimum(np.divide(on_wire, total, out=np.zeros(len(waited)), where=total > 0), 1.0)
    intra += c_intra * share
    inter += c_inter * share
    delay += on_delay
    hidden += np.clip(total + delay_s - waited, 0.0, None)


def bucketed_step(clock: np.ndarray, last: np.ndarray, buckets: Sequence[tuple[float, float]], results: Sequence[Any],
                  delay_s: float, book: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """The end of a mini-batch step with gradient buckets: every rank has computed up to `clock`, its last step
    taking `last`; the buckets' collectives (`results`, one CollectiveResult each) run on the lane as they become
    ready, the delay after the last one. Returns the ranks' new clocks and books what they waited for."""
    end = bucket_finish(clock - last, last, [f for _, f in buckets], [r.duration_s for r in results]) + delay_s
    k = len(clock)
    on_links = sum(float(r.inter_s.max()) for r in results)
    total = sum(r.duration_s for r in results)
    expose(np.clip(end - clock, 0.0, None), np.full(k, total - on_links), np.full(k, on_links), delay_s, book)
    return np.asarray(np.maximum(clock, end))
