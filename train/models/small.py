"""The small models: logistic regression (w8a) and the 3-layer LSTM language model (WikiText-2)."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["BinaryLogisticRegression", "LogisticRegression", "LSTMLanguageModel"]


class LogisticRegression(nn.Module):
    """A single linear layer on the flattened input; with cross-entropy it is (multinomial) logistic regression."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(x, 1))


class BinaryLogisticRegression(nn.Module):
    """One weight vector w, no bias, starting at 0: the logit a^T w of SPEC section 6's convex problem."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.flatten(x, 1) @ self.w).unsqueeze(-1)


class LSTMLanguageModel(nn.Module):
    """Embedding, a stacked LSTM (3 layers of 650 by default), dropout, a decoder over the vocabulary.

    Input: token ids of shape (batch, bptt); output: logits of shape (batch, bptt, vocab). `forward` starts the
    hidden state at zero (--lm-state reset); `forward_carry` takes and returns it, for truncated BPTT over
    contiguous text (--lm-state carry, train/lmstate.py).
    """

    def __init__(self, vocab: int, hidden: int = 650, layers: int = 3, dropout: float = 0.5) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.drop = nn.Dropout(dropout)
        self.lstm = nn.LSTM(hidden, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.decoder = nn.Linear(hidden, vocab)
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_carry(x, None)[0]

    def forward_carry(self, x: torch.Tensor, hidden: tuple[torch.Tensor, torch.Tensor] | None
                      ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """(logits, (h, c)) starting from `hidden` (None: zeros); each of h, c is (layers, batch, hidden)."""
        out, state = self.lstm(self.drop(self.embed(x)), hidden)
        return self.decoder(self.drop(out)), state
