"""Step-time jitter: seeded per-(worker, step) multipliers of the compute time, mean 1 (lognormal or resampled)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import SimError

__all__ = ["JITTER_KINDS", "StepJitter", "parse_jitter", "lognormal_params"]

JITTER_KINDS = ("none", "lognormal", "empirical")
#: Distinct stream from the stragglers' (which use default_rng(seed)), so adding jitter changes no straggler.
_STREAM = 0x6A177E5


def lognormal_params(cv: float) -> tuple[float, float]:
    """(mu, sigma) of the lognormal with mean 1 and coefficient of variation `cv`."""
    s2 = math.log1p(cv * cv)
    return -0.5 * s2, math.sqrt(s2)


@dataclass(kw_only=True)
class StepJitter:
    """Multipliers of every (worker, step) compute time, drawn independently with mean 1.

    kind "lognormal": lognormal with mean 1 and coefficient of variation `cv` (fitted from a measured CV).
    kind "empirical": measured step times divided by their mean, resampled uniformly with replacement.
    kind "none": all 1 (today's deterministic compute). Draws come from numpy's default_rng((seed, stream)),
    one step (a row of K) after another in step order, so both engines see the same numbers.
    """

    kind: str = "none"
    cv: float = 0.0
    samples: tuple[float, ...] = ()
    seed: int = 0
    _rng: np.random.Generator | None = field(init=False, repr=False, default=None)
    _norm: np.ndarray | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        if self.kind not in JITTER_KINDS:
            raise SimError(f"jitter kind must be one of {', '.join(JITTER_KINDS)}, got {self.kind!r}")
        if isinstance(self.cv, bool) or not isinstance(self.cv, (int, float)) or not math.isfinite(self.cv) \
                or self.cv < 0:
            raise SimError(f"jitter cv must be a finite number >= 0, got {self.cv!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise SimError(f"jitter seed must be an integer >= 0, got {self.seed!r}")
        self.samples = tuple(self.samples)
        if self.kind == "empirical":
            if len(self.samples) < 2:
                raise SimError(f"empirical jitter needs >= 2 measured step times, got {len(self.samples)}")
            for v in self.samples:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                    raise SimError(f"measured step times must be finite numbers > 0, got {v!r}")
            arr = np.asarray(self.samples, dtype=float)
            self._norm = arr / arr.mean()
            self.cv = float(arr.std() / arr.mean())
        self.reset()

    @property
    def active(self) -> bool:
        return self.kind != "none" and self.cv > 0

    def reset(self) -> None:
        """Rewind the random stream to step 0."""
        self._rng = np.random.default_rng((self.seed, _STREAM))

    def block(self, n_steps: int, K: int) -> np.ndarray:
        """Multipliers of the next `n_steps` steps (rows) for K workers (columns), continuing the stream."""
        assert self._rng is not None
        if not self.active:
            return np.ones((n_steps, K))
        if self.kind == "lognormal":
            mu, sigma = lognormal_params(self.cv)
            return np.exp(mu + sigma * self._rng.standard_normal((n_steps, K)))
        assert self._norm is not None
        idx = (self._rng.random((n_steps, K)) * len(self._norm)).astype(np.int64)
        return self._norm[np.minimum(idx, len(self._norm) - 1)]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "cv": self.cv, "samples": len(self.samples), "seed": self.seed}


def _samples_from(path: str) -> list[float]:
    """Step times from a JSON file: a list of seconds, or a machine file's step.samples_s."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SimError(f"cannot read step times from {path!r}: {e}") from None
    if isinstance(obj, dict):
        obj = (obj.get("step") or {}).get("samples_s")
    if not isinstance(obj, list):
        raise SimError(f"{path!r} must hold a JSON list of step seconds or a machine file with step.samples_s")
    return obj


def parse_jitter(text: str | None, seed: int = 0) -> StepJitter:
    """The CLI form: "none", "lognormal:CV" or "empirical:FILE" (a JSON list of step seconds or a machine file)."""
    if text is None or text == "none":
        return StepJitter(seed=seed)
    kind, _, arg = text.partition(":")
    if kind == "lognormal" and arg:
        try:
            cv = float(arg)
        except ValueError:
            cv = None
        if cv is not None:
            return StepJitter(kind="lognormal", cv=cv, seed=seed)
    if kind == "empirical" and arg:
        return StepJitter(kind="empirical", samples=tuple(_samples_from(arg)), seed=seed)
    raise SimError(f"jitter must be 'none', 'lognormal:CV' (e.g. lognormal:0.1) or 'empirical:FILE', got {text!r}")
