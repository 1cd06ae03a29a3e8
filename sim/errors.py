"""The single exception base of the sim package."""
from __future__ import annotations

__all__ = ["SimError"]


class SimError(ValueError):
    """Bad input to the simulator or its pure modules; the message is one line naming the value.

    It subclasses ValueError so callers that only know the standard library can still catch it.
    """
