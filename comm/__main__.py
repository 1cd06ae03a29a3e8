"""`python -m comm SUBCOMMAND`: run under mpirun, e.g. `mpirun -n 4 python -m mpi4py -m comm bench`."""
from __future__ import annotations

import sys

USAGE = "usage: python -m comm bench [options]   (run under mpirun; see python -m comm bench --help)"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] != "bench":
        print(f"error: unknown subcommand {argv[0]!r}; valid: bench", file=sys.stderr)
        return 2
    from .bench import main as bench_main

    return bench_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
