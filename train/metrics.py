"""Run outputs: JSON-lines metrics flushed per record, and JSON files written atomically."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import IO, Any

from sim.atomic import atomic_open

__all__ = ["JsonlWriter", "write_json_atomic", "read_jsonl", "truncate_jsonl"]


def _clean(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write `obj` as indented JSON through a temporary file in the same folder and os.replace."""
    with atomic_open(path) as fh:
        json.dump(_clean(obj), fh, indent=2, sort_keys=True)
        fh.write("\n")


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All complete records of a JSON-lines file (a torn last line from a crash is skipped)."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def truncate_jsonl(path: str | os.PathLike[str], keep_through_step: int) -> None:
    """Atomically drop the records after step `keep_through_step` (used when a run resumes from a checkpoint)."""
    path = Path(path)
    if not path.exists():
        return
    kept = [r for r in read_jsonl(path) if r.get("step", -1) <= keep_through_step]
    with atomic_open(path) as fh:
        for r in kept:
            fh.write(json.dumps(r, sort_keys=True) + "\n")


class JsonlWriter:
    """Append one flat JSON object per line and flush it at once, so a crash loses nothing already measured."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fh: IO[str] | None = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        assert self._fh is not None, "writer is closed"
        self._fh.write(json.dumps(_clean(record), sort_keys=True) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
