"""Engine virtual (K workers in one process) against the MPI trainer: the same models after every sync.

The same runs (tests/parallel/checks_virtual.py: logreg-binary on w8a and ResNet-8 on synthetic data, float64,
50 syncs; local, hierarchical and SlowMo at K = 2 and 4; compression, hybrid momentum, post-local with clipping
and mini-batch at K = 2) go once through mpirun -n K and once through --engine virtual (its loop step; some also
with its vmap step), recording every worker's model after every sync. Tolerances (why: docs/README-virtual.md): the engines do the same arithmetic in a
different order only where sums are taken (the K-way mean of a sync: a tree of pairwise sums in comm against
torch.mean; grouped convolutions and batched reductions in the vmapped step), so the models differ by rounding:
<= 1e-12 relative in float64 for both models (measured: at most 3e-15), and the float32 run differs by what float32
rounding gives (<= 1e-4) while the float64 one stays 1e6 times closer. Every evaluation's accuracy is the same to
the printed digits (two decimals of a percent) and its loss to 1e-12.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.shared_data import need_data
from tests.parallel.harness import REPO, mpi_env, mpirun
from tests.parallel.virtual_runs import VMAP

KS = (2, 4)  # K = 8 left out to keep the suite under 10 minutes (it passed at 2.3e-14 too)
MAIN = [f"{m}-{a}" for m in ("logreg", "resnet8") for a in ("local", "hier", "slowmo")]
EXTRA = ["resnet8-efsign", "resnet8-sign", "resnet8-hybrid", "resnet8-postlocal", "logreg-minibatch"]
CASES = [("virtual", K, name) for K in KS for name in MAIN] + [("virtual", 2, name) for name in EXTRA] + \
    [("vmap", K, name) for K, names in VMAP.items() for name in names]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every run on both engines, side by side: one MPI job for K = 4 and 2 (sub-communicators), and one process
    for all the virtual runs."""
    out = tmp_path_factory.mktemp("virtual-vs-mpi")
    env = {"VIRTUAL_REF_DIR": str(out), "VIRTUAL_W8A_DIR": str(need_data("w8a").parent),
           "VIRTUAL_KS": ",".join(map(str, KS))}
    spec = "tests.parallel.checks_virtual:record_{}"
    virtual = subprocess.Popen([sys.executable, "-m", "mpi4py", "-m", "tests.parallel.runner", spec.format("virtual")],
                               cwd=REPO, env=mpi_env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        mpirun(max(KS), ["-m", "tests.parallel.runner", spec.format("mpi")], env=env, timeout=240)
        text, _ = virtual.communicate(timeout=240)
    finally:
        if virtual.poll() is None:
            os.killpg(virtual.pid, signal.SIGKILL)
            virtual.communicate()
    assert virtual.returncode == 0 and "CHECK-PASSED" in text, f"the virtual runs failed:\n{text[-4000:]}"
    return out


def _load(out: Path, engine: str, K: int, name: str) -> dict[str, np.ndarray]:
    with np.load(out / f"{engine}-K{K}-{name}.npz") as f:
        return {k: f[k] for k in f.files}


def _rel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per sync: max |a - b| over every worker's every number, relative to max |a| (0 where both are 0: w_0 = 0)."""
    return np.abs(a - b).max(axis=(1, 2)) / np.maximum(np.abs(a).max(axis=(1, 2)), np.finfo(np.float64).tiny)


@pytest.mark.parametrize(("step", "K", "name"), CASES, ids=[f"{s}-K{K}-{n}" for s, K, n in CASES])
def test_virtual_matches_mpi_after_every_sync(runs: Path, step: str, K: int, name: str) -> None:
    mpi, virt = _load(runs, "mpi", K, name), _load(runs, step, K, name)
    assert list(mpi["levels"]) == list(virt["levels"]), "the engines synced at different steps or levels"
    assert len(mpi["levels"]) >= (15 if K == 2 and name in EXTRA else 50)
    assert mpi["models"].shape == virt["models"].shape and mpi["models"].shape[1] == K
    rel = _rel(mpi["models"], virt["models"])
    assert rel.max() <= 1e-12, f"largest relative difference {rel.max():.2e} at sync {int(rel.argmax())}"
    # the workers really differ between syncs where they should (otherwise the test would prove little)
    if name.endswith("hier") and K >= 4:
        block = [i for i, lvl in enumerate(mpi["levels"]) if lvl == "block"]
        first = mpi["models"][block[0]]
        assert np.abs(first[0] - first[-1]).max() > 0, "blocks hold the same model after a block sync"
    # every evaluation: the accuracy to the printed digits, the loss to rounding
    assert [f"{100 * a:.2f}" for a in mpi["test_acc"]] == [f"{100 * a:.2f}" for a in virt["test_acc"]]
    np.testing.assert_allclose(virt["test_loss"], mpi["test_loss"], rtol=1e-12, atol=0)
    np.testing.assert_allclose(virt["train_loss"], mpi["train_loss"], rtol=1e-12, atol=0)


def test_the_difference_is_rounding(runs: Path) -> None:
    """ResNet-8, K = 4, also run in float32: the engines differ by no more than rounding itself moves a run.

    Changing the precision of the MPI run from float64 to float32 moves its models by some amount (this little
    ResNet on 4-sample batches amplifies rounding: see docs/README-virtual.md); the virtual engine's float32 run
    must be no farther from the MPI float64 run than that, while at float64 the engines agree to 1e-12.
    """
    m64, v64 = (_load(runs, e, 4, "resnet8-local")["models"] for e in ("mpi", "virtual"))
    m32, v32 = (_load(runs, e, 4, "resnet8-local-float32")["models"] for e in ("mpi", "virtual"))
    precision = _rel(m64, m32)  # what float32 rounding does to the MPI run
    assert 1e-9 < precision[0] <= 1e-5, f"float32 rounding at the first sync: {precision[0]:.2e}"
    assert _rel(m64, v64).max() <= 1e-12
    assert _rel(m64, v32).max() <= max(10 * precision.max(), 1e-5), \
        f"virtual float32 {_rel(m64, v32).max():.2e} vs MPI float32 {precision.max():.2e} from MPI float64"


def test_cli_pause_resume_and_verify_give_the_uninterrupted_run(runs: Path) -> None:
    """The CLI (train.cli.main, in the virtual runs' process): the K = 2 hybrid run paused with --stop-at-epoch and
    continued with --resume ends bitwise where the uninterrupted run ended; `train verify` reads its K workers."""
    import torch

    from train.verify import verify_checkpoint

    ref, run = runs / "virtual-K2-resnet8-hybrid", runs / "cli-pause-resume"
    step = verify_checkpoint(ref)["step"]
    res = verify_checkpoint(run)
    assert res["step"] == step and res["identical"] and res["engine"] == "virtual" and res["workers"] == 2
    name = f"step-{step:08d}/rank-0000.pt"
    a = torch.load(ref / "checkpoints" / name, weights_only=False)["virtual"]
    b = torch.load(run / "checkpoints" / name, weights_only=False)["virtual"]
    for part in ("params", "buffers"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), f"{part} differ from the reference"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["engine"] == "virtual" and summary["world_size"] == 2 and summary["processes"] == 1
    assert summary["status"] == "completed" and summary["totals_mean"]["comm_s_global"] is None
    assert summary["syncs"]["global"] > 0 and summary["memory"]["estimate_bytes"] > 0
