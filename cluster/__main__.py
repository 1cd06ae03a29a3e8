"""`python -m cluster check|run|cleanup`: try a multi-node MPI job on one machine (as root)."""
from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
