"""train: the real local-SGD trainer (mini-batch, local, post-local, hierarchical)."""
from __future__ import annotations

from train.config import TrainConfig
from train.errors import TrainError

__all__ = ["TrainConfig", "TrainError"]
