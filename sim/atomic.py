"""Atomic file writes for sim: the shared helpers of the dependency-free `atomicio` module, re-exported."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from atomicio import _file_mode, atomic_open, atomic_write_text, fsync_dir

__all__ = ["atomic_open", "atomic_write_text", "make_temp_beside", "publish"]


def make_temp_beside(path: str | os.PathLike[str]) -> tuple[int, str]:
    """A temp file in the target's directory (so the final rename stays on one file system)."""
    target = Path(path)
    return tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or Path("."))


def publish(tmp: str, path: str | os.PathLike[str]) -> None:
    """Give the finished temp file its normal mode, rename it over `path` in one step, fsync the folder."""
    os.chmod(tmp, _file_mode())
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)
