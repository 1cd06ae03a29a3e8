"""train: the real local-SGD trainer (mini-batch, local, post-local, hierarchical) and its public averager."""
from __future__ import annotations

from train.averager import LocalSGD, average_gradients
from train.backend import MPIBackend, TorchBackend
from train.config import TrainConfig
from train.errors import TrainError

__all__ = ["LocalSGD", "average_gradients", "MPIBackend", "TorchBackend", "TrainConfig", "TrainError"]
