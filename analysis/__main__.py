"""Entry point of `python -m analysis`."""
from __future__ import annotations

import sys

from analysis.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
