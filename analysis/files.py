"""Reading JSON / JSON-lines inputs tolerantly and writing outputs atomically."""
from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from analysis.errors import InputError
from atomicio import OutputError, describe_oserror, read_jsonl_numbered
from atomicio import atomic_write_bytes as _atomic_bytes

log = logging.getLogger(__name__)

__all__ = [
    "Record",
    "read_json",
    "read_jsonl",
    "get",
    "get_num",
    "opt",
    "opt_num",
    "atomic_write_bytes",
    "atomic_write_text",
    "finite",
]

_MISSING = object()


class Record(dict):
    """A JSON object that remembers where it came from, so errors can name the file and line."""

    source: str = "?"

    @classmethod
    def of(cls, obj: Mapping[str, Any], source: str) -> Record:
        rec = cls(obj)
        rec.source = source
        return rec


def _open_text(path: str | os.PathLike[str]) -> str:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"input file {str(p)!r} does not exist or is not a file")
    try:
        return p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {str(p)!r}: {exc}") from None


def read_json(path: str | os.PathLike[str]) -> Record:
    """Read one JSON object from ``path``; a list, a number or broken JSON is an InputError."""
    text = _open_text(path)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a JSON object at top level, got {type(obj).__name__}")
    return Record.of(obj, str(path))


def read_jsonl(path: str | os.PathLike[str], *, allow_empty: bool = False) -> list[Record]:
    """Read a JSON-lines file under the one rule of `atomicio`: a torn last line (a crash mid-write) is skipped
    with a warning; a bad line anywhere else is an error naming the line."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"input file {str(p)!r} does not exist or is not a file")
    records = [Record.of(obj, f"{path}:{n}")
               for n, obj in read_jsonl_numbered(p, warn=lambda msg: log.warning("%s", msg), error=InputError)]
    if not records and not allow_empty:
        raise InputError(f"{path}: no JSON records found (expected one JSON object per line)")
    return records


def _where(rec: Mapping[str, Any]) -> str:
    return getattr(rec, "source", "<record>")


def _lookup(rec: Mapping[str, Any], names: Sequence[str]) -> Any:
    """Return the first present key of ``names``; a dotted name walks nested objects."""
    for name in names:
        cur: Any = rec
        for part in name.split("."):
            if isinstance(cur, Mapping) and part in cur:
                cur = cur[part]
            else:
                cur = _MISSING
                break
        if cur is not _MISSING:
            return cur
    return _MISSING


def _names(names: str | Sequence[str]) -> list[str]:
    return [names] if isinstance(names, str) else list(names)


def get(rec: Mapping[str, Any], names: str | Sequence[str]) -> Any:
    """Value of the first present key in ``names``; missing -> InputError naming the source and key."""
    names = _names(names)
    value = _lookup(rec, names)
    if value is _MISSING:
        alts = f" (or {', '.join(repr(n) for n in names[1:])})" if len(names) > 1 else ""
        raise InputError(f"{_where(rec)}: missing key {names[0]!r}{alts}")
    return value


def opt(rec: Mapping[str, Any], names: str | Sequence[str], default: Any = None) -> Any:
    """Like :func:`get` but returns ``default`` when every key is absent (or null)."""
    value = _lookup(rec, _names(names))
    return default if value is _MISSING or value is None else value


def _as_num(rec: Mapping[str, Any], name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{_where(rec)}: key {name!r} must be a number, got {value!r}")
    return float(value)


def get_num(rec: Mapping[str, Any], names: str | Sequence[str]) -> float:
    """A required numeric field as float (NaN/inf allowed: an unreached target may be inf)."""
    names = _names(names)
    return _as_num(rec, names[0], get(rec, names))


def opt_num(rec: Mapping[str, Any], names: str | Sequence[str],
            default: float | None = None) -> float | None:
    """An optional numeric field as float, or ``default`` when absent or null."""
    names = _names(names)
    value = _lookup(rec, names)
    if value is _MISSING or value is None:
        return default
    return _as_num(rec, names[0], value)


def finite(values: Iterable[float]) -> list[float]:
    """The finite members of ``values`` (used to choose axis limits)."""
    return [v for v in values if v is not None and math.isfinite(v)]


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (atomicio: temp file, fsync, rename, fsync of the folder).

    A failure (full disk, read-only mount) removes the temp file and raises atomicio.OutputError naming the path.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create folder {target.parent}: {describe_oserror(exc)}") from None
    return _atomic_bytes(target, data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically write UTF-8 text (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))
