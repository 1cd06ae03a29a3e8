"""CUDA-aware MPI detection through MPIX_Query_cuda_support on the loaded libmpi, with an environment override."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

from .errors import CommError

__all__ = ["cuda_aware", "ENV_OVERRIDE", "libmpi_path", "maps_path"]

ENV_OVERRIDE = "LOCALSGD_CUDA_AWARE"


def maps_path(line: str) -> str:
    """The pathname of a /proc/PID/maps line ("" for an anonymous mapping): the sixth field and everything after
    it, so that a path with spaces stays whole."""
    fields = line.rstrip("\n").split(maxsplit=5)
    return fields[5] if len(fields) == 6 else ""


def libmpi_path() -> str | None:
    """Path of the libmpi this process loaded (mpi4py opens it privately, so it is found in the memory map)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = maps_path(line)
                if os.path.basename(path).startswith(("libmpi.so", "libmpi_abi.so")):
                    return path
    except OSError:
        pass
    return ctypes.util.find_library("mpi")


@functools.lru_cache(maxsize=1)
def _query_libmpi() -> bool:
    """Ask the MPI library itself through MPIX_Query_cuda_support; False when it has no such symbol."""
    from mpi4py import MPI  # noqa: F401  (loads libmpi, so that its path appears in the memory map)

    path = libmpi_path()
    if path is None:
        return False
    try:
        query = ctypes.CDLL(path).MPIX_Query_cuda_support
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
