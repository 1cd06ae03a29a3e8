"""Atomic file output for sim.convex: write a temp file in the target's directory, then os.replace."""
from __future__ import annotations

import json
import os
from typing import Any

from ..atomic import atomic_open

__all__ = ["write_json_atomic"]


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write obj as indented JSON to path so that readers see the old file or the whole new one."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_open(path) as fh:
        json.dump(obj, fh, indent=2, allow_nan=False)
        fh.write("\n")
