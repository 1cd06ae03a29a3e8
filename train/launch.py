"""What the launcher tells a rank before MPI starts, and command-line parsing that behaves under mpirun.

This module imports neither mpi4py nor comm (importing comm starts MPI): the trainer's CLI checks its flags
and its configuration first.

Under `mpirun -n 16`, argparse's default error (usage block plus message) is printed by all 16 ranks. Our
CLIs use `RankZeroParser` instead: a bad flag gives one line, `error: ...`, printed by launch rank 0 only,
and every rank exits 2 before MPI starts (nothing collective has begun, so nothing can hang).
"""
from __future__ import annotations

import os
import sys
import time
from typing import NoReturn

from sim.clivocab import VocabParser

__all__ = ["launch_rank_size", "launch_nodes", "launch_local_size", "RankZeroParser", "process_age",
           "resume_command"]

_LAUNCHERS = (("PMI_RANK", "PMI_SIZE"), ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
              ("SLURM_PROCID", "SLURM_NTASKS"))


def launch_rank_size() -> tuple[int, int]:
    """(rank, size) from the launcher's environment (MPICH/Hydra, Open MPI, Slurm), before MPI starts."""
    for r, s in _LAUNCHERS:
        if r in os.environ and s in os.environ:
            try:
                return int(os.environ[r]), int(os.environ[s])
            except ValueError:
                break
    return 0, 1


#: Ranks on this rank's node, as the launchers tell it: MPICH/Hydra, Open MPI, Slurm (SLURM_NTASKS_PER_NODE may be a
#: list such as "2(x4)": only a plain number is used).
_LOCAL_SIZE = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE")


def launch_local_size() -> int | None:
    """Ranks of this job on this rank's node, as the launcher tells it before MPI starts (None: it does not)."""
    for name in _LOCAL_SIZE:
        text = os.environ.get(name, "")
        if text.isdigit() and int(text) >= 1:
            return int(text)
    return None


def launch_nodes(size: int) -> int | None:
    """Nodes the `size` ranks of this job sit on, from the launcher's ranks-per-node (assumed equal on every node),
    before MPI starts; None when the launcher says nothing or its figure does not divide `size`."""
    local = launch_local_size()
    if local is None:
        return None
    return size // local if size % local == 0 else None


class RankZeroParser(VocabParser):
    """An ArgumentParser whose usage errors and notices (old option spellings) are one line on launch rank 0,
    and whose errors exit 2 on every rank."""

    def notice(self, line: str) -> None:
        if launch_rank_size()[0] == 0:
            print(line, file=sys.stderr, flush=True)

    def error(self, message: str) -> NoReturn:
        if launch_rank_size()[0] == 0:
            print(f"error: {self.typed_message(message)} (see `{self.prog} --help`)", file=sys.stderr, flush=True)
        sys.exit(2)


def process_age() -> float | None:
    """Seconds since this process started (Linux /proc; None elsewhere): start-up cost before training."""
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat", encoding="ascii") as fh:
            btime = next(int(line.split()[1]) for line in fh if line.startswith("btime"))
        return time.time() - (btime + ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def resume_command(run_dir: object, world_size: int, engine: str = "mpi") -> str:
    """The whole command that continues a run: a checkpoint must be resumed by as many ranks as wrote it (engine
    virtual: its one process)."""
    if engine == "virtual":
        return f"python -m train --resume {run_dir}"
    return f"mpirun -n {world_size} python -m train --resume {run_dir}"
