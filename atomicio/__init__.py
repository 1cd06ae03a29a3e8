"""Dependency-free file safety shared by every package: atomic writes, one JSON-lines rule, output-location checks.

Atomic write: a temp file beside the target, flushed and fsync'ed, given the umask's mode, renamed over the target,
then the directory fsync'ed, so a crash leaves the old file or the whole new one. A failed write removes its temp
file and raises OutputError, whose message is one line naming the path.

JSON lines (one rule for every reader): blank lines are skipped; a torn last line (a bad last line with no newline
at its end: what a crash mid-write leaves) is ignored with a warning; a bad line anywhere else, or a bad last line
that was written whole, is a JsonlError naming the file and line.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["OutputError", "JsonlError", "EXIT_OUTPUT", "atomic_open", "atomic_write_bytes", "atomic_write_text",
           "write_json_atomic", "write_jsonl_atomic", "fsync_dir", "clean_json", "read_jsonl", "read_jsonl_numbered",
           "jsonl_is_torn", "JsonlAppender",
           "check_output_dir", "check_output_file", "describe_oserror"]

log = logging.getLogger("atomicio")

#: Exit status of every CLI when an output cannot be written during the work (sysexits' EX_IOERR).
EXIT_OUTPUT = 74


class OutputError(OSError):
    """An output could not be written; str() is one line naming the path and the reason."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "output error"


class JsonlError(ValueError):
    """A JSON-lines file with a bad line before its last one; the message names the file and the line."""


def describe_oserror(exc: OSError) -> str:
    """'No space left on device' style text of an OSError (its strerror, else its str)."""
    return exc.strerror or str(exc)


