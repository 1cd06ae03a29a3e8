"""atomicio: whole file or nothing (also on a failing write), one torn-line rule, output-location checks."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from atomicio import (
    JsonlAppender,
    JsonlError,
    OutputError,
    atomic_open,
    check_output_dir,
    check_output_file,
    read_jsonl,
    read_jsonl_numbered,
    write_json_atomic,
)


def test_atomic_write_replaces_whole_and_keeps_umask_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "a.json", {"x": float("nan"), "y": 1})
        assert json.loads((tmp_path / "a.json").read_text()) == {"x": None, "y": 1}
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_open_failure_is_one_line_naming_the_path_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    target.write_text("old")
    with pytest.raises(OutputError, match=f"cannot write {target}: No space left on device"):
        with atomic_open(target) as fh:
            fh.write("half")
            raise OSError(28, "No space left on device")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.json"]
    with pytest.raises(OutputError, match="cannot write .*nowhere/a.json"):
        write_json_atomic(tmp_path / "nowhere" / "a.json", {})


def test_jsonl_torn_last_line_is_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    p = tmp_path / "m.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2}\n{"a": 3, "b')
    with caplog.at_level(logging.WARNING):
        assert read_jsonl(p) == [{"a": 1}, {"a": 2}]
    assert f"{p}:4: torn last line ignored" in caplog.text
    assert [n for n, _ in read_jsonl_numbered(p, warn=None)] == [1, 3]


@pytest.mark.parametrize("text, where", [
    ('{"a": 1}\n{"a": 2\n{"a": 3}\n', ":2: invalid JSON"),      # a bad line in the middle
    ('{"a": 1}\n[1, 2]\n', ":2: expected a JSON object"),         # written whole, not torn
    ('{"a": 1}\nnot json\n', ":2: invalid JSON"),                # a bad last line that ends with a newline
    ('{"a": 1}\n\xff\xfe{}\n{"a": 2}\n', ":2: invalid JSON (not UTF-8 text)"),
])
def test_jsonl_bad_line_before_the_end_is_an_error_naming_it(tmp_path: Path, text: str, where: str) -> None:
    p = tmp_path / "m.jsonl"
    p.write_bytes(text.encode("latin-1"))
    with pytest.raises(JsonlError) as info:
        read_jsonl(p)
    assert f"{p}{where}" in str(info.value) and "\n" not in str(info.value)


def test_appender_defers_a_failed_write(tmp_path: Path) -> None:
    w = JsonlAppender(tmp_path / "m.jsonl", defer=True)
    w.write({"a": 1})

    class Broken:
        def write(self, _s: str) -> None:
            raise OSError(28, "No space left on device")

        def close(self) -> None:
            pass
    w._fh = Broken()  # type: ignore[assignment]
    w.write({"a": 2})
    assert w.failed == f"cannot write {tmp_path / 'm.jsonl'}: No space left on device"
    w.close()
    assert read_jsonl(tmp_path / "m.jsonl") == [{"a": 1}]


def test_output_checks_create_nothing_and_name_the_path(tmp_path: Path) -> None:
    check_output_dir(tmp_path / "new" / "deeper")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=f"output folder {tmp_path}/file/run cannot be created: .* is not a folder"):
        check_output_dir(tmp_path / "file" / "run")
    with pytest.raises(OutputError, match="has .* MiB free, at least .* MiB are needed"):
        check_output_dir(tmp_path, need_bytes=1 << 62)
    with pytest.raises(OutputError, match="is a folder; give a file name"):
        check_output_file(tmp_path)
    with pytest.raises(OutputError, match="not writable"):
        check_output_dir("/proc/localsgd-run")
