"""CUDA-aware MPI detection through MPIX_Query_cuda_support on the loaded libmpi, with an environment override."""
from __future__ import annotations

import ctypes
import functools
import os

from .errors import CommError

__all__ = ["cuda_aware", "ENV_OVERRIDE"]

ENV_OVERRIDE = "LOCALSGD_CUDA_AWARE"


@functools.lru_cache(maxsize=1)
def _query_libmpi() -> bool:
    """Ask the MPI library itself; False when the symbol is absent (the library cannot say it is aware)."""
    from mpi4py import MPI  # noqa: F401  (loads libmpi into the process, so its symbols are visible)

    lib = ctypes.CDLL(None)  # the symbols of everything loaded so far, libmpi included
    try:
        query = lib.MPIX_Query_cuda_support
    except AttributeError:
        try:
            import mpi4py.MPI as _mpi

            lib = ctypes.CDLL(_mpi.__file__)
            query = lib.MPIX_Query_cuda_support
        except (OSError, AttributeError):
            return False
    query.restype = ctypes.c_int
    query.argtypes = []
    return bool(query())


def cuda_aware() -> bool:
    """True when MPI calls may be handed CUDA device memory directly.

    LOCALSGD_CUDA_AWARE=1 or 0 overrides the query (for MPI builds that are aware but lack MPIX_Query_cuda_support,
    or to force staging through host memory). Otherwise MPIX_Query_cuda_support() of the loaded libmpi decides; the
    pip MPICH and Open MPI builds answer 0.
    """
    value = os.environ.get(ENV_OVERRIDE)
    if value is not None and value != "":
        if value not in ("0", "1"):
            raise CommError(f"{ENV_OVERRIDE} must be 0 or 1, got {value!r}")
        return value == "1"
    return _query_libmpi()
