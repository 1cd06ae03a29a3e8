"""DiLoCo's outer optimizer: a torch optimizer stepping the anchor on the pseudo-gradient anchor - avg(x)."""
# At every global sync LocalSGD sets anchor.grad = anchor - avg_k(x_k) and calls the outer optimizer's step()
# (DiLoCo, Douillard et al. 2023: Nesterov SGD, lr 0.7, momentum 0.9; torchft's DiLoCo(outer_optimizer=...)). Plain
# "sgd" with momentum beta and lr alpha is SlowMo(alpha, beta) for a constant base learning rate gamma (SlowMo keeps
# its buffer in gradient units, divided by gamma; with gamma a power of two the two are bitwise equal, tested).
from __future__ import annotations

from typing import Any

import torch

from train.errors import TrainError

__all__ = ["OUTER_OPTIMIZERS", "make_outer"]

#: Outer optimizers by name (DiLoCo: Nesterov SGD, lr 0.7, momentum 0.9); a factory f(params) -> Optimizer works too.
OUTER_OPTIMIZERS = ("sgd", "nesterov")


def make_outer(spec: Any, anchor: torch.Tensor, lr: float, momentum: float) -> torch.optim.Optimizer:
    """The outer optimizer over the flat anchor: by name, or built by the caller's factory."""
    if isinstance(spec, str):
        if spec not in OUTER_OPTIMIZERS:
            raise TrainError(f"outer_optimizer must be one of {', '.join(OUTER_OPTIMIZERS)} or a factory "
                             f"f(params) -> torch.optim.Optimizer, got {spec!r}")
        for name, v, lo, hi in (("outer_lr", lr, 0.0, 100.0), ("outer_momentum", momentum, 0.0, 0.999)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi or \
                    (name == "outer_lr" and v == 0):
                raise TrainError(f"{name} must be a number in {'(' if name == 'outer_lr' else '['}{lo:g}, {hi:g}], "
                                 f"got {v!r}")
        return torch.optim.SGD([anchor], lr=float(lr), momentum=float(momentum), dampening=0.0,
                               nesterov=spec == "nesterov" and momentum > 0)
    if callable(spec):
        opt = spec([anchor])
        if not isinstance(opt, torch.optim.Optimizer):
            raise TrainError(f"outer_optimizer factory must return a torch.optim.Optimizer, got {type(opt).__name__}")
        return opt
    raise TrainError(f"outer_optimizer must be one of {', '.join(OUTER_OPTIMIZERS)} or a factory, got {spec!r}")
