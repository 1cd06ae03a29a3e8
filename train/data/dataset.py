"""The in-memory dataset every loader returns: train and test tensors plus what the model needs to know."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from train.errors import TrainError

__all__ = ["Dataset"]


@dataclass(kw_only=True)
class Dataset:
    """Whole splits held as tensors so loading never limits training; `augment` turns on CIFAR crop and flip."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int          # classes, or the vocabulary size for language modelling
    augment: bool = False

    def __post_init__(self) -> None:
        if len(self.x_train) != len(self.y_train) or len(self.x_test) != len(self.y_test):
            raise TrainError(f"dataset {self.name!r}: inputs and labels differ in length "
                             f"({len(self.x_train)} vs {len(self.y_train)}, {len(self.x_test)} vs {len(self.y_test)})")
        if len(self.x_train) == 0 or len(self.x_test) == 0:
            raise TrainError(f"dataset {self.name!r} has an empty split: {len(self.x_train)} train, "
                             f"{len(self.x_test)} test samples")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])
