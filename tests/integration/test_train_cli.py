"""CLI runs of the trainer: the default 16-rank run, resume equivalence, errors and abort on a failing rank."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.fixtures.checkpoints import rank_pid, rank_states, same
from tests.fixtures.fake_wikitext import write_fake_wikitext
from tests.parallel.harness import MPIRUN, REPO, mpi_env, mpirun

TINY = ["--model", "resnet8", "--width", "4", "--synthetic-train", "256", "--synthetic-test", "64",
        "--synthetic-size", "8", "--batch-size", "8", "--lr-warmup-epochs", "0.5", "--quiet"]




def test_train_default_16_rank_run(tmp_path: Path) -> None:
    """`mpirun -n 16 python -m train` with no training flag but a shorter run (4 of the default 10 epochs: `make
    demo` runs all 10): completes, learns, syncs as scheduled, identical."""
    t0 = time.perf_counter()
    out = mpirun(16, ["-m", "train", "--epochs", "4", "--out-dir", str(tmp_path)], timeout=240).stdout
    elapsed = time.perf_counter() - t0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["world_size"] == 16
    assert summary["algorithm"] == "postlocal"
    assert summary["syncs"] == summary["expected_syncs"]
    assert summary["final"]["test_acc"] > 0.3, summary["final"]   # chance is 0.1 (measured: 0.41)
    assert summary["startup_s"] > 0 and summary["startup_s"] + summary["wall_s"] < elapsed
    assert "test acc (final/best)" in out and "syncs global / block" in out
    states = rank_states(tmp_path, 16)
    for st in states[1:]:
        for name, p in states[0]["model"].items():
            if "running" not in name and "num_batches" not in name:
                assert torch.equal(p, st["model"][name]), f"parameter {name} differs between ranks"
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert len(epochs) == 4 and epochs[-1]["test_acc"] > epochs[0]["test_acc"]
    print(f"default 16-rank run: {elapsed:.1f} s end to end, {summary['startup_s']:.1f} s start-up, "
          f"{summary['wall_s']:.1f} s training")


def _fake_cifar(folder: Path) -> None:
    """CIFAR-10 batch files in the python-pickle format: 128 random training images, 16 test images."""
    import pickle

    import numpy as np
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name, n in [(f"data_batch_{i}", 26 if i <= 3 else 25) for i in range(1, 6)] + [("test_batch", 16)]:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, n).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))


def test_train_resume_is_bit_identical(tmp_path: Path) -> None:
    """Augmentation (per-rank generator), dropout (torch RNG) and hybrid momentum (anchor, buffer) all resume."""
    _fake_cifar(tmp_path / "data" / "cifar-10-batches-py")
    args = ["-m", "train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--model",
            "wideresnet10-1", "--dropout", "0.2", "--batch-size", "8", "--lr-warmup-epochs", "0.5", "--quiet",
            "--momentum-variant", "hybrid", "--global-momentum", "0.3", "--algorithm", "local", "--H", "3",
            "--epochs", "2"]
    full, part = tmp_path / "full", tmp_path / "part"
    mpirun(2, [*args, "--out-dir", str(full)], timeout=120)
    mpirun(2, [*args, "--out-dir", str(part), "--stop-at-epoch", "1"], timeout=120)
    paused = json.loads((part / "summary.json").read_text())
    assert paused["status"] == "paused" and 0 < paused["steps_done"] < paused["total_steps"]
    from train.cli import main  # `train verify` in-process: the command's own exit codes and lines, no second import
    assert main(["verify", str(part)]) == 1  # paused between two syncs (H = 3): the ranks' models differ
    mpirun(2, ["-m", "train", "--resume", str(part), "--quiet"], timeout=120)
    assert main(["verify", str(part)]) == 0
    a, b = rank_states(full, 2), rank_states(part, 2)
    for r in range(2):
        assert a[r]["step"] == b[r]["step"]
        for key in ("model", "opt", "gen", "torch_rng", "window"):
            assert same(a[r][key], b[r][key]), f"rank {r}: {key} differs after resume"
        for key in ("anchor", "momentum_buf"):  # global-momentum state (timers in "stats" differ, of course)
            assert a[r]["sync"][key] is not None and same(a[r]["sync"][key], b[r]["sync"][key]), key
        for key in ("syncs", "bytes"):
            assert a[r]["sync"]["stats"]["global"][key] == b[r]["sync"]["stats"]["global"][key]
    fa = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    fb = [json.loads(x) for x in (part / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in fa] == [r["step"] for r in fb]
    assert [r.get("test_acc") for r in fa] == [r.get("test_acc") for r in fb]


def test_train_lstm_carried_state_resumes_bit_identical(tmp_path: Path) -> None:
    """WikiText-2 format, --lm-state auto (= carry): paused mid-column, the hidden state each rank carries is
    checkpointed, and the resumed run ends bitwise equal to the uninterrupted one, test loss included."""
    data = write_fake_wikitext(tmp_path / "wt", n_train=1500, n_test=300)
    args = ["-m", "train", "--model", "lstm64", "--dataset", "wikitext2", "--data-dir", str(data), "--bptt", "5",
            "--batch-size", "4", "--algorithm", "local", "--H", "3", "--epochs", "1", "--eval-every", "0.5",
            "--lr-warmup-epochs", "0", "--quiet"]
    full, part = tmp_path / "full", tmp_path / "part"
    mpirun(2, [*args, "--out-dir", str(full)], timeout=180)
    mpirun(2, [*args, "--out-dir", str(part), "--stop-at-epoch", "0.6"], timeout=180)
    mid = rank_states(part, 2)
    assert all(st["lm_state"]["hidden"] is not None for st in mid)  # paused with a state to carry on from
    mpirun(2, ["-m", "train", "--resume", str(part), "--quiet"], timeout=180)
    a, b = rank_states(full, 2), rank_states(part, 2)
    for r in range(2):
        for key in ("model", "opt", "lm_state", "torch_rng"):
            assert same(a[r][key], b[r][key]), f"rank {r}: {key} differs after resume"
    assert not same(a[0]["lm_state"], a[1]["lm_state"])  # each worker carries its own text's state
    fa = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    fb = [json.loads(x) for x in (part / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("test_loss") for r in fa] == [r.get("test_loss") for r in fb]
    config = json.loads((full / "config.json").read_text())
    assert config["config"]["lm_state"] == "auto"


def test_train_bad_flag_is_one_line_error_exit_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "train", "--H", "0"], cwd=REPO, env=mpi_env(),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --H must be an integer >= 1, got 0"


def test_train_usage_error_is_one_line_from_rank_0_under_mpirun() -> None:
    proc = subprocess.run([MPIRUN, "-n", "3", sys.executable, "-m", "train", "--H", "four"], cwd=REPO,
                          env=mpi_env(), capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: argument --H: invalid int value: 'four' (see `python -m train --help`)"
    assert proc.stdout == ""


@pytest.mark.parametrize("flags, needle", [
    (["--dataset", "cifar10", "--data-dir", "{tmp}/none"], "error: cifar10 files missing in {tmp}/none: data_batch_1"),
    (["--model", "lstm", "--lm-state", "carry", "--synthetic-train", "40", "--batch-size", "32"],
     "error: lm_state carry needs at least batch_size 32 sequences per worker, but 40 sequences over 3 ranks give 13"),
])
def test_train_data_errors_are_one_line_on_every_rank_without_abort(tmp_path: Path, flags: list[str],
                                                                    needle: str) -> None:
    """Found once the data is loaded (after MPI starts): the ranks agree, rank 0 prints one line, all exit 2."""
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    proc = subprocess.run([MPIRUN, "-n", "3", sys.executable, "-m", "train", *flags, "--out-dir",
                           str(tmp_path / "run")], cwd=REPO, env=mpi_env(), capture_output=True, text=True,
                          timeout=90, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(needle.replace("{tmp}", str(tmp_path))), proc.stderr
    assert "Abort" not in proc.stdout + proc.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, needle", [
    (["--straggler", "5:2"], "--straggler rank must be < the number of ranks 2, got 5"),
    (["--algorithm", "hierarchical", "--gpus-per-node", "3"], "--gpus-per-node must divide the number of ranks 2"),
])
def test_train_world_checks_before_mpi(flags: list[str], needle: str) -> None:
    proc = subprocess.run([MPIRUN, "-n", "2", sys.executable, "-m", "train", *flags], cwd=REPO, env=mpi_env(),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr


def test_train_rank_that_cannot_load_its_checkpoint_stops_every_rank(tmp_path: Path) -> None:
    """Rank 1's checkpoint file is gone while rank 0's loads: the ranks agree (no rank is left in a collective, no
    hang, no MPI_Abort), rank 0 prints one line naming the file, and every rank exits 2."""
    run = tmp_path / "run"
    mpirun(2, ["-m", "train", *TINY, "--epochs", "1", "--out-dir", str(run)], timeout=120)
    latest = json.loads((run / "checkpoints" / "latest.json").read_text())
    missing = run / "checkpoints" / latest["dir"] / "rank-0001.pt"
    missing.unlink()
    t0 = time.perf_counter()
    proc = subprocess.run([MPIRUN, "-n", "2", sys.executable, "-m", "train", "--resume", str(run), "--epochs", "2"],
                          cwd=REPO, env=mpi_env(), capture_output=True, text=True, timeout=90, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [(f"error: checkpoint file missing: {missing}; there is no earlier "
                                                f"checkpoint (start the run again in a new --out-dir)")], proc.stderr
    assert "Abort" not in proc.stdout and time.perf_counter() - t0 < 60


def _signal_mid_run(n: int, flags: list[str], run: Path, send: Callable[[int], None]) -> tuple[int, str]:
    """Start an n-rank run in its own process group, call `send(launcher pid)` once its first checkpoint
    exists, and return (exit code, output); the group is killed if it outlives the wait."""
    cmd = [MPIRUN, "-n", str(n), sys.executable, "-m", "train", *TINY, *flags, "--checkpoint-every", "1",
           "--out-dir", str(run)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=mpi_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not (run / "checkpoints" / "latest.json").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
        send(proc.pid)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return proc.returncode, out


def test_train_ctrl_c_leaves_consistent_run_dir(tmp_path: Path) -> None:
    """SIGINT mid-run: exit 130, summary says interrupted, files parse, and --resume finishes the run."""
    run = tmp_path / "run"
    code, out = _signal_mid_run(2, ["--epochs", "400"], run, lambda pid: os.killpg(pid, signal.SIGINT))
    assert code == 130, out[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["steps_done"] < summary["total_steps"]
    assert summary["signal"] == "SIGINT"
    json.loads((run / "config.json").read_text())
    for line in (run / "metrics.jsonl").read_text().splitlines():
        json.loads(line)
    latest = json.loads((run / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == summary["steps_done"] - 1  # the ranks stopped together and checkpointed there
    assert sorted(p.name for p in (run / "checkpoints" / latest["dir"]).iterdir()) == ["rank-0000.pt",
                                                                                        "rank-0001.pt"]
    spe = json.loads((run / "config.json").read_text())["plan"]["steps_per_epoch"]
    stop = (latest["step"] + 1) / spe + 2
    mpirun(2, ["-m", "train", "--resume", str(run), "--stop-at-epoch", str(stop), "--quiet"], timeout=120)
    resumed = json.loads((run / "summary.json").read_text())
    assert resumed["status"] == "paused" and resumed["steps_done"] > latest["step"] + 1


@pytest.mark.parametrize("target", ["rank 1 only", "the launcher"])
def test_train_sigterm_stops_every_rank_at_a_global_sync(tmp_path: Path, target: str) -> None:
    """A batch system's SIGTERM, to one rank only (rank 1 of 3) or to mpiexec (which forwards it), during local
    SGD with H = 4: every rank stops at the same global sync, checkpoints there, and the job exits 143 instead of
    hanging or aborting."""
    run = tmp_path / "run"
    send = (lambda _pid: os.kill(rank_pid(run, 1), signal.SIGTERM)) if target == "rank 1 only" else \
        (lambda pid: os.kill(pid, signal.SIGTERM))
    code, out = _signal_mid_run(3, ["--algorithm", "local", "--H", "4", "--epochs", "400"], run, send)
    assert code == 143, out[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["signal"] == "SIGTERM"
    done = summary["steps_done"]
    assert 0 < done < summary["total_steps"] and done % 4 == 0  # a global sync of local SGD, H = 4
    assert summary["syncs"]["global"] == done // 4
    latest = json.loads((run / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == done - 1 and latest["world_size"] == 3


def test_train_refuses_to_mix_runs_in_one_folder(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    proc = subprocess.run([sys.executable, "-m", "train", "--out-dir", str(tmp_path)], cwd=REPO, env=mpi_env(),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: run folder {tmp_path} already holds a run (config.json); continue it "
                                   f"with --resume {tmp_path} or choose another --out-dir")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_train_device_cuda_without_gpu_is_an_error(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "train", "--device", "cuda", "--out-dir", str(tmp_path / "r")],
                          cwd=REPO, env=mpi_env(), capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: device 'cuda' was asked for but torch sees no CUDA device; "
                                   "use --device cpu or auto")
