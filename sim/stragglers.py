"""Straggler models: seeded per-worker, per-step slowdown factors of the compute time."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim.errors import SimError

__all__ = ["Stragglers", "STRAGGLER_KINDS", "parse_stragglers"]

STRAGGLER_KINDS = ("none", "random", "fixed")


@dataclass(kw_only=True)
class Stragglers:
    """Compute-time multipliers.

    kind "random": each (worker, step) is slowed by `slowdown` with probability `prob`, drawn from
    numpy's default_rng(seed) one step (a row of K uniforms) at a time, in step order.
    kind "fixed": worker `rank` is always `slowdown` times slower. kind "none": all factors are 1.
    """

    kind: str = "none"
    prob: float = 0.0
    slowdown: float = 1.0
    rank: int = 0
    seed: int = 0
    _rng: np.random.Generator | None = field(init=False, repr=False, default=None)
    _next_step: int = field(init=False, repr=False, default=0)

    def __post_init__(self) -> None:
        if self.kind not in STRAGGLER_KINDS:
            raise SimError(f"straggler kind must be one of {', '.join(STRAGGLER_KINDS)}, got {self.kind!r}")
        if isinstance(self.prob, bool) or not isinstance(self.prob, (int, float)) or not 0 <= self.prob <= 1:
            raise SimError(f"straggler prob must be a number in [0, 1], got {self.prob!r}")
        if isinstance(self.slowdown, bool) or not isinstance(self.slowdown, (int, float)) \
                or not math.isfinite(self.slowdown) or self.slowdown < 1:
            raise SimError(f"straggler slowdown must be a finite number >= 1, got {self.slowdown!r}")
        for name in ("rank", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise SimError(f"straggler {name} must be an integer >= 0, got {v!r}")
        self.reset()

    @property
    def active(self) -> bool:
        return self.kind != "none" and self.slowdown != 1 and (self.kind == "fixed" or self.prob > 0)

    def reset(self) -> None:
        """Rewind the random stream to step 0."""
        self._rng = np.random.default_rng(self.seed)
        self._next_step = 0

    def check_workers(self, K: int) -> None:
        if self.kind == "fixed" and self.rank >= K:
            raise SimError(f"straggler rank must be < K={K}, got {self.rank}")

    def block(self, n_steps: int, K: int) -> np.ndarray:
        """Factors of the next `n_steps` steps (rows) for K workers (columns), continuing the stream."""
        self._next_step += n_steps
        if self.kind == "random":
            assert self._rng is not None
            return np.where(self._rng.random((n_steps, K)) < self.prob, float(self.slowdown), 1.0)
        f = np.ones((n_steps, K))
        if self.kind == "fixed":
            f[:, self.rank] = float(self.slowdown)
        return f

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "prob": self.prob, "slowdown": self.slowdown, "rank": self.rank,
                "seed": self.seed}


def parse_stragglers(text: str | None, seed: int = 0) -> Stragglers:
    """Parse the CLI form: "none", "random:PROB:SLOWDOWN", "fixed:RANK:SLOWDOWN" or "RANK:SLOWDOWN" (fixed)."""
    if text is None or text == "none":
        return Stragglers(seed=seed)
    parts = text.split(":")
    try:
        if parts[0] == "random" and len(parts) == 3:
            return Stragglers(kind="random", prob=float(parts[1]), slowdown=float(parts[2]), seed=seed)
        if parts[0] == "fixed" and len(parts) == 3:
            return Stragglers(kind="fixed", rank=int(parts[1]), slowdown=float(parts[2]), seed=seed)
        if len(parts) == 2:  # the trainer's --straggler RANK:FACTOR
            return Stragglers(kind="fixed", rank=int(parts[0]), slowdown=float(parts[1]), seed=seed)
    except ValueError as e:
        if isinstance(e, SimError):
            raise
    raise SimError(f"straggler must be 'none', 'random:PROB:SLOWDOWN', 'fixed:RANK:SLOWDOWN' or 'RANK:SLOWDOWN', "
                   f"got {text!r}")
