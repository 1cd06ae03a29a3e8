"""Atomic file writes: a temp file beside the target, flushed, given the umask's mode, then renamed over it."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

__all__ = ["atomic_open", "atomic_write_text", "make_temp_beside", "publish"]


def _file_mode() -> int:
    """The mode open() would give a new file (0666 less the umask); mkstemp's own 0600 would hide results."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def make_temp_beside(path: str | os.PathLike[str]) -> tuple[int, str]:
    """A temp file in the target's directory (so the final rename stays on one file system)."""
    target = Path(path)
    return tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or Path("."))


def publish(tmp: str, path: str | os.PathLike[str]) -> None:
    """Give the finished temp file its normal mode and rename it over `path` in one step."""
    os.chmod(tmp, _file_mode())
    os.replace(tmp, path)


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Write through the yielded file; `path` appears whole when the block ends, or not at all on an error."""
    fd, tmp = make_temp_beside(path)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)
