"""The one exception the cluster harness raises for bad input or a machine that cannot host the emulation."""
from __future__ import annotations

__all__ = ["ClusterError"]


class ClusterError(Exception):
    """Bad input (a rate, a node count) or a failed namespace/link/qdisc operation; the message says which."""
