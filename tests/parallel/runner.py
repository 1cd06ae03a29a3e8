"""Run parallel check functions on every rank: `python -m mpi4py -m tests.parallel.runner MODULE:FUNC ...`."""
from __future__ import annotations

import importlib
import sys
import time

from mpi4py import MPI


def main(argv: list[str]) -> int:
    world = MPI.COMM_WORLD
    for spec in argv:
        module_name, _, func_name = spec.partition(":")
        func = getattr(importlib.import_module(module_name), func_name)
        t0 = time.perf_counter()
        func()  # an exception here propagates; python -m mpi4py then aborts every rank
        world.Barrier()
        if world.rank == 0:
            print(f"CHECK-PASSED {spec} on {world.size} ranks in {time.perf_counter() - t0:.2f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
