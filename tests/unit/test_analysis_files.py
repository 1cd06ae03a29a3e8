"""analysis.files: tolerant JSON-lines reading, one-line errors that name the file and key, atomic writes."""
from __future__ import annotations

import os

import pytest

from analysis.errors import AnalysisError, InputError
from analysis.files import atomic_write_text, get, get_num, opt, opt_num, read_json, read_jsonl


def test_jsonl_skips_blank_lines_and_torn_last_record(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2}\n{"a": 3, "b"')  # writer killed mid-record
    recs = read_jsonl(p)
    assert [r["a"] for r in recs] == [1, 2]
    assert recs[1].source == f"{p}:3"


def test_jsonl_broken_line_in_the_middle_names_the_line(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"a": 1}\n{oops\n{"a": 2}\n')
    with pytest.raises(InputError, match=r"m\.jsonl:2: invalid JSON") as info:
        read_jsonl(p)
    assert "\n" not in str(info.value)


def test_jsonl_non_object_and_empty_file(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text("[1, 2]\n")
    with pytest.raises(InputError, match="expected a JSON object, got list"):
        read_jsonl(p)
    p.write_text("\n")
    with pytest.raises(InputError, match="no JSON records"):
        read_jsonl(p)
    assert read_jsonl(p, allow_empty=True) == []


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_json(tmp_path / "nope.json")
    assert issubclass(InputError, AnalysisError) and issubclass(InputError, ValueError)


def test_get_names_source_key_and_aliases(tmp_path):
    p = tmp_path / "s.json"
    p.write_text('{"time": {"wall_s": 4.5}, "flag": true, "none": null}')
    rec = read_json(p)
    assert get(rec, ("wall_s", "time.wall_s")) == 4.5  # alias through a nested object
    with pytest.raises(InputError) as info:
        get(rec, ("eq6_s", "eq6"))
    assert str(info.value) == f"{p}: missing key 'eq6_s' (or 'eq6')"
    with pytest.raises(InputError, match="key 'flag' must be a number, got True"):
        get_num(rec, "flag")
    assert opt(rec, "none", 7) == 7 and opt_num(rec, "absent") is None


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "out.html"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert os.listdir(target.parent) == ["out.html"]
    old = os.umask(0o022)
    try:
        atomic_write_text(target, "three")
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
