"""Rank 0's run-folder files at start and on resume: config.json, the JSON-lines writers, records rewound."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from atomicio import OutputError, clean_json, describe_oserror, read_jsonl
from train.metrics import JsonlWriter, truncate_jsonl, write_json_atomic

__all__ = ["open_outputs", "discard_outputs", "rewind_records"]


def open_outputs(run_dir: Path, resolved: dict[str, Any], *, resumed: bool,
                 objective: bool) -> tuple[JsonlWriter, JsonlWriter | None]:
    """The run folder, config.json and the writers of metrics.jsonl (and objective.jsonl).

    A resume rewrites config.json only when its configuration changed (e.g. --epochs to extend the run), so a
    resume that fails later leaves the folder as it was. An OutputError names the path that failed.
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create run folder {run_dir}: {describe_oserror(e)}") from None
    path = run_dir / "config.json"
    old = None
    if resumed and path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8")).get("config")
        except (OSError, ValueError):
            old = None
    if old != json.loads(json.dumps(clean_json(resolved["config"]))):
        write_json_atomic(path, resolved)
    obj = JsonlWriter(run_dir / "objective.jsonl") if objective else None
    return JsonlWriter(run_dir / "metrics.jsonl"), obj


def discard_outputs(run_dir: Path, writers: list[JsonlWriter | None]) -> None:
    """Undo open_outputs of a new run that is stopped before its first step (Ctrl-C during start-up): close the
    writers, remove config.json and the empty record files, and the folder if nothing else is in it, so that the
    same command can simply be run again."""
    for w in writers:
        if w is not None:
            w.close()
    for name in ("config.json", "metrics.jsonl", "objective.jsonl"):
        with contextlib.suppress(FileNotFoundError):
            (run_dir / name).unlink()
    with contextlib.suppress(OSError):
        run_dir.rmdir()  # only when empty


def rewind_records(run_dir: Path, step: int) -> dict[str, Any] | None:
    """Drop the records after `step` (a resume redoes them; a torn last line goes with a warning) and return the
    last epoch record kept, which a resumed run's summary reports as its final one."""
    truncate_jsonl(run_dir / "metrics.jsonl", step)
    truncate_jsonl(run_dir / "objective.jsonl", step)
    path = run_dir / "metrics.jsonl"
    epochs = [r for r in read_jsonl(path) if r.get("kind") == "epoch"] if path.exists() else []
    return epochs[-1] if epochs else None
