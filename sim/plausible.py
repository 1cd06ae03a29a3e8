"""Warnings for physically implausible values in topology and machine descriptions (one line each, never fatal)."""
from __future__ import annotations

import logging
from collections.abc import Iterable

__all__ = ["MAX_LATENCY_S", "MIN_BANDWIDTH_GBPS", "MAX_BANDWIDTH_GBPS", "MAX_STEP_S", "level_warnings",
           "step_warnings", "warn_once"]

log = logging.getLogger(__name__)

#: A message latency above one second is a unit slip (microseconds or milliseconds written as seconds).
MAX_LATENCY_S = 1.0
#: 1 Mbit/s and 10 Tbit/s in the files' unit, 1e9 bytes per second.
MIN_BANDWIDTH_GBPS = 1e6 / 8 / 1e9
MAX_BANDWIDTH_GBPS = 10e12 / 8 / 1e9
#: One training step of more than an hour is almost surely a unit slip too.
MAX_STEP_S = 3600.0

_WARNED: set[str] = set()


def level_warnings(where: str, name: str, latency_s: float, bandwidth_GBps: float | None) -> list[str]:
    """Lines for a level whose latency or bandwidth lies outside what any real link has."""
    out = []
    if latency_s > MAX_LATENCY_S:
        out.append(f"{where}: {name} latency_s {latency_s:g} s is implausible for a link (above {MAX_LATENCY_S:g} s; "
                   f"microseconds are 1e-6 s): the prediction will be dominated by it")
    if bandwidth_GBps is not None and not MIN_BANDWIDTH_GBPS <= bandwidth_GBps <= MAX_BANDWIDTH_GBPS:
        out.append(f"{where}: {name} bandwidth_GBps {bandwidth_GBps:g} is implausible (valid links carry 1 Mbit/s to "
                   f"10 Tbit/s, i.e. {MIN_BANDWIDTH_GBPS:g} to {MAX_BANDWIDTH_GBPS:g} GB/s)")
    return out


def step_warnings(where: str, name: str, seconds: Iterable[float]) -> list[str]:
    """A line when a step time exceeds an hour."""
    worst = max(seconds, default=0.0)
    if worst > MAX_STEP_S:
        return [f"{where}: {name} {worst:g} s per step is implausible (above {MAX_STEP_S:g} s, an hour)"]
    return []


def warn_once(lines: Iterable[str]) -> None:
    """Log each line once per process (files are read several times during one command)."""
    for line in lines:
        if line not in _WARNED:
            _WARNED.add(line)
            log.warning("%s", line)
