"""The trainer's side of the convex cross-check: the simulator's shared sampler, its step sizes, and f(w)."""
from __future__ import annotations

import torch
from torch.nn import functional as F

from sim.convex.localsgd import step_size
from sim.convex.sampler import Sampler
from train.data.dataset import Dataset
from train.errors import TrainError

__all__ = ["SamplerStream", "cast_dataset", "convex_lr", "objective_value"]


class SamplerStream:
    """Worker `rank`'s batches drawn by sim.convex.sampler.Sampler (mode "iid" or "shuffle"), as the simulator's
    worker `rank` draws them: step t reads training samples Sampler(n, K, B_loc, seed, mode).indices(t)[rank]."""

    def __init__(self, data: Dataset, *, rank: int, size: int, batch: int, seed: int, mode: str) -> None:
        if data.augment:
            raise TrainError(f"the convex sampler serves plain feature data; dataset {data.name!r} is augmented")
        self.data, self.rank = data, rank
        self.sampler = Sampler(n=len(data.x_train), K=size, B_loc=batch, seed=seed, mode=mode)

    def batch_indices(self, step: int) -> torch.Tensor:
        """Training-set indices read by this worker at 0-based `step`."""
        return torch.from_numpy(self.sampler.worker_indices(self.rank, step))

    def batch_at(self, step: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, labels) of `step` (`gen` is unused: nothing is augmented)."""
        idx = self.batch_indices(step)
        return self.data.x_train[idx], self.data.y_train[idx]


def convex_lr(schedule: str, c: float, t: int, n: int, cap: float) -> float:
    """gamma_t of the convex experiment (SPEC section 6), by the simulator's own function: "decay" gives
    min(cap, c n / (t + 1)), "const" gives cap c."""
    return float(step_size(schedule, c, t, n, cap))


@torch.no_grad()
def objective_value(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, weight_decay: float,
                    skip: set[str] | frozenset[str] = frozenset(), chunk: int = 16384) -> float:
    """f(w) = (1/n) sum_i loss_i(w) + (weight_decay / 2) ||w||^2 over all `x` (the objective SGD with this weight
    decay minimises); parameters named in `skip` carry no decay. Loss: logistic for one output, else cross-entropy.

    For logreg-binary on w8a with weight_decay = 1/n this is SPEC section 6's f, the simulator's objective.
    """
    dev = next(model.parameters()).device
    total = torch.zeros((), dtype=torch.float64)
    for lo in range(0, len(x), chunk):
        out = model(x[lo:lo + chunk].to(dev))
        yy = y[lo:lo + chunk].to(dev)
        if out.shape[-1] == 1:
            losses = F.binary_cross_entropy_with_logits(out.reshape(-1), yy.to(out.dtype), reduction="sum")
        else:
            losses = F.cross_entropy(out.reshape(-1, out.shape[-1]), yy.reshape(-1), reduction="sum")
        total += losses.double().cpu()
    reg = sum((p.double() ** 2).sum().cpu() for n_, p in model.named_parameters() if n_ not in skip)
    return float(total / len(x) + 0.5 * weight_decay * reg)


def cast_dataset(data: Dataset, dtype: torch.dtype) -> Dataset:
    """`data` with floating-point inputs cast to `dtype` (in place; a test set that is the training set stays so)."""
    if not data.x_train.is_floating_point() or data.x_train.dtype == dtype:
        return data
    same = data.x_test is data.x_train
    data.x_train = data.x_train.to(dtype)
    data.x_test = data.x_train if same else data.x_test.to(dtype)
    return data
