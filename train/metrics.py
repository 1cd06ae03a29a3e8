"""Run outputs: JSON-lines metrics flushed per record, and JSON files written atomically (through atomicio)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from atomicio import JsonlAppender, OutputError, clean_json, read_jsonl, write_json_atomic, write_jsonl_atomic

__all__ = ["JsonlWriter", "write_json_atomic", "read_jsonl", "truncate_jsonl", "OutputError", "clean_json"]


def truncate_jsonl(path: str | os.PathLike[str], keep_through_step: int) -> None:
    """Atomically drop the records after step `keep_through_step` (a resume from a checkpoint redoes them).

    The file is read under atomicio's one rule: a torn last line (a crash mid-write) is dropped with a warning, a
    bad line before it is an error naming the line (so nothing measured is ever silently deleted).
    """
    path = Path(path)
    if not path.exists():
        return
    kept = [r for r in read_jsonl(path) if r.get("step", -1) <= keep_through_step]
    write_jsonl_atomic(path, kept, sort_keys=True)


class JsonlWriter(JsonlAppender):
    """Append one flat JSON object per line and flush it at once, so a crash loses nothing already measured.

    A failed write is kept in `failed` (the trainer reports it at the next checkpoint, where the ranks agree).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path, defer=True)

    def write(self, record: dict[str, Any]) -> None:
        super().write(record)
