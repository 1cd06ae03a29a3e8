"""Each worker's stream of mini-batches: a disjoint slice of one global permutation per epoch, shared seed."""
from __future__ import annotations

import torch

from train.data.dataset import Dataset
from train.errors import TrainError

__all__ = ["WorkerStream", "augment_batch"]


class WorkerStream:
    """Worker `rank` of `size` reads batches of `batch` samples from its slice of a global permutation.

    Epoch e uses the permutation randperm(n_train) seeded with (seed, e), the same on every rank; worker k takes
    positions [k n_local, (k+1) n_local) with n_local = n_train // size (the remainder sits the epoch out, so the
    slices are disjoint and equal). The worker's stream is its slices of epochs 0, 1, 2, ... back to back; step t
    reads stream positions [t B, (t+1) B), so a batch may straddle two epochs and the position is just the step.
    """

    def __init__(self, data: Dataset, *, rank: int, size: int, batch: int, seed: int) -> None:
        self.data, self.rank, self.size, self.batch, self.seed = data, rank, size, batch, seed
        self.n_local = len(data.x_train) // size
        if self.n_local < 1:
            raise TrainError(f"{len(data.x_train)} training samples cannot be split over {size} ranks; "
                             f"use at most {len(data.x_train)} ranks or more data")
        self._epoch = -1
        self._slice = torch.empty(0, dtype=torch.long)

    def _indices(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(len(self.data.x_train), generator=g)
            self._slice = perm[self.rank * self.n_local:(self.rank + 1) * self.n_local]
            self._epoch = epoch
        return self._slice

    def batch_indices(self, step: int) -> torch.Tensor:
        """Training-set indices read by this worker at 0-based `step`."""
        lo, hi = step * self.batch, (step + 1) * self.batch
        parts = []
        while lo < hi:
            epoch, off = divmod(lo, self.n_local)
            take = min(hi - lo, self.n_local - off)
            parts.append(self._indices(epoch)[off:off + take])
            lo += take
        return torch.cat(parts)

    def batch_at(self, step: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, labels) of `step`; CIFAR batches are augmented with `gen` (this rank's generator)."""
        idx = self.batch_indices(step)
        x, y = self.data.x_train[idx], self.data.y_train[idx]
        if self.data.augment:
            x = augment_batch(x, gen)
        return x, y

    def epoch_of(self, step: int) -> float:
        """Epochs completed once `step` has finished (fractional)."""
        return (step + 1) * self.batch / self.n_local


def augment_batch(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with `pad` zero padding and random horizontal flip, per sample, driven by `gen`."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h))                     # n x h
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w))                     # n x w
    cols = torch.where(flip.view(n, 1), cols.flip(1), cols)
    bidx = torch.arange(n).view(n, 1, 1)
    out = padded.permute(0, 2, 3, 1)[bidx, rows.view(n, h, 1), cols.view(n, 1, w)]  # n x h x w x c
    return out.permute(0, 3, 1, 2).contiguous()
