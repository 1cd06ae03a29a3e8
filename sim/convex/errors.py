"""The one exception base of sim.convex: every bad input or failed solve raises a subclass of it."""
from __future__ import annotations

__all__ = ["ConvexError", "DataFormatError", "SolverError"]


class ConvexError(ValueError):
    """Base of all sim.convex errors; a ValueError so generic callers can still catch it."""


class DataFormatError(ConvexError):
    """A LIBSVM file or string is malformed; the message names the line number."""


class SolverError(ConvexError):
    """The f* solver did not reach the requested accuracy."""
