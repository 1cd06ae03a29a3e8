"""benchmarks/gpu_check.sh on a machine without CUDA: one line saying why, a summary that says it, exit 0."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.parallel.harness import REPO


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the clean skip on a machine without CUDA")
def test_gpu_check_skips_cleanly_without_cuda(tmp_path: Path) -> None:
    res = tmp_path / "gpu"
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", str(res)], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False, env={**os.environ, "PYTHON": sys.executable})
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert lines[0].startswith("skipped: no CUDA device: torch ") and "is_available() False" in lines[0], lines
    summary = (res / "summary.md").read_text()
    assert "skipped: no CUDA device" in summary and "nothing else was run" in summary
    assert sorted(p.name for p in res.iterdir()) == ["summary.md"]  # no part ran, no stray file


def test_gpu_check_parts_run_on_the_cpu(tmp_path: Path) -> None:
    """The step-time sweep and the torch-backend averager of the GPU check, tried on the CPU (the GPU machine runs
    the same code with --device cuda): a table in the method's layout, and bitwise identical ranks under torchrun."""
    py = [sys.executable, "benchmarks/gpu_check.py"]
    steps = subprocess.run([*py, "steps", "--out", str(tmp_path), "--device", "cpu", "--batches", "32",
                            "--warmup", "0", "--iters", "1"], cwd=REPO, capture_output=True, text=True, timeout=120,
                           check=False)
    assert steps.returncode == 0, steps.stderr
    table = (tmp_path / "resnet20_steps.md").read_text().splitlines()
    assert table[2] == "| batch | this GPU | Titan Xp | Tesla V100 |" and table[4].startswith("| 32 | ")
    assert table[4].endswith("| 0.058 | 0.028 |") and len(table) == 5, table
    avg = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          *py[1:], "averager", "--out", str(tmp_path), "--device", "cpu"], cwd=REPO,
                         capture_output=True, text=True, timeout=180, check=False,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert avg.returncode == 0, avg.stdout + avg.stderr
    assert "LocalSGD backend torch (gloo) on cpu, 2 rank(s): parameters bitwise identical" in avg.stdout
