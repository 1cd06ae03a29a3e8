"""CLI runs with --compress: bytes in summary.json and metrics.jsonl follow the formula; bad flags exit 2."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.parallel.harness import REPO, mpi_env, mpirun

TINY = ["--model", "logreg", "--synthetic-train", "512", "--synthetic-test", "128", "--synthetic-size", "8",
        "--synthetic-noise", "2", "--batch-size", "8", "--epochs", "2", "--lr-warmup-epochs", "0",
        "--algorithm", "postlocal", "--switch-step", "10", "--H", "4", "--target-acc", "1", "--quiet"]


def test_compress_cli_bytes_follow_the_formula(tmp_path: Path) -> None:
    out = tmp_path / "run"
    mpirun(2, ["-m", "train", *TINY, "--compress", "ef-sign", "--out-dir", str(out)], timeout=120)
    summary = json.loads((out / "summary.json").read_text())
    config = json.loads((out / "config.json").read_text())
    d = config["model_params"]
    assert d == 3 * 8 * 8 * 10 + 10
    per_sync = (d + 7) // 8 + 4
    comp = summary["compression"]
    assert comp == {"scheme": "ef-sign", "payload_bytes": per_sync, "uncompressed_bytes": 4 * d,
                    "bytes_sent": {"block": 0, "global": summary["syncs"]["global"] * per_sync},
                    "bytes_recv": {"block": 0, "global": summary["syncs"]["global"] * per_sync}}  # K - 1 = 1
    assert summary["syncs"] == summary["expected_syncs"] and summary["syncs"]["global"] > 10
    assert config["payload_bytes"] == per_sync and summary["payload_bytes"] == per_sync
    steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in steps if r["kind"] == "step"]
    syncs = 0
    for r in steps:  # cumulative counters: every sync adds exactly one payload, sent and received
        syncs += r["sync"] == "global"
        assert r["bytes_global"] == r["bytes_recv_global"] == syncs * per_sync
    assert summary["final"]["test_acc"] > 0.6


@pytest.mark.parametrize("flags, message", [
    (["--compress", "bits"], "error: --compress must be one of none, sign, ef-sign, got 'bits'"),
    (["--compress", "sign", "--algorithm", "local", "--momentum-variant", "global"],
     "error: --compress 'sign' needs --momentum-variant local, got 'global'"),
    (["--sampler", "random"], "error: --sampler must be one of stream, iid, shuffle, got 'random'"),
])
def test_compress_cli_bad_flags_exit_2(flags: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    from train.cli import main  # in process: the flags are checked before MPI starts
    assert main(flags) == 2
    assert capsys.readouterr().err.strip() == message


def test_compress_cli_bad_flag_exits_2_from_the_shell() -> None:
    res = subprocess.run([sys.executable, "-m", "train", "--compress", "bits"], cwd=REPO, env=mpi_env(),
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 2
    assert res.stderr.strip() == "error: --compress must be one of none, sign, ef-sign, got 'bits'"
