"""train: the real local-SGD trainer (mini-batch, local, post-local, hierarchical) and its public averager."""
from __future__ import annotations

from typing import Any

__all__ = ["LocalSGD", "average_gradients", "GradientBuckets", "MPIBackend", "TorchBackend", "TrainConfig",
           "TrainError"]

_HOMES = {"LocalSGD": "train.averager", "average_gradients": "train.averager", "GradientBuckets": "train.buckets",
          "MPIBackend": "train.backend",
          "TorchBackend": "train.backend", "TrainConfig": "train.config", "TrainError": "train.errors"}


def __getattr__(name: str) -> Any:
    """Lazy: `python -m train` reaches its entry point (and its Ctrl-C handling) before torch is imported, while
    `from train import LocalSGD` works as usual."""
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'train' has no attribute {name!r}")
