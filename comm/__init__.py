"""comm: our own all-reduce algorithms over mpi4py, blocking and nonblocking, hierarchical all-reduce, flat buffers."""
from __future__ import annotations

import os

# MPICH busy-polls while a rank waits; on oversubscribed cores the waiting ranks would steal the CPU of the rank
# that works. Heavy yield makes them sched_yield instead. It must be set before MPI is initialised.
os.environ.setdefault("MPIR_CVAR_ENABLE_HEAVY_YIELD", "1")

from .allgather import ALLGATHER_ALGORITHMS, allgather
from .allreduce import ALGORITHMS, AUTO_THRESHOLD_BYTES, OPS, allreduce, auto_algorithm, auto_choice
from .buffers import DTYPES
from .cuda import cuda_aware
from .errors import CommError
from .flat import FlatBuffer
from .nonblocking import PROGRESS, Request, iallreduce, iblock_allreduce, ihierarchical_allreduce
from .topology import Topology, block_allreduce, hierarchical_allreduce

__all__ = ["allreduce", "iallreduce", "ihierarchical_allreduce", "iblock_allreduce", "Request", "PROGRESS",
           "allgather", "ALLGATHER_ALGORITHMS", "hierarchical_allreduce", "block_allreduce", "Topology",
           "FlatBuffer", "cuda_aware", "CommError", "ALGORITHMS", "OPS", "DTYPES", "AUTO_THRESHOLD_BYTES",
           "auto_algorithm", "auto_choice"]
