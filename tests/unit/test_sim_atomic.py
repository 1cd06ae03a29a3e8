"""sim.atomic: whole file or nothing, and the mode a normal open() would give (not mkstemp's 0600)."""
from __future__ import annotations

import os

import pytest

from sim.atomic import atomic_open, atomic_write_text


def test_atomic_write_mode_and_content(tmp_path):
    old = os.umask(0o022)
    try:
        target = tmp_path / "out.json"
        atomic_write_text(target, "{}\n")
        assert target.read_text() == "{}\n"
        assert target.stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


def test_atomic_open_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target) as f:
        f.write("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
