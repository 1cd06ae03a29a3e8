"""`python -m train`: run the CLI; an uncaught exception on any rank aborts the whole MPI job instead of hanging."""
from __future__ import annotations

import sys
import time
import traceback

__all__: list[str] = []


def _entry() -> int:
    from train.signals import EARLY
    EARLY.install()  # a Ctrl-C during start-up is recorded, then agreed on: one line from rank 0 (train/signals.py)
    from train.cli import main
    from train.errors import AgreedError, TrainError

    try:
        return main()
    except SystemExit:
        raise
    except AgreedError as exc:  # every rank raised it alike: one line, its exit code (2, 74, 130...), no abort
        mpi = sys.modules.get("mpi4py.MPI")
        if mpi is None or not mpi.Is_initialized() or mpi.COMM_WORLD.Get_rank() == 0:
            print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except BaseException as exc:
        mpi = sys.modules.get("mpi4py.MPI")
        size = mpi.COMM_WORLD.Get_size() if mpi is not None and mpi.Is_initialized() else 1
        code = 130 if isinstance(exc, KeyboardInterrupt) else 2 if isinstance(exc, TrainError) else 1
        rank = mpi.COMM_WORLD.Get_rank() if mpi is not None and mpi.Is_initialized() else 0
        if isinstance(exc, TrainError):
            print(f"error: {exc}" + (f" (rank {rank})" if size > 1 else ""), file=sys.stderr, flush=True)
        elif isinstance(exc, KeyboardInterrupt):  # a second signal (train/stop.py): no traceback, just the fact
            print(f"rank {rank}: interrupted again: stopping now without a final checkpoint", file=sys.stderr,
                  flush=True)
        else:
            traceback.print_exc()
            if size > 1:
                print(f"rank {rank}: aborting the MPI job after {type(exc).__name__}", file=sys.stderr, flush=True)
            else:  # no MPI job to abort: say what happened and where it belongs
                print(f"error: unexpected {type(exc).__name__} (a bug: please report it with the traceback above)",
                      file=sys.stderr, flush=True)
        if mpi is not None and size > 1:
            # MPI_Abort kills the job at once; give the launcher a moment to forward the message printed above
            # (without it, about one run in ten lost its only error line).
            time.sleep(0.5)
            mpi.COMM_WORLD.Abort(code)
        return code


if __name__ == "__main__":
    sys.exit(_entry())
