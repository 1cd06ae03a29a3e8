"""The learning-rate schedule of SPEC section 3: linear scaling, linear warm-up, step decays at sample fractions."""
from __future__ import annotations

import math
from dataclasses import dataclass

from train.errors import TrainError

__all__ = ["LRSchedule"]


@dataclass(kw_only=True, frozen=True)
class LRSchedule:
    """lr(t) = warm-up from `base` to `peak` over `warmup_steps`, then `peak`, divided by `factor` at each decay step.

    During the warm-up lr(t) = base + (peak - base) t / warmup_steps, i.e. the per-iteration increment
    (peak - base) / warmup_steps of the SPEC. When peak <= base there is no warm-up: lr(t) = peak from step 0.
    Decay steps are 0-based steps from which the next division applies: decay fraction f of a T-step run gives
    the step ceil(f T), the first step at which at least a fraction f of all samples has been accessed.
    """

    base: float
    peak: float
    warmup_steps: float
    decay_steps: tuple[int, ...]
    factor: float = 10.0

    def __post_init__(self) -> None:
        for name in ("base", "peak"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise TrainError(f"{name} learning rate must be a finite number > 0, got {v!r}")
        if not (math.isfinite(self.warmup_steps) and self.warmup_steps >= 0):
            raise TrainError(f"warmup_steps must be a finite number >= 0, got {self.warmup_steps!r}")
        if list(self.decay_steps) != sorted(self.decay_steps) or any(s < 0 for s in self.decay_steps):
            raise TrainError(f"decay_steps must be non-negative and sorted, got {list(self.decay_steps)}")
        if not self.factor >= 1:
            raise TrainError(f"factor must be >= 1, got {self.factor!r}")

    @classmethod
    def from_protocol(cls, *, lr: float, ref_batch: int, scaling: str, workers: int, batch: int,
                      warmup_epochs: float, steps_per_epoch: float, total_steps: int,
                      decay_at: tuple[float, ...], factor: float) -> LRSchedule:
        """The SPEC protocol: peak = lr K B / ref_batch (scaling "linear") reached after `warmup_epochs`."""
        peak = lr * workers * batch / ref_batch if scaling == "linear" else lr
        return cls(base=lr, peak=peak, warmup_steps=warmup_epochs * steps_per_epoch,
                   decay_steps=tuple(math.ceil(f * total_steps) for f in decay_at), factor=factor)

    def lr_at(self, step: int) -> float:
        """The learning rate used by 0-based step `step`."""
        if self.peak > self.base and step < self.warmup_steps:
            lr = self.base + (self.peak - self.base) * step / self.warmup_steps
        else:
            lr = self.peak
        for s in self.decay_steps:
            if step >= s:
                lr /= self.factor
        return lr

    @property
    def first_decay(self) -> int | None:
        """The first decay step (post-local SGD switches here by default), or None without decays."""
        return self.decay_steps[0] if self.decay_steps else None
