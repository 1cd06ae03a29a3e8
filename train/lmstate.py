"""Truncated BPTT for the LSTM language model: contiguous text per worker and a hidden state carried across steps.

With `--lm-state carry` (the default on WikiText-2) the trainer follows the usual word-language-model protocol
instead of treating sequences like images:
- Worker k of K owns the contiguous shard of sequences [k n, (k+1) n), n = n_train // K (the WikiText-2 loader
  cuts the token stream into consecutive rows of bptt tokens, so row i + 1 continues row i).
- The shard is read as B columns of m = n // B consecutive rows: step t reads row (t mod m) of every column, so
  each batch row continues the previous step's row in the text. The last n - m B rows of a shard go unused.
- The hidden state is carried from step to step (detached: gradients stop at the step), and restarts at zero
  where a column starts again (t mod m = 0). Model syncs average the parameters only; each worker keeps its own
  hidden state, which checkpoints save, so `--resume` stays bit-identical.
- The order is the same every epoch: shuffling would cut the text the state is carried along.
Evaluation (train/evaluate.py) reads each rank's contiguous block of the test set the same way, with its own
zero-started state per column, so test perplexity exp(loss) is measured with context, as the protocol's is.
"""
from __future__ import annotations

from typing import Any

import torch

from train.data.dataset import Dataset
from train.errors import TrainError

__all__ = ["ContiguousStream", "CarriedState"]


class ContiguousStream:
    """Worker `rank` of `size` reads its shard of the training rows as `batch` contiguous columns."""

    def __init__(self, data: Dataset, *, rank: int, size: int, batch: int) -> None:
        self.data = data
        n_local = len(data.x_train) // size
        self.m = n_local // batch
        if self.m < 1:
            raise TrainError(f"lm_state carry needs at least batch_size {batch} sequences per worker, but "
                             f"{len(data.x_train)} sequences over {size} ranks give {n_local}; use a smaller "
                             f"--batch-size, fewer ranks or --lm-state reset")
        self.columns = rank * n_local + torch.arange(batch) * self.m

    def batch_indices(self, step: int) -> torch.Tensor:
        """Training rows read at 0-based `step`: row (step mod m) of each column."""
        return self.columns + step % self.m

    def batch_at(self, step: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.batch_indices(step)
        return self.data.x_train[idx], self.data.y_train[idx]

    def restarts(self, step: int) -> bool:
        """Whether the columns start over at `step` (the hidden state restarts at zero)."""
        return step % self.m == 0


class CarriedState:
    """The hidden state one worker carries from step to step."""

    def __init__(self) -> None:
        self.hidden: tuple[torch.Tensor, ...] | None = None

    def logits(self, model: Any, x: torch.Tensor, restart: bool) -> torch.Tensor:
        out, state = model.forward_carry(x, None if restart else self.hidden)
        self.hidden = tuple(t.detach() for t in state)  # truncated BPTT: no gradient into the previous step
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"hidden": None if self.hidden is None else [t.cpu() for t in self.hidden]}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        hidden = state["hidden"]
        self.hidden = None if hidden is None else tuple(t.to(device) for t in hidden)
