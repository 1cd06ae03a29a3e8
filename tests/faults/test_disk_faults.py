"""Unwritable and full output locations: a read-only mount and a small tmpfs, each in a private mount namespace
(`unshare -m`: as root, chmod 555 does not stop writes, and nothing leaks out of the test)."""
from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.faults.helpers import PY, TINY, K, assert_same_final_state, needs_root
from tests.parallel.harness import MPIRUN, REPO, mpi_env

FIXTURES = REPO / "tests" / "fixtures" / "analysis"


def q(path: object) -> str:
    """A path as one shell word (checkouts and temp folders may hold spaces)."""
    return shlex.quote(str(path))


def _in_namespace(script: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run a shell script in a private mount namespace; its mounts vanish with it."""
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], cwd=REPO,
                          env=mpi_env(), capture_output=True, text=True, timeout=timeout, check=False)


def _lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln.strip()]


@needs_root
def test_read_only_output_is_one_line_before_any_work(tmp_path: Path) -> None:
    ro, logs = tmp_path / "ro", tmp_path / "logs"
    ro.mkdir()
    logs.mkdir()
    cmds = {
        "train": f"{q(MPIRUN)} -n {K} {q(PY)} -m train {' '.join(TINY)} --out-dir {q(ro)}/run",
        "whatif": f"{q(PY)} -m sim whatif --K 4 --H 1,4 --out {q(ro)}/w.jsonl --quiet",
        "calibrate": f"{q(PY)} -m sim calibrate --intra {q(FIXTURES)}/bench_p4.jsonl --out {q(ro)}/topo.json",
        "analysis": f"{q(PY)} -m analysis curves {q(FIXTURES)}/runs/local_K4_H8 --out-dir {q(ro)}/fig --quiet",
    }
    script = f"mount --bind {q(ro)} {q(ro)} && mount -o remount,bind,ro {q(ro)} || exit 99\n" + "".join(
        f"{cmd} > {q(logs)}/{name}.out 2>&1; echo $? > {q(logs)}/{name}.rc\n" for name, cmd in cmds.items())
    proc = _in_namespace(script)
    assert proc.returncode == 0, proc.stderr
    for name, where in (("train", "--out-dir"), ("whatif", "--out"), ("calibrate", "--out"),
                        ("analysis", "--out-dir")):
        assert (logs / f"{name}.rc").read_text().strip() == "2", (name, (logs / f"{name}.out").read_text())
        lines = _lines(logs / f"{name}.out")
        assert len(lines) == 1 and lines[0].startswith(f"error: {where} ") and "Read-only file system" in lines[0], \
            (name, lines)
    assert list(ro.iterdir()) == []  # nothing written, not even a temp file or an empty folder


@needs_root
def test_too_small_output_location_is_refused_at_start(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    script = (f"mount -t tmpfs -o size=1m tmpfs {q(small)} || exit 99\n"
              f"{q(MPIRUN)} -n {K} {q(PY)} -m train {' '.join(TINY)} --out-dir {q(small)}/run; echo rc=$?; "
              f"ls -A {q(small)}")
    proc = _in_namespace(script)
    assert proc.stdout.split() == ["rc=2"], proc.stdout  # and `ls -A` finds nothing on the small disk
    assert proc.stderr.splitlines() == [(f"error: --out-dir {small}/run has 1.0 MiB free, at least 16.0 MiB are "
                                        f"needed (free some space or choose another location)")], proc.stderr


@needs_root
def test_disk_full_mid_run_is_one_line_and_the_run_resumes_bitwise(reference: Path, tmp_path: Path) -> None:
    """The tmpfs fills up after the first checkpoint: exit 74 with one line naming the file, no temp file, the last
    complete checkpoint kept; after freeing space, --resume ends exactly where the uninterrupted run did."""
    disk, keep = tmp_path / "disk", tmp_path / "keep"
    disk.mkdir()
    keep.mkdir()
    run = disk / "run"
    train = f"{q(MPIRUN)} -n {K} {q(PY)} -m train"
    script = f"""
mount -t tmpfs -o size=24m tmpfs {q(disk)} || exit 99
{train} {' '.join(TINY)} --out-dir {q(run)} > {q(keep)}/first.out 2>&1 &
job=$!
i=0
while [ ! -f {q(run)}/checkpoints/latest.json ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i+1)); done
dd if=/dev/zero of={q(disk)}/filler bs=64k > /dev/null 2>&1
wait $job; echo $? > {q(keep)}/first.rc
find {q(run)} -name '*.tmp' > {q(keep)}/tmpfiles
cp -a {q(run)} {q(keep)}/failed
rm {q(disk)}/filler
{train} --resume {q(run)} > {q(keep)}/resume.out 2>&1; echo $? > {q(keep)}/resume.rc
cp -a {q(run)} {q(keep)}/resumed
"""
    proc = _in_namespace(script, timeout=400)
    assert proc.returncode == 0, proc.stderr
    first = _lines(keep / "first.out")
    assert (keep / "first.rc").read_text().strip() == "74", first
    assert len(first) == 1 and first[0].startswith(f"error: cannot write {run}/") and \
        "No space left on device" in first[0] and "can be resumed from its last complete checkpoint" in first[0], first
    assert (keep / "tmpfiles").read_text() == ""
    failed = keep / "failed"
    latest = json.loads((failed / "checkpoints" / "latest.json").read_text())
    assert latest["step"] < 47 and sorted(p.name for p in (failed / "checkpoints").iterdir()) == \
        sorted(["latest.json", latest["dir"]] + ([latest["previous"]["dir"]] if latest["previous"] else []))
    assert (keep / "resume.rc").read_text().strip() == "0", (keep / "resume.out").read_text()
    assert_same_final_state(reference, keep / "resumed")


@pytest.mark.parametrize("tool", ["analysis", "whatif", "calibrate"])
def test_write_failure_mid_work_is_one_line_and_leaves_nothing(tool: str, tmp_path: Path, monkeypatch,
                                                               capsys) -> None:
    """The disk fills while the output is written (fsync fails with ENOSPC): exit 74, one line naming the file,
    no temp file, no folder left empty, and an existing output is kept as it was."""
    import os

    calls = []

    def full(fd: int) -> None:  # the first fsync is the start-up probe of the output location: that one passes
        calls.append(fd)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        real(fd)
    real = os.fsync
    out = tmp_path / "new" / "fig"
    if tool == "analysis":
        from analysis.cli import main
        argv = ["curves", str(FIXTURES / "runs" / "local_K4_H8"), "--out-dir", str(out), "--quiet"]
        target = out
    else:
        from sim.cli import main
        target = tmp_path / ("w.jsonl" if tool == "whatif" else "topo.json")
        target.write_text("old\n")
        argv = (["whatif", "--K", "4", "--H", "1,4", "--out", str(target), "--quiet"] if tool == "whatif" else
                ["calibrate", "--intra", str(FIXTURES / "bench_p4.jsonl"), "--out", str(target)])
    monkeypatch.setattr(os, "fsync", full)
    code = main(argv)
    monkeypatch.undo()
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 74 and len(err) == 1, err
    assert err[0].startswith(f"error: cannot write {target}") and err[0].endswith("No space left on device"), err
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob(".*tmp"))
    if tool == "analysis":
        assert not (tmp_path / "new").exists()
    else:
        assert target.read_text() == "old\n"
