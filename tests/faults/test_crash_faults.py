"""Hard faults of a running job: kill -9 of one rank, and Ctrl-C during start-up."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.faults.helpers import PY, TINY, K, assert_same_final_state, kill_group, rank_pid, train
from tests.parallel.harness import MPIRUN, REPO, mpi_env


def test_kill_9_of_one_rank_ends_the_job_and_the_folder_resumes_bitwise(reference: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen([MPIRUN, "-n", str(K), PY, "-m", "train", *TINY, "--out-dir", str(run)], cwd=REPO,
                            env=mpi_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        victim = rank_pid(run, 1)
        deadline = time.monotonic() + 120
        while not (run / "checkpoints" / "latest.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before the fault could be injected"
        os.kill(victim, signal.SIGKILL)
        t0 = time.monotonic()
        proc.communicate(timeout=30)
        ended = time.monotonic() - t0
    finally:
        kill_group(proc)
    assert proc.returncode != 0 and ended < 5, f"job took {ended:.1f} s to end after kill -9 of rank 1"
    latest = json.loads((run / "checkpoints" / "latest.json").read_text())
    assert latest["step"] < 47  # killed mid-run: the folder holds an earlier checkpoint, not the final one
    resumed = train(["--resume", str(run)])
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert_same_final_state(reference, run)


def test_ctrl_c_during_start_up_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen([MPIRUN, "-n", str(K), PY, "-m", "train", *TINY, "--out-dir", str(run)], cwd=REPO,
                            env=mpi_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        time.sleep(1.0)  # the ranks are importing torch
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        kill_group(proc)
    # mpiexec's own two lines about forwarding Ctrl-C are the launcher's, not the ranks'
    lines = [ln for ln in (out + err).splitlines() if ln.strip() and not ln.startswith("[mpiexec@")]
    assert proc.returncode == 130, out + err
    assert lines == ["error: interrupted by SIGINT during start-up: nothing was written; run the command again"] \
        or (len(lines) == 1 and lines[0].startswith("error: interrupted by SIGINT during start-up, before the first")), \
        out + err
    assert not run.exists() or not (run / "metrics.jsonl").exists() or not (run / "summary.json").exists()
    # nothing blocks starting the run again in the same folder
    assert not (run / "config.json").exists()


def test_time_based_checkpoints_are_agreed_at_a_global_sync(tmp_path: Path) -> None:
    """--checkpoint-minutes: rank 0's clock asks, the ranks agree at the stop check (every 16 steps here), and all
    checkpoint at the same step; with epoch checkpoints off, the set before the final one is the time-based one."""
    run = tmp_path / "run"
    proc = subprocess.run([MPIRUN, "-n", str(K), PY, "-m", "train", *TINY, "--checkpoint-every", "0",
                           "--checkpoint-minutes", "0.0005", "--out-dir", str(run)], cwd=REPO, env=mpi_env(),
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    latest = json.loads((run / "checkpoints" / "latest.json").read_text())
    # checks at steps 1, 17, 33 (global syncs of H = 2, at least 16 apart); the request posted at step 1 is read
    # at step 17, where every rank checkpoints; the one posted at 33 would be read after the end
    assert latest["step"] == 47 and latest["previous"]["step"] == 17, latest
    config = json.loads((run / "config.json").read_text())["config"]
    assert config["checkpoint_minutes"] == 0.0005 and config["checkpoint_every"] == 0
