"""The single exception base of the train package."""
from __future__ import annotations

__all__ = ["TrainError"]


class TrainError(ValueError):
    """Bad input to the trainer (configuration, data files, checkpoints); the message is one line naming the value.

    It subclasses ValueError so callers that only know the standard library can still catch it.
    """
