"""No flag can make a run exhaust the machine's memory: the estimate of train/memory.py refuses it first."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.faults.helpers import PY, one_error_line, train
from tests.parallel.harness import REPO, mpi_env
from train.config import TrainConfig
from train.errors import TrainError
from train.memory import check_memory, estimate_memory


def test_a_huge_batch_is_one_line_and_exit_2_in_seconds(tmp_path: Path) -> None:
    """The command that once grew to 12 GB until the OOM killer ended it: now every rank refuses it at once."""
    run = tmp_path / "run"
    t0 = time.monotonic()
    proc = train(["--batch-size", "1000000000000", "--out-dir", str(run)], n=2, timeout=120)
    took = time.monotonic() - t0
    line = one_error_line(proc)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert line.startswith("error: this run needs an estimated ") and "2 ranks x" in line, line
    assert "available (" in line and "lower --batch-size" in line, line
    assert not run.exists(), "nothing may be written for a refused run"
    assert took < 60, f"the refusal took {took:.1f} s (start-up of 2 ranks included)"


#: Two commands in one interpreter under an address-space cap (one torch import instead of two): each prints its
#: exit code after its own error line.
_DRIVER = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))
from train.cli import main
common = ["--engine", "virtual", "--workers", "2", "--threads", "2", "--quiet"]
for batch, out in ((sys.argv[2], sys.argv[3]), (sys.argv[4], sys.argv[5])):
    print("exit", main([*common, "--batch-size", batch, "--out-dir", out]), file=sys.stderr, flush=True)
"""


def test_ulimit_v_refuses_what_cannot_be_mapped_and_lets_a_small_run_through(tmp_path: Path) -> None:
    """Under `ulimit -v` of 1.5 GiB a virtual run whose estimate is about 2.5 GiB is refused by name; a small batch
    under the same limit passes the guard (and stops at the next check, the run folder already holding a run)."""
    limit = 3 << 29
    big = TrainConfig(engine="virtual", workers=2, batch_size=4500, threads=2)
    est = estimate_memory(big, workers=2, processes=1)
    assert 2 << 30 < est.allocations < 3 << 30, est.describe()  # above the limit, below what any test machine has
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "config.json").write_text("{}")
    proc = subprocess.run([PY, "-c", _DRIVER, str(limit), "4500", str(tmp_path / "big"), "32", str(taken)],
                          cwd=REPO, env=mpi_env(), capture_output=True, text=True, timeout=120, check=False)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 4 and lines[1] == lines[3] == "exit 2", proc.stdout + proc.stderr
    assert lines[0].startswith("error: this run needs an estimated "), lines[0]
    assert "its address space limit (ulimit -v) leaves" in lines[0], lines[0]
    assert "lower --batch-size and --workers" in lines[0], lines[0]
    assert not (tmp_path / "big").exists()
    assert "already holds a run" in lines[2], lines[2]  # past the guard: the next check refused it


def test_estimate_scales_with_what_drives_it() -> None:
    """Activations and batches grow with the batch (and, in one process, with the workers); the model state with
    the workers; MPI ranks on one machine multiply the total."""
    one = estimate_memory(TrainConfig(batch_size=32), workers=1, processes=1)
    two = estimate_memory(TrainConfig(batch_size=64), workers=1, processes=1)
    assert two.parts["activations"] == 2 * one.parts["activations"] and two.parts["data"] == one.parts["data"]
    v = estimate_memory(TrainConfig(engine="virtual", workers=8, virtual_step="vmap"), workers=8, processes=1)
    assert v.parts["activations"] > 8 * one.parts["activations"]  # all K at once, and vmap's larger factor
    assert v.parts["model state"] > 7 * one.parts["model state"]
    loop = estimate_memory(TrainConfig(engine="virtual", workers=8, virtual_step="loop", threads=2), workers=8,
                           processes=1)
    assert loop.parts["activations"] == 2 * one.parts["activations"]  # two threads' workers at a time
    ranks = estimate_memory(TrainConfig(), workers=1, processes=16)
    assert ranks.total == 16 * ranks.per_process and ranks.per_process == one.per_process
    wide = estimate_memory(TrainConfig(width=64), workers=1, processes=1)
    assert wide.parts["model state"] > 15 * one.parts["model state"]  # parameters ~ width^2
    data = estimate_memory(TrainConfig(synthetic_train=10 * 8192), workers=1, processes=1)
    assert 8 * one.parts["data"] < data.parts["data"] < 10 * one.parts["data"]


def test_check_names_the_estimate_what_is_available_and_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("train.memory.available_memory", lambda: (1 << 30, "MemAvailable"))
    monkeypatch.setattr("train.memory.address_space_left", lambda: None)
    monkeypatch.setattr("train.memory.resident_bytes", lambda: 100 << 20)  # the interpreter: 125 MiB with margin
    est = check_memory(TrainConfig(), size=4)  # the default run fits in 1 GiB
    assert est.parts["interpreter"] == 125 << 20 and est.processes == 4
    with pytest.raises(TrainError, match=r"needs an estimated .* \(4 ranks x .*activations .*\) of memory but this "
                                         r"machine has 1\.1 GiB available \(MemAvailable, and this process\); "
                                         r"lower --batch-size"):
        check_memory(TrainConfig(batch_size=100_000), size=4)
    with pytest.raises(TrainError, match=r"lower the dataset \(--synthetic-train"):
        check_memory(TrainConfig(synthetic_train=10**8), size=1)
    with pytest.raises(TrainError, match=r"\(32 ranks x .*interpreter 125\.0 MiB.*; use fewer ranks per machine$"):
        check_memory(TrainConfig(), size=32)  # 32 interpreters do not fit in 1 GiB
    monkeypatch.setattr("train.memory.available_memory", lambda: None)  # nothing known: nothing refused
    check_memory(TrainConfig(batch_size=100_000), size=4)
