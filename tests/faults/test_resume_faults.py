"""Faults around --resume: a finished run, changed flags, a corrupt checkpoint (fallback), a failed resume."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from tests.faults.helpers import PY, TINY, one_error_line, states, train, tree_bytes
from tests.parallel.harness import REPO, mpi_env


def test_resume_of_a_finished_run_changes_nothing(reference: Path) -> None:
    before = tree_bytes(reference)
    proc = train(["--resume", str(reference)])
    assert proc.returncode == 0
    line = one_error_line(proc)
    assert line.startswith(f"{reference} is already complete (48/48 steps, 3 epochs") and "nothing to do" in line
    assert "--epochs E with E > 3" in line
    assert tree_bytes(reference) == before  # summary.json (final.*, totals) and everything else untouched


def test_resume_with_differing_flags_is_refused_with_one_line(reference: Path, monkeypatch, capsys) -> None:
    """Decided before MPI starts (in-process here, as every rank runs it): one line from launch rank 0, exit 2."""
    from train.cli import main
    before = tree_bytes(reference)
    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setenv("PMI_SIZE", "2")
    assert main(["--resume", str(reference), "--H", "8", "--model", "resnet20", "--checkpoint-every", "1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"error: --resume {reference}: --model resnet20 (the run has resnet8), --H 8 (the run has 2) would change "
        f"the run's configuration; only --epochs, --stop-at-epoch, --checkpoint-every, --checkpoint-minutes, "
        f"--data-dir may change on resume"), err
    monkeypatch.setenv("PMI_SIZE", "3")
    assert main(["--resume", str(reference)]) == 2
    assert capsys.readouterr().err.splitlines() == [(f"error: checkpoint in {reference} was written by 2 ranks; "
                                                    f"resume with mpirun -n 2, got 3")]
    monkeypatch.setenv("PMI_RANK", "1")  # the other ranks exit alike, silently
    assert main(["--resume", str(reference)]) == 2 and capsys.readouterr().err == ""
    assert tree_bytes(reference) == before


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def test_corrupt_checkpoint_falls_back_to_the_previous_one(reference: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    latest = json.loads((run / "checkpoints" / "latest.json").read_text())
    bad = run / "checkpoints" / latest["dir"] / "rank-0001.pt"
    _truncate(bad)
    verify = subprocess.run([PY, "-m", "train", "verify", str(run)], cwd=REPO, env=mpi_env(), capture_output=True,
                            text=True, timeout=60, check=False)
    assert verify.returncode == 2
    assert one_error_line(verify).startswith(f"error: checkpoint file {bad} is corrupt")
    # extend the run by one epoch: the latest set is corrupt, so the ranks go on from the previous one together
    proc = train(["--resume", str(run), "--epochs", "4", "--quiet"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = one_error_line(proc)
    assert line.startswith(f"warning: checkpoint file {bad} is corrupt") and \
        line.endswith(f"resuming from the previous checkpoint instead: checkpoints/{latest['previous']['dir']} "
                      f"(after step {latest['previous']['step'] + 1})"), line
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps_done"] == 64 and summary["total_steps"] == 64
    assert summary["final"]["test_loss"] is not None and summary["totals_mean"]["compute_s"] is not None
    # the totals are taken after the final checkpoint on every rank: max and rank 0 count the same writes
    assert summary["totals_max"]["checkpoints"] == summary["totals_rank0"]["checkpoints"] >= 1, summary
    assert summary["totals_max"]["checkpoint_s"] >= summary["totals_rank0"]["checkpoint_s"], summary
    epochs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in epochs if r["kind"] == "epoch"] == [15, 31, 47, 63]  # no gap, no duplicate
    assert json.loads((run / "config.json").read_text())["config"]["epochs"] == 4.0
    st = states(run)
    assert st[0]["step"] == 63


def test_failed_resume_rewrites_nothing(reference: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    latest = json.loads((run / "checkpoints" / "latest.json").read_text())
    for d in (latest["dir"], latest["previous"]["dir"]):
        _truncate(run / "checkpoints" / d / "rank-0000.pt")
    before = tree_bytes(run)
    proc = train(["--resume", str(run), "--epochs", "4", "--quiet"])
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert line.startswith(f"error: checkpoint file {run / 'checkpoints' / latest['dir'] / 'rank-0000.pt'} is "
                           f"corrupt") and "the previous checkpoint is unusable too" in line, line
    assert tree_bytes(run) == before  # config.json (epochs 3), metrics, summary: as they were


def test_resume_of_a_folder_without_checkpoint_starts_it_again(tmp_path: Path) -> None:
    """A crash before the first checkpoint (config.json and a few records only): resume starts over at step 0."""
    run = tmp_path / "run"
    proc = train([*TINY, "--epochs", "1", "--out-dir", str(run)], n=1)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shutil.rmtree(run / "checkpoints")
    (run / "summary.json").unlink()
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"kind": "step", "st')  # torn by the crash
    proc = train(["--resume", str(run)], n=1)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"note: {run} has no checkpoint yet: its run starts again from step 0" in proc.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps_done"] == summary["total_steps"]
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps.count(0) == 1  # the records of the first attempt are gone, not doubled
