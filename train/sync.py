"""The trainer's side of every sync: a barrier that separates waiting from communicating, timers, delays, counters."""
from __future__ import annotations

import time
from typing import Any

import torch

from train.backend import LEVELS

__all__ = ["LEVELS", "SyncTimer", "device_sync"]


def device_sync(device: torch.device) -> None:
    """Wait for queued CUDA work so that wall-clock timers measure it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class SyncTimer:
    """The hooks the trainer gives LocalSGD (train/averager.py): it measures, LocalSGD communicates.

    ``before_sync(level)``: a barrier on the level's communicator (time spent there is "wait_s": waiting for slower
    workers), then the communication timer starts. ``after_sync(level, sent, recv)``: the emulated network delay
    of the level (``delays``, seconds), then the counters: syncs, bytes sent and received, comm_s (including the
    delay), delay_s. ``overlapped_sync(...)``: a sync that ran beside computation (bucketed gradients, overlapped
    local SGD): no barrier and no sleep (its delay was part of the request); comm_s counts only the time the caller
    was blocked waiting for it, inflight_s the time from its start to its completion.

    ``timed=False`` (engine virtual: its syncs are means in memory, not communication): no barrier, no delays,
    and comm_s, wait_s, delay_s and inflight_s stay None (not applicable); syncs and bytes are still counted.
    """

    def __init__(self, backend: Any, *, delays: dict[str, float] | None = None, timed: bool = True) -> None:
        self.backend = backend
        self.timed = timed
        self.delays = {lvl: float((delays or {}).get(lvl, 0.0)) for lvl in LEVELS}
        # bytes: handed to the collective per sync by this rank (send buffer); bytes_recv: written into this rank's
        # buffer by the collective from the others (all-gather: (p-1) blocks; all-reduce: the reduced payload)
        zero = 0.0 if timed else None
        self.stats: dict[str, dict[str, Any]] = {
            lvl: {"syncs": 0, "bytes": 0, "bytes_recv": 0, "comm_s": zero, "wait_s": zero, "delay_s": zero,
                  "inflight_s": zero} for lvl in LEVELS}
        self._t0 = 0.0

    def before_sync(self, level: str) -> None:
        if not self.timed:
            return
        t0 = time.perf_counter()
        self.backend.barrier(level)
        self._t0 = time.perf_counter()
        self.stats[level]["wait_s"] += self._t0 - t0

    def after_sync(self, level: str, sent: int, recv: int) -> None:
        st = self.stats[level]
        if self.timed:
            delay = self.delays[level]
            if delay > 0:
                time.sleep(delay)
            st["delay_s"] += delay
            st["comm_s"] += time.perf_counter() - self._t0
        st["syncs"] += 1
        st["bytes"] += sent
        st["bytes_recv"] += recv

    def delay(self, level: str) -> float:
        """The emulated network delay of a sync at `level` (an overlapped sync completes that much later)."""
        return self.delays[level]

    def overlapped_sync(self, level: str, sent: int, recv: int, *, exposed_s: float, inflight_s: float,
                        delay_s: float = 0.0) -> None:
        st = self.stats[level]
        st["comm_s"] += exposed_s
        st["inflight_s"] += inflight_s
        st["delay_s"] += delay_s
        st["syncs"] += 1
        st["bytes"] += sent
        st["bytes_recv"] += recv

    # -- checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"stats": {k: dict(v) for k, v in self.stats.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        inflight = 0.0 if self.timed else None
        self.stats = {k: {"bytes_recv": 0, "inflight_s": inflight, **v} for k, v in state["stats"].items()}
