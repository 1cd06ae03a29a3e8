"""The single exception base of the train package."""
from __future__ import annotations

__all__ = ["TrainError", "AgreedError"]


class TrainError(ValueError):
    """Bad input to the trainer (configuration, data files, checkpoints); the message is one line naming the value.

    It subclasses ValueError so callers that only know the standard library can still catch it.
    """


class AgreedError(TrainError):
    """A TrainError every rank raises alike, after the ranks agreed on it: printed once (rank 0), exit 2 everywhere,
    and no MPI_Abort, since no rank is left waiting in a collective."""
