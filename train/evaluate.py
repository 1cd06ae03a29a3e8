"""Loss and accuracy, and the evaluation of the synchronised model on each rank's share of the test set."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import numpy as np
import torch
from torch.nn import functional as F

import comm
from comm.algorithms import chunk_bounds

__all__ = ["batch_metrics", "Evaluator"]


def batch_metrics(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """(mean cross-entropy, correct predictions, predictions) of a batch; sequences count every token.

    A model with one output (logreg-binary) is binary logistic regression: loss log(1 + exp(-b z)) with b = 2 y - 1
    for labels y in {0, 1}, predicted class 1 when z > 0.
    """
    if logits.shape[-1] == 1:
        z, target = logits.reshape(-1), y.reshape(-1)
        loss = F.binary_cross_entropy_with_logits(z, target.to(z.dtype))
        return loss, int(((z.detach() > 0).long() == target).sum()), int(target.numel())
    flat = logits.reshape(-1, logits.shape[-1])
    target = y.reshape(-1)
    loss = F.cross_entropy(flat, target)
    correct = int((flat.detach().argmax(1) == target).sum())
    return loss, correct, int(target.numel())


class Evaluator:
    """Evaluates the average of the workers' parameters without disturbing any worker's own state.

    BatchNorm statistics stay per worker during training; for evaluation `bn_eval` picks "average" (the mean of
    all workers' running statistics) or "rank0" (rank 0's statistics, broadcast). Rank k evaluates test samples
    k, k + K, k + 2K, ...; the sums are all-reduced, so every rank returns the same (loss, accuracy).
    """

    def __init__(self, model: torch.nn.Module, model_fb: Any, *, world: Any, bn_eval: str,
                 x_test: torch.Tensor, y_test: torch.Tensor, device: torch.device, chunk: int = 500,
                 contiguous: bool = False, columns: int = 16,
                 objective: tuple[Any, Any, float, list[Any]] | None = None, algorithm: str = "auto") -> None:
        self.model, self.model_fb, self.world, self.bn_eval = model, model_fb, world, bn_eval
        rank, size = world.Get_rank(), world.Get_size()
        if contiguous:  # a carried-state LSTM: this rank's consecutive block of rows, read as columns (lmstate.py)
            b = chunk_bounds(len(x_test), size)
            self.x, self.y = x_test[b[rank]:b[rank + 1]], y_test[b[rank]:b[rank + 1]]
            self.starts = torch.tensor(chunk_bounds(len(self.x), max(1, min(columns, len(self.x)))))
        else:
            self.x, self.y = x_test[rank::size], y_test[rank::size]
        self.contiguous = contiguous
        self.device, self.chunk = device, chunk
        self.algorithm = algorithm  # the run's --allreduce: the same sums on one node as across nodes
        # (x_train, y_train, weight decay, decayed parameters): f(w) = mean training loss + wd/2 ||w||^2 of the
        # averaged model, each rank over training samples rank, rank + K, ... (not for a carried-state LSTM)
        self.objective = None
        if objective is not None:
            x_tr, y_tr, wd, decayed = objective
            self.objective = (x_tr[rank::size], y_tr[rank::size], float(wd), list(decayed), len(x_tr))
        self.buffers = [b for b in model.buffers() if b.is_floating_point()]
        self.buffer_fb = comm.FlatBuffer(self.buffers) if self.buffers else None

    def _set_eval_state(self) -> None:
        params = self.model_fb.pack()
        if params.is_cuda:
            torch.cuda.synchronize(params.device)
        comm.allreduce(params, op="mean", comm=self.world, algorithm=self.algorithm)
        self.model_fb.unpack()
        if self.buffer_fb is None:
            return
        buf = self.buffer_fb.pack()
        if self.bn_eval == "average":
            if buf.is_cuda:
                torch.cuda.synchronize(buf.device)
            comm.allreduce(buf, op="mean", comm=self.world, algorithm=self.algorithm)
        else:
            host = buf.detach().cpu().numpy().copy()
            self.world.Bcast(host, root=0)
            buf.copy_(torch.from_numpy(host))
        self.buffer_fb.unpack()

    def evaluate(self) -> tuple[float, float]:
        """(test loss, test accuracy) of the synchronised model; collective over the world."""
        loss, acc, _ = self.evaluate_all()
        return loss, acc

    @torch.no_grad()
    def evaluate_all(self) -> tuple[float, float, float | None]:
        """(test loss, test accuracy, objective f(w) or None) of the synchronised model; collective over the
        world. The objective costs a forward pass over the rank's share of the training set."""
        saved_p = [p.detach().clone() for p in self.model_fb.tensors]
        saved_b = [b.clone() for b in self.buffers]
        was_training = self.model.training
        try:
            self._set_eval_state()
            self.model.eval()
            sums = np.zeros(4, dtype=np.float64)
            for _x, y, logits in (self._carried() if self.contiguous else self._chunks()):
                loss, correct, n = batch_metrics(logits, y)
                sums[:3] += (float(loss) * n, correct, n)
            reg = 0.0
            if self.objective is not None:
                x_tr, y_tr, wd, decayed, _ = self.objective
                for _x, y, logits in self._chunks(x_tr, y_tr):
                    loss, _c, n = batch_metrics(logits, y)
                    sums[3] += float(loss) * n
                reg = 0.5 * wd * float(sum((p.double() ** 2).sum().cpu() for p in decayed))
            comm.allreduce(sums, op="sum", comm=self.world, algorithm=self.algorithm)
        finally:
            for p, s in zip(self.model_fb.tensors, saved_p):
                p.copy_(s)
            for b, s in zip(self.buffers, saved_b):
                b.copy_(s)
            self.model.train(was_training)
        f = None if self.objective is None else float(sums[3] / self.objective[4]) + reg
        return float(sums[0] / sums[2]), float(sums[1] / sums[2]), f

    def _chunks(self, xs: torch.Tensor | None = None,
                ys: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        xs = self.x if xs is None else xs
        ys = self.y if ys is None else ys
        for i in range(0, len(xs), self.chunk):
            x, y = xs[i:i + self.chunk].to(self.device), ys[i:i + self.chunk].to(self.device)
            yield x, y, self.model(x)

    def _carried(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Each column's rows in order with the hidden state carried; columns differ in length by at most one
        row and the longer ones come first, so the active columns are always a prefix of the batch."""
        lengths = self.starts[1:] - self.starts[:-1]
        hidden = None
        for step in range(int(lengths.max()) if len(self.x) else 0):
            active = int((lengths > step).sum())
            idx = self.starts[:active] + step
            x, y = self.x[idx].to(self.device), self.y[idx].to(self.device)
            if hidden is not None:
                hidden = tuple(h[:, :active].contiguous() for h in hidden)
            logits, hidden = cast(Any, self.model).forward_carry(x, hidden)  # the LSTM's carried forward
            yield x, y, logits
