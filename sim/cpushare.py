"""Ranks that share one machine's cores: processor sharing among the ranks that are computing at each moment."""
# A rank's compute is work: seconds it would take alone on a core. While n ranks compute, and `background` other
# runnable processes compete, each computing rank progresses at min(1, cores / (n + background)) seconds of work
# per second (the kernel's fair scheduler, at the time scale of a training step). A rank that has reached a sync
# waits there and gives up its core (MPICH with MPIR_CVAR_ENABLE_HEAVY_YIELD=1), so the ranks still computing
# speed up: with K ranks all busy the step takes s = max(cores, K + background) / cores times its work, but a
# straggler or a rank that drew a long step finishes its last steps faster, once the others wait.
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.errors import SimError

__all__ = ["SharedCPU"]


@dataclass(frozen=True, kw_only=True)
class SharedCPU:
    """`cores` cores shared fairly by the computing ranks and `background` other runnable processes."""

    cores: int
    background: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.cores, bool) or not isinstance(self.cores, int) or self.cores < 1:
            raise SimError(f"cores must be an integer >= 1, got {self.cores!r}")
        b = self.background
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b) or b < 0:
            raise SimError(f"background load must be a finite number >= 0, got {b!r}")

    def rate(self, active: int) -> float:
        """Seconds of work per second of each of `active` computing ranks."""
        return min(1.0, self.cores / (active + self.background)) if active > 0 else 1.0

    def finish(self, start: np.ndarray, work: np.ndarray) -> np.ndarray:
        """When each rank finishes `work` seconds of work begun at `start` (processor sharing; exact)."""
        start = np.asarray(start, dtype=float)
        work = np.asarray(work, dtype=float)
        if start.shape != work.shape or start.ndim != 1:
            raise SimError(f"start and work must be 1-d arrays of one shape, got {start.shape} and {work.shape}")
        out = start.copy()
        order = list(np.argsort(start, kind="stable"))
        left: dict[int, float] = {}      # computing rank -> remaining work
        now, i, n = 0.0, 0, len(order)
        while i < n or left:
            if not left:                 # idle until the next rank starts
                now = max(now, float(start[order[i]]))
            while i < n and start[order[i]] <= now:
                k = int(order[i])
                i += 1
                if work[k] > 0:
                    left[k] = float(work[k])
                else:
                    out[k] = float(start[k])
            if not left:
                continue
            r = self.rate(len(left))
            k_min = min(left, key=left.__getitem__)
            t_done = now + left[k_min] / r
            t_next = float(start[order[i]]) if i < n else math.inf
            t = min(t_done, t_next)
            done = (t - now) * r
            now = t
            for k in list(left):
                left[k] -= done
                if (k == k_min and t_done <= t_next) or left[k] <= 1e-15 * max(1.0, work[k]):
                    out[k] = now
                    del left[k]
        return out
