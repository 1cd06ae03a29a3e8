"""train: the real local-SGD trainer (mini-batch, local, post-local, hierarchical)."""
from __future__ import annotations

from typing import Any

__all__ = ["TrainConfig", "TrainError"]


def __getattr__(name: str) -> Any:
    """Lazy: `python -m train` reaches its entry point (and its Ctrl-C handling) before torch is imported."""
    if name == "TrainConfig":
        from train.config import TrainConfig
        return TrainConfig
    if name == "TrainError":
        from train.errors import TrainError
        return TrainError
    raise AttributeError(f"module 'train' has no attribute {name!r}")
