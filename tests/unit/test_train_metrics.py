"""Run outputs: JSON lines readable while the writer is open, atomic JSON, truncation on resume."""
from __future__ import annotations

import json
import math
from pathlib import Path

from train.metrics import JsonlWriter, read_jsonl, truncate_jsonl, write_json_atomic


def test_train_jsonl_flushed_per_record(tmp_path: Path) -> None:
    w = JsonlWriter(tmp_path / "m.jsonl")
    w.write({"kind": "step", "step": 0, "loss": math.nan})
    assert read_jsonl(tmp_path / "m.jsonl") == [{"kind": "step", "step": 0, "loss": None}]  # before close
    w.write({"kind": "epoch", "step": 1, "x": [1.0, math.inf]})
    w.close()
    assert [r["step"] for r in read_jsonl(tmp_path / "m.jsonl")] == [0, 1]


def test_train_jsonl_torn_line_and_truncate(tmp_path: Path) -> None:
    p = tmp_path / "m.jsonl"
    p.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(5)) + '{"step": 5, "lo')
    assert [r["step"] for r in read_jsonl(p)] == [0, 1, 2, 3, 4]
    truncate_jsonl(p, 2)
    assert [r["step"] for r in read_jsonl(p)] == [0, 1, 2] and p.read_text().endswith("\n")


def test_train_atomic_json_leaves_no_temp(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "s.json", {"a": 1, "b": math.nan})
    write_json_atomic(tmp_path / "s.json", {"a": 2})
    assert json.loads((tmp_path / "s.json").read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]
