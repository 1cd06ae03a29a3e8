"""The exception base of sim.convex (under sim's SimError): every bad input or failed solve raises one."""
from __future__ import annotations

from sim.errors import SimError

__all__ = ["ConvexError", "DataFormatError", "SolverError"]


class ConvexError(SimError):
    """Base of all sim.convex errors; a SimError (and so a ValueError) like the rest of sim."""


class DataFormatError(ConvexError):
    """A LIBSVM file or string is malformed; the message names the line number."""


class SolverError(ConvexError):
    """The f* solver did not reach the requested accuracy."""
