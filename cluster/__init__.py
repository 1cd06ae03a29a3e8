"""An emulated cluster on one Linux machine: nodes as network namespaces, shaped links, MPI launched across them."""
from __future__ import annotations

from .errors import ClusterError
from .launch import Cluster
from .netns import ClusterSpec, check_mtu, cleanup_stale, parse_rate, unavailable_reason

__all__ = ["Cluster", "ClusterSpec", "ClusterError", "check_mtu", "cleanup_stale", "parse_rate", "unavailable_reason"]
