"""Local SGD with and without SlowMo at K = 8, H = 16 on CIFAR-format synthetic data (docs/README-averager.md).

Writes CIFAR-10 python batches (32 x 32 x 3, uint8) drawn from train/data/synthetic.py's class templates plus
noise, then runs `mpirun -n K python -m train` once per variant and prints one JSON line per run.
Usage: python benchmarks/slowmo_synthetic.py [--out DIR] [--epochs 6] [--workers 8]
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np

VARIANTS = {
    "local": [],
    "slowmo a=1 b=0.5": ["--momentum-variant", "slowmo", "--slow-lr", "1.0", "--slow-momentum", "0.5"],
    "slowmo a=0.5 b=0.7": ["--momentum-variant", "slowmo", "--slow-lr", "0.5", "--slow-momentum", "0.7"],
}


def write_cifar(folder: Path, n_train: int, n_test: int, noise: float) -> None:
    """CIFAR-10 batch files (data_batch_1..5, test_batch) of learnable synthetic images."""
    from train.data.synthetic import synthetic_images
    ds = synthetic_images(n_train=n_train, n_test=n_test, classes=10, size=32, noise=noise)
    folder.mkdir(parents=True, exist_ok=True)

    def u8(x: object) -> np.ndarray:
        return np.clip(128 + 24 * np.asarray(x), 0, 255).astype(np.uint8).reshape(len(x), -1)  # type: ignore[arg-type]

    parts = np.array_split(np.arange(n_train), 5)
    for i, idx in enumerate(parts, 1):
        batch = {"data": u8(ds.x_train[idx].numpy()), "labels": ds.y_train[idx].tolist()}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    (folder / "test_batch").write_bytes(pickle.dumps({"data": u8(ds.x_test.numpy()), "labels": ds.y_test.tolist()}))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/slowmo-synthetic")
    p.add_argument("--epochs", type=float, default=6.0)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--seed", type=int, default=0, help="the trainer's seed (model, data order, augmentation)")
    a = p.parse_args(argv)
    out = Path(a.out)
    data = out / "data"
    write_cifar(data / "cifar-10-batches-py", n_train=4096, n_test=1024, noise=2.0)
    mpirun = str(Path(sys.executable).with_name("mpirun"))
    env = dict(os.environ, OMP_NUM_THREADS="1", MPIR_CVAR_ENABLE_HEAVY_YIELD="1")
    for name in a.variants.split(","):
        run_dir = out / f"{name.replace(' ', '_').replace('=', '')}-seed{a.seed}"
        cmd = [mpirun, "-n", str(a.workers), sys.executable, "-m", "mpi4py", "-m", "train",
               "--dataset", "cifar10",
               "--data-dir", str(data), "--model", "resnet8", "--width", "4", "--algorithm", "local", "--H", "16",
               "--batch-size", "16", "--epochs", str(a.epochs), "--lr-warmup-epochs", "1", "--target-acc", "0.5",
               "--seed", str(a.seed), "--quiet", "--out-dir", str(run_dir), *VARIANTS[name]]
        subprocess.run(cmd, check=True, env=env)
        s = json.loads((run_dir / "summary.json").read_text())
        print(json.dumps({"variant": name, "seed": a.seed, "test_acc": s["final"]["test_acc"],
                          "best_test_acc": s["best_test_acc"],
                          "test_loss": s["final"]["test_loss"], "train_loss": s["final"]["train_loss"],
                          "syncs": s["syncs"], "bytes_sent_global": s["compression"]["bytes_sent"]["global"],
                          "wall_s": s["wall_s"], "time_to_50pct": s["time_to_target"]}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
