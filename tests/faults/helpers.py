"""Shared pieces of the fault-injection suite: tiny runs, launching them, and comparing finished states."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.checkpoints import rank_pid, rank_states, same
from tests.parallel.harness import MPIRUN, REPO, mpi_env

__all__ = ["TINY", "K", "train", "states", "same", "assert_same_final_state", "needs_root", "rank_pid",
           "one_error_line", "tree_bytes", "PY"]

PY = sys.executable
K = 2
# 256 synthetic images over 2 ranks at batch 8: 16 steps per epoch, 48 in all. Local SGD with H = 2 and a sleep of
# 0.1 s per sync (timing only: no effect on the numbers) leaves a few seconds between checkpoints for the faults.
TINY = ["--model", "resnet8", "--width", "4", "--synthetic-train", "256", "--synthetic-test", "64",
        "--synthetic-size", "8", "--batch-size", "8", "--lr-warmup-epochs", "0.5", "--algorithm", "local",
        "--H", "2", "--epochs", "3", "--global-sync-delay", "0.1", "--quiet"]

needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                reason="needs root and unshare(1) for a private mount namespace (CI runs as root)")


def train(args: list[str], *, n: int = K, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`mpirun -n N python -m train ARGS` as a user runs it; stdout and stderr kept apart."""
    return subprocess.run([MPIRUN, "-n", str(n), PY, "-m", "train", *args], cwd=REPO, env=mpi_env(),
                          capture_output=True, text=True, timeout=timeout, check=False)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single line a failing command printed (asserting that it printed exactly one, and no MPI noise)."""
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{proc.stdout}{proc.stderr}"
    assert "Abort" not in lines[0] and "Traceback" not in lines[0]
    return lines[0]


def states(run: Path, n: int = K) -> list[dict]:
    return rank_states(run, n)


def assert_same_final_state(ref: Path, other: Path) -> None:
    """Both runs ended at the same step with bitwise identical models, optimisers, RNGs and metrics values."""
    a, b = states(ref), states(other)
    for r in range(K):
        assert a[r]["step"] == b[r]["step"]
        for key in ("model", "opt", "gen", "torch_rng", "window"):
            assert same(a[r][key], b[r][key]), f"rank {r}: {key} differs from the uninterrupted run"
    ra = [json.loads(x) for x in (ref / "metrics.jsonl").read_text().splitlines()]
    rb = [json.loads(x) for x in (other / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in ra] == [r["step"] for r in rb]
    assert [r.get("test_loss") for r in ra] == [r.get("test_loss") for r in rb]


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its content (to show that nothing changed)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
