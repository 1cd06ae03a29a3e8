"""Entry point of `python -m sim`."""
from __future__ import annotations

import sys

from sim.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