def _file_mode() -> int:
    """The mode open() gives a new file (0666 less the umask); mkstemp's own 0600 would hide results."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so that a rename inside it survives a power cut (a no-op where directories cannot be
    opened)."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Write through the yielded file; `path` appears whole when the block ends, or not at all on an error.

    An OSError (full disk, read-only file system, missing folder) becomes an OutputError naming `path`, and the
    temp file is removed; any other exception propagates unchanged, also after removing the temp file.
    """
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, target)
        tmp = None
        fsync_dir(parent)
    except OSError as exc:
        if isinstance(exc, OutputError):
            raise
        raise OutputError(f"cannot write {target}: {describe_oserror(exc)}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Atomically write `data` to `path` (see atomic_open); returns the path."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically write UTF-8 `text` to `path`; returns the path."""
    with atomic_open(path) as f:
        f.write(text)
    return Path(path)


def clean_json(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null (recursively)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    return value


def write_json_atomic(path: str | os.PathLike[str], obj: Any, *, sort_keys: bool = True) -> None:
    """Write `obj` as indented JSON atomically (NaN and infinity become null)."""
    with atomic_open(path) as fh:
        json.dump(clean_json(obj), fh, indent=2, sort_keys=sort_keys, allow_nan=False)
        fh.write("\n")


def write_jsonl_atomic(path: str | os.PathLike[str], rows: list[dict[str, Any]], *, sort_keys: bool = False) -> None:
    """Write `rows` as JSON lines atomically."""
    with atomic_open(path) as fh:
        for row in rows:
            fh.write(json.dumps(clean_json(row), sort_keys=sort_keys) + "\n")


def _warn(message: str) -> None:
    log.warning("%s", message)


def read_jsonl_numbered(path: str | os.PathLike[str], *, warn: Callable[[str], None] | None = _warn,
                        error: type[Exception] = JsonlError) -> list[tuple[int, dict[str, Any]]]:
    """(1-based line number, record) of every record of a JSON-lines file, under the one torn-line rule.

    A torn last line is reported through `warn` (default: a logging warning; None: silent). Any other bad line
    (invalid JSON, not a JSON object, not UTF-8) raises `error` naming the file and line; so does an unreadable file.
    """
    p = Path(path)
    try:
        blob = p.read_bytes()
    except OSError as exc:
        raise error(f"cannot read {p}: {describe_oserror(exc)}") from None
    lines = blob.split(b"\n")
    last = max((i for i, ln in enumerate(lines) if ln.strip()), default=-1)
    torn_ok = not blob.rstrip(b" \t\r").endswith(b"\n")
    out: list[tuple[int, dict[str, Any]]] = []
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
            bad = None if isinstance(obj, dict) else f"expected a JSON object, got {type(obj).__name__}"
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            bad = f"invalid JSON ({getattr(exc, 'msg', None) or 'not UTF-8 text'})"
        if bad is None:
            out.append((i + 1, obj))
        elif i == last and torn_ok:
            if warn is not None:
                warn(f"{p}:{i + 1}: torn last line ignored ({bad}); the {len(out)} records before it are kept")
        else:
            raise error(f"{p}:{i + 1}: {bad}" + ("; only a torn last line may be skipped" if i != last else ""))
    return out


def read_jsonl(path: str | os.PathLike[str], *, warn: Callable[[str], None] | None = _warn,
               error: type[Exception] = JsonlError) -> list[dict[str, Any]]:
    """Every record of a JSON-lines file, under the one torn-line rule (see read_jsonl_numbered)."""
    return [obj for _, obj in read_jsonl_numbered(path, warn=warn, error=error)]


def jsonl_is_torn(path: str | os.PathLike[str]) -> bool:
    """Whether a JSON-lines file ends in a torn line (non-blank text after its last newline)."""
    try:
        blob = Path(path).read_bytes()
    except OSError:
        return False
    return bool(blob.rsplit(b"\n", 1)[-1].strip())


class JsonlAppender:
    """Append one JSON object per line, flushed at once (a crash loses at most a torn last line).

    A failed write raises OutputError naming the file, unless `defer` is set: then the error is kept in
    `self.failed` and later records are dropped, so that an MPI rank can report it at the next agreement point.
    """

    def __init__(self, path: str | os.PathLike[str], *, defer: bool = False, sort_keys: bool = True) -> None:
        self.path = Path(path)
        self.defer = defer
        self.sort_keys = sort_keys
        self.failed: str | None = None
        try:
            self._fh: IO[str] | None = open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {describe_oserror(exc)}") from None

    def write(self, record: dict[str, Any]) -> None:
        if self.failed is not None or self._fh is None:
            return
        try:
            self._fh.write(json.dumps(clean_json(record), sort_keys=self.sort_keys) + "\n")
            self._fh.flush()
        except OSError as exc:
            self.failed = f"cannot write {self.path}: {describe_oserror(exc)}"
            if not self.defer:
                raise OutputError(self.failed) from None

    def close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError as exc:  # the buffered tail could not be written
                self.failed = self.failed or f"cannot write {self.path}: {describe_oserror(exc)}"
            self._fh = None


def _existing_ancestor(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_dir(path: str | os.PathLike[str], *, need_bytes: int = 1 << 20, what: str = "output folder") -> None:
    """Raise OutputError (one line naming `path`) unless files can be created there and `need_bytes` are free.

    Nothing is created: a missing folder is checked through its nearest existing ancestor. The probe writes a
    small temp file, fsyncs and removes it, so a read-only mount, a full disk or a path under a file all fail here.
    """
    p = Path(path)
    base = _existing_ancestor(p)
    if not base.is_dir():
        raise OutputError(f"{what} {p} cannot be created: {base} is not a folder")
    probe = None
    try:
        fd, probe = tempfile.mkstemp(prefix=".probe-", suffix=".tmp", dir=base)
        with os.fdopen(fd, "wb") as fh:
            fh.write(b"\0" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
        free = shutil.disk_usage(base).free
    except OSError as exc:
        raise OutputError(f"{what} {p} is not writable: {describe_oserror(exc)} (in {base})") from None
    finally:
        if probe is not None and os.path.exists(probe):
            os.unlink(probe)
    if free < need_bytes:
        raise OutputError(f"{what} {p} has {free / 2**20:.1f} MiB free, at least {need_bytes / 2**20:.1f} MiB "
                          f"are needed (free some space or choose another location)")


def check_output_file(path: str | os.PathLike[str], *, need_bytes: int = 1 << 20, what: str = "output file") -> None:
    """check_output_dir for the folder a file goes to; also refuses a path that is an existing folder."""
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"{what} {p} is a folder; give a file name")
    try:
        check_output_dir(p.parent if str(p.parent) else Path("."), need_bytes=need_bytes, what="its folder")
    except OutputError as exc:
        raise OutputError(f"{what} {p}: {exc}") from None
