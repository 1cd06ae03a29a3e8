"""The analysis package's exception hierarchy: one base, with a subclass for bad input files and arguments."""
from __future__ import annotations

__all__ = ["AnalysisError", "InputError"]


class AnalysisError(Exception):
    """Base class of every error raised on purpose by the analysis package."""


class InputError(AnalysisError, ValueError):
    """A file or argument that cannot be plotted; the message is one line naming the bad value."""
