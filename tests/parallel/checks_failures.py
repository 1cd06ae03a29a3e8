"""A check that fails on one rank while the others wait in a collective: the job must abort, not hang."""
from __future__ import annotations

import numpy as np
from mpi4py import MPI

import comm


def check_last_rank_raises() -> None:
    world = MPI.COMM_WORLD
    if world.rank == world.size - 1:
        raise RuntimeError("deliberate failure on the last rank")
    comm.allreduce(np.ones(1000), algorithm="rabenseifner")  # the last rank never joins: without abort, a hang
