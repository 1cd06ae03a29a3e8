"""The exception base of comm: every error comm raises on bad input is a CommError."""
from __future__ import annotations

__all__ = ["CommError"]


class CommError(ValueError):
    """Bad input to a comm function (a one-line message that names the value and what would be valid)."""
