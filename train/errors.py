"""The single exception base of the train package, and the errors every rank raises alike."""
from __future__ import annotations

__all__ = ["TrainError", "AgreedError", "AgreedOutputError", "AgreedInterrupt", "EXIT_OUTPUT"]

#: Exit status when an output could not be written during a run (sysexits' EX_IOERR; atomicio.EXIT_OUTPUT).
EXIT_OUTPUT = 74


class TrainError(ValueError):
    """Bad input to the trainer (configuration, data files, checkpoints); the message is one line naming the value.

    It subclasses ValueError so callers that only know the standard library can still catch it.
    """


class AgreedError(TrainError):
    """A TrainError every rank raises alike, after the ranks agreed on it: printed once (rank 0), exit 2 everywhere,
    and no MPI_Abort, since no rank is left waiting in a collective."""

    exit_code = 2


class AgreedOutputError(AgreedError):
    """An output (checkpoint, metrics, summary) could not be written on some rank; every rank stops alike (exit 74)
    and the run stays resumable from its last complete checkpoint."""

    exit_code = EXIT_OUTPUT


class AgreedInterrupt(AgreedError):
    """SIGINT/SIGTERM arrived during start-up, before the first training step: every rank exits 128 + signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum
