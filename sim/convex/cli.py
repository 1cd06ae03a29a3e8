"""Command line of the convex experiment: `python -m sim convex fstar|grid|speedup`."""
from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["register"]


def _not_ready(args: argparse.Namespace) -> int:
    print(f"error: 'convex {args.convex_command}' is not implemented yet", file=sys.stderr)
    return 2


def register(subparsers: Any) -> None:
    """Add the `convex` subcommand (with fstar/grid/speedup) to an argparse subparsers object."""
    parser = subparsers.add_parser("convex", help="convex w8a experiment (logistic regression)")
    sub = parser.add_subparsers(dest="convex_command", required=True, metavar="{fstar,grid,speedup}")
    for name in ("fstar", "grid", "speedup"):
        p = sub.add_parser(name)
        p.add_argument("--data", required=True)
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=_not_ready)
