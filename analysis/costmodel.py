"""The alpha-beta-gamma all-reduce cost model (SPEC section 4), restated here so analysis stays independent."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.errors import InputError
from analysis.files import Record, get, opt, opt_num, read_json

__all__ = [
    "MODELLED",
    "Calibration",
    "allreduce_time",
    "bandwidth_bound_s",
    "load_calibration",
]

# Algorithms whose cost form we know; "native" and "hierarchical" depend on the MPI library's choices.
MODELLED = ("recursive_doubling", "rabenseifner", "ring")


@dataclass(kw_only=True, frozen=True)
class Calibration:
    """Fitted per-message latency alpha (s), transfer time beta (s/byte), reduction time gamma (s/byte)."""

    alpha_s: float
    beta_s_per_byte: float
    gamma_s_per_byte: float = 0.0
    level: str = "intra"
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("alpha_s", "beta_s_per_byte", "gamma_s_per_byte"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise InputError(f"{name} must be a finite number >= 0, got {value!r}")

    @property
    def bandwidth_GBps(self) -> float:
        """Link bandwidth 1/beta in GB/s (1e9 bytes per second); inf when beta = 0 (unlimited)."""
        return math.inf if self.beta_s_per_byte == 0 else 1.0 / self.beta_s_per_byte / 1e9


def _fold(p: int) -> tuple[int, int]:
    """Largest power of two p' <= p and the remainder r = p - p' (ranks folded away)."""
    p2 = 1 << (p.bit_length() - 1)
    return p2, p - p2


def allreduce_time(algorithm: str, n_bytes: float, p: int, cal: Calibration) -> float:
    """Modelled time of one all-reduce of ``n_bytes`` over ``p`` ranks (s); fold for p not a power of 2."""
    if not isinstance(p, int) or p < 1:
        raise InputError(f"p must be an integer >= 1, got {p!r}")
    if n_bytes < 0:
        raise InputError(f"message bytes must be >= 0, got {n_bytes!r}")
    a, b, g, n = cal.alpha_s, cal.beta_s_per_byte, cal.gamma_s_per_byte, float(n_bytes)
    if p == 1:
        return 0.0
    if algorithm == "ring":
        return 2 * (p - 1) * a + 2 * n * (p - 1) / p * b + n * (p - 1) / p * g
    p2, r = _fold(p)
    lg = math.log2(p2)
    # Fold (MPICH variant): an even rank among the first 2r sends its whole vector to its odd
    # neighbour, which reduces it, and gets the result back at the end.
    fold = (2 * a + 2 * n * b + n * g) if r else 0.0
    if algorithm == "recursive_doubling":
        return lg * (a + n * b + n * g) + fold
    if algorithm == "rabenseifner":
        return 2 * lg * a + 2 * n * (p2 - 1) / p2 * b + n * (p2 - 1) / p2 * g + fold
    raise InputError(f"no cost model for algorithm {algorithm!r}; modelled: {', '.join(MODELLED)}")


def bandwidth_bound_s(n_bytes: float, p: int, cal: Calibration) -> float:
    """Lower bound of any all-reduce: 2 (p-1)/p n / bandwidth (s)."""
    return 2 * (p - 1) / p * n_bytes * cal.beta_s_per_byte


_ALPHA = ("alpha_s", "latency_s")
_BETA = ("beta_s_per_byte",)
_BW_BPS = ("bandwidth_Bps", "bandwidth_bytes_per_s", "bandwidth_B_per_s")
_BW_GBPS = ("bandwidth_GBps", "bandwidth_GB_per_s")
_BW_GBITS = ("bandwidth_Gbps", "bandwidth_gbps", "bandwidth_Gbit_per_s")
_GAMMA = ("gamma_s_per_byte", "reduce_s_per_byte", "gamma")
_OVERHEAD = ("overhead_s", "per_message_overhead_s", "message_overhead_s")


def _beta_of(rec: Mapping[str, Any]) -> float | None:
    """beta in s/byte; a bandwidth given as null means unlimited (beta = 0), as in sim topology files."""
    beta = opt_num(rec, _BETA)
    if beta is not None:
        return beta
    for names, scale in ((_BW_BPS, 1.0), (_BW_GBPS, 1e9), (_BW_GBITS, 1e9 / 8)):
        if any(name in rec and rec[name] is None for name in names):
            return 0.0
        bw = opt_num(rec, names)
        if bw is not None:
            if bw <= 0:
                raise InputError(f"{getattr(rec, 'source', '?')}: bandwidth must be > 0, got {bw!r}")
            return 1.0 / (bw * scale)
    return None


def _from_level(rec: Mapping[str, Any], level: str, source: str) -> Calibration:
    alpha = opt_num(rec, _ALPHA)
    beta = _beta_of(rec)
    if alpha is None or beta is None:
        missing = "alpha_s (or latency_s)" if alpha is None else "beta_s_per_byte (or bandwidth_*)"
        raise InputError(f"{source}: level {level!r} is missing key {missing}")
    alpha += opt_num(rec, _OVERHEAD, 0.0) or 0.0
    return Calibration(alpha_s=alpha, beta_s_per_byte=beta,
                       gamma_s_per_byte=opt_num(rec, _GAMMA, 0.0) or 0.0, level=level, source=source)


def load_calibration(path: str | Path, level: str = "intra") -> Calibration:
    """Read alpha, beta, gamma for ``level`` from a calibration / topology JSON file.

    Accepted shapes: flat ``{"alpha_s", "beta_s_per_byte", "gamma_s_per_byte"}``; or per level under
    ``"levels"`` (a mapping of level name to parameters, or a list of objects with a ``"name"``), or
    directly under the level's name. A level gives ``latency_s`` (+ ``overhead_s``) and a bandwidth
    (``bandwidth_Bps`` / ``bandwidth_GBps`` / ``bandwidth_Gbps``) instead of alpha / beta if it likes.
    """
    rec: Record = read_json(path)
    src = str(path)
    levels = opt(rec, ("levels", "fit", "calibration"))
    if isinstance(levels, list):
        named = {str(item.get("name", item.get("level"))): item for item in levels if isinstance(item, dict)}
        levels = named
    if isinstance(levels, Mapping) and level in levels and isinstance(levels[level], Mapping):
        return _from_level(Record.of(levels[level], src), level, src)
    if isinstance(opt(rec, level), Mapping):
        return _from_level(Record.of(get(rec, level), src), level, src)
    if opt_num(rec, _ALPHA) is not None:
        return _from_level(rec, level, src)
    known = sorted(levels) if isinstance(levels, Mapping) else []
    hint = f"; levels in file: {', '.join(known)}" if known else ""
    raise InputError(f"{src}: no calibration for level {level!r} (expected 'levels.{level}' "
                     f"with alpha_s/beta_s_per_byte, or top-level alpha_s){hint}")
