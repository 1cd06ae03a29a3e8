"""mpirun_examples/own_loop.py: a user's loop gets local, post-local, hierarchical and SlowMo local SGD from
LocalSGD, under mpirun (our comm) and under torchrun (gloo)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.parallel.harness import MPIRUN, REPO, mpi_env

EXAMPLE = str(REPO / "mpirun_examples" / "own_loop.py")
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))


def _launch(cmd: list[str], timeout: float = 150) -> str:
    proc = subprocess.Popen(cmd, cwd=REPO, env=mpi_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"timed out: {' '.join(cmd)}\n{proc.communicate()[0][-3000:]}") from None
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out[-4000:]}"
    return out


def _check(out: str, folder: Path, n: int) -> torch.Tensor:
    """The loss fell, and every rank holds the same model after the final (forced) sync; returns the model."""
    first, last = (float(x) for x in re.findall(r"loss (\d+\.\d+)", out))
    assert last < 0.8 * first, out
    models = [torch.load(folder / f"rank{r}.pt") for r in range(n)]
    flat = [torch.cat([v.reshape(-1) for v in m.values()]) for m in models]
    assert all(torch.equal(f, flat[0]) for f in flat), "ranks hold different models after the final sync"
    return flat[0]


@pytest.mark.parametrize("n, flags", [(3, ["--H", "4"]), (3, ["--H", "4", "--switch-step", "10"]),
                                      (3, ["--H", "4", "--slowmo", "0.5", "0.7"]),
                                      (4, ["--H", "2", "--Hb", "3", "--block-size", "2"])])
def test_own_loop_under_mpirun(n: int, flags: list[str], tmp_path: Path) -> None:
    out = _launch([MPIRUN, "-n", str(n), sys.executable, "-m", "mpi4py", EXAMPLE, *flags, "--out", str(tmp_path)])
    _check(out, tmp_path, n)


def test_own_loop_under_torchrun_gloo(tmp_path: Path) -> None:
    """The same loop with backend torch (gloo) and with our MPI backend: the same model up to float rounding."""
    flags = ["--H", "4", "--slowmo", "1.0", "0.5"]
    out = _launch([TORCHRUN, "--standalone", "--nproc-per-node", "2", EXAMPLE, "--backend", "torch", *flags,
                   "--out", str(tmp_path / "torch")])
    a = _check(out, tmp_path / "torch", 2)
    out = _launch([MPIRUN, "-n", "2", sys.executable, "-m", "mpi4py", EXAMPLE, *flags, "--out", str(tmp_path / "mpi")])
    b = _check(out, tmp_path / "mpi", 2)
    # float32, 40 steps: the two all-reduces sum in different orders (a few ulp per sync)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), float((a - b).abs().max())
