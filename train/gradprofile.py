"""When backward produces each gradient: readiness from per-module FLOPs, and the gradient buckets the trainer makes."""
# For the simulator's bucketed mini-batch steps (sim/overlap.py). A step is forward (F FLOPs) then backward (about
# 2 F); backward visits the modules in the reverse order of the forward and spends about twice a module's forward
# FLOPs on it. A parameter's gradient is accumulated once backward has finished its module, so its readiness, as a
# fraction of the step, is (F + 2 * forward FLOPs of its module and of every module that ran after it) / 3 F. The
# FLOPs are torch's FlopCounterMode per leaf module (the SPEC table's counting); modules without counted FLOPs
# (BatchNorm, activations) take no time. Nothing here is fitted to measured runs.
from __future__ import annotations

from collections.abc import Sequence

import torch

from train.buckets import plan_buckets

__all__ = ["grad_readiness", "predicted_buckets"]


def grad_readiness(model: torch.nn.Module, x: torch.Tensor) -> tuple[tuple[int, float], ...]:
    """(bytes, ready fraction of the step) of every parameter that requires grad, in reverse registration order
    (the order GradientBuckets takes them). Runs one forward pass of `x` under torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    order: list[str] = []
    names = {m: n for n, m in model.named_modules()}
    hooks = [m.register_forward_hook(lambda m, _i, _o: order.append(names[m]))
             for m in model.modules() if not list(m.children())]
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    counts = counter.get_flop_counts()
    flops = {n: float(sum(counts.get(n, {}).values())) for n in order}
    prefix = type(model).__name__  # FlopCounterMode names modules from the root's class name
    for n in order:
        key = f"{prefix}.{n}" if n else prefix
        flops[n] = float(sum(counts.get(key, {}).values())) or flops[n]
    total = sum(flops[n] for n in order)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if total <= 0 or not order:  # nothing counted: gradients appear evenly over the backward
        k = len(params)
        return tuple((p.numel() * p.element_size(), (1.0 + 2.0 * (i + 1) / k) / 3.0)
                     for i, (_, p) in enumerate(reversed(params)))
    last_run = {n: i for i, n in enumerate(order)}  # the module's last forward (a shared module runs twice)
    after = [0.0] * (len(order) + 1)  # FLOPs of modules run at or after position i
    for i in range(len(order) - 1, -1, -1):
        after[i] = after[i + 1] + flops[order[i]]
    out = []
    for name, p in reversed(params):
        module = name.rpartition(".")[0]
        pos = last_run.get(module)
        if pos is None:  # a parameter of a non-leaf module: ready with the earliest of its leaves
            pos = min((i for n, i in last_run.items() if n.startswith(module + ".") or not module), default=0)
        out.append((p.numel() * p.element_size(), min(1.0, (total + 2.0 * after[pos]) / (3.0 * total))))
    return tuple(out)


def predicted_buckets(grads: Sequence[tuple[int, float]], bucket_bytes: int,
                      first_bucket_bytes: int) -> tuple[tuple[float, float], ...]:
    """The trainer's buckets (train.buckets.plan_buckets) as (bytes, ready fraction): a bucket is ready with its
    last gradient; the fractions are made non-decreasing, as buckets start in order."""
    plan = plan_buckets([n for n, _ in grads], bucket_bytes, first_bucket_bytes)
    out, last = [], 0.0
    for idx in plan:
        ready = max(max(grads[i][1] for i in idx), last)
        out.append((float(sum(grads[i][0] for i in idx)), ready))
        last = ready
    return tuple(out)
