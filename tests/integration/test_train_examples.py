"""Every runnable script in mpirun_examples/ runs with 2-4 ranks and a tiny budget, and its run folder is checked."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.fake_wikitext import write_fake_wikitext
from tests.fixtures.shared_data import need_data
from tests.parallel.harness import MPIRUN, REPO, mpi_env

EX = REPO / "mpirun_examples"
TINY = ["--width", "4", "--synthetic-train", "512", "--synthetic-test", "128", "--synthetic-size", "8",
        "--batch-size", "8", "--epochs", "1", "--lr-warmup-epochs", "0.2", "--quiet"]


def _run(script: str, out: Path, args: list[str], extra_env: dict[str, str] | None = None, np: int = 2) -> dict:
    env = mpi_env({"NP": str(np), "MPIRUN": MPIRUN, "PYTHON": sys.executable, "OUT": str(out), **(extra_env or {})})
    proc = subprocess.Popen(["bash", str(EX / script), *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        text, _ = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"{script} timed out: {proc.communicate()[0][-3000:]}") from None
    assert proc.returncode == 0, f"{script} failed:\n{text[-4000:]}"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["world_size"] == np
    assert summary["syncs"] == summary["expected_syncs"]
    return summary


@pytest.mark.parametrize("script, algorithm", [("minibatch_k16.sh", "minibatch"), ("local_h16.sh", "local"),
                                               ("postlocal.sh", "postlocal")])
def test_train_example_flat(script: str, algorithm: str, tmp_path: Path) -> None:
    s = _run(script, tmp_path, TINY)
    assert s["algorithm"] == algorithm and s["syncs"]["block"] == 0
    T = s["total_steps"]
    if algorithm == "minibatch":
        assert s["syncs"]["global"] == T
    elif algorithm == "local":
        assert s["syncs"]["global"] == -(-T // 16)
    else:
        assert -(-T // 16) < s["syncs"]["global"] < T


def test_train_example_hierarchical(tmp_path: Path) -> None:
    s = _run("hierarchical_8x2.sh", tmp_path, TINY, np=4)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["topology"] == "2x2 (virtual blocks)"
    T = s["total_steps"]
    assert s["syncs"]["global"] == -(-T // 8) and s["syncs"]["block"] == -(-T // 2) - -(-T // 8)


def test_train_example_slow_network(tmp_path: Path) -> None:
    s = _run("slow_network.sh", tmp_path, TINY, {"DELAY": "0.1"}, np=4)
    n = s["syncs"]["global"]
    assert abs(s["totals_rank0"]["delay_s_global"] - 0.1 * n) < 1e-9
    assert s["totals_rank0"]["comm_s_global"] >= 0.1 * n and s["wall_s"] >= 0.1 * n


def test_train_example_w8a(tmp_path: Path) -> None:
    s = _run("w8a_logreg.sh", tmp_path, ["--epochs", "0.5", "--quiet"],
             {"DATA_DIR": str(need_data("w8a").parent)})
    assert s["model"] == "logreg" and s["dataset"] == "w8a"
    assert s["final"]["test_acc"] > 0.975  # predicting the majority class everywhere gives 0.970


def test_train_example_lstm_wikitext2(tmp_path: Path) -> None:
    data = write_fake_wikitext(tmp_path / "wt", n_train=1200, n_test=300)
    s = _run("lstm_wikitext2.sh", tmp_path / "run", ["--bptt", "5", "--batch-size", "4", "--epochs", "0.5",
                                                     "--quiet"], {"DATA_DIR": str(data)})
    assert s["model"] == "lstm" and s["dataset"] == "wikitext2" and s["algorithm"] == "postlocal"
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["config"]["lm_state"] == "auto" and config["config"]["bptt"] == 5


def test_train_documented_examples_are_valid_bash() -> None:
    for name in ("hostfile_multinode.sh", "slurm.sbatch"):
        subprocess.run(["bash", "-n", str(EX / name)], check=True)
        assert "python -m train" in (EX / name).read_text()
