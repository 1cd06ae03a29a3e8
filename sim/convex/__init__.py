"""sim.convex: the convex w8a experiment (logistic regression, time in gradient and communication units)."""
from __future__ import annotations

from sim.convex.errors import ConvexError

__all__ = ["ConvexError"]
