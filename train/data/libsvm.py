"""LIBSVM text files (w8a) read into dense tensors, with a fixed held-out test split."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sim.convex.errors import DataFormatError
from sim.convex.libsvm import load_libsvm
from train.data.dataset import Dataset
from train.errors import TrainError

__all__ = ["read_libsvm", "load_w8a"]


def read_libsvm(path: str | Path, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """A binary-classification LIBSVM file as a dense float32 matrix and its -1/+1 labels.

    The one strict reader is the simulator's (sim.convex.libsvm): a bad label (not -1 or +1), index (not
    ascending, outside 1..n_features), value (not a finite number) or encoding is a TrainError naming the file,
    the line and the value.
    """
    try:
        data = load_libsvm(path, n_features=n_features, allowed_labels=(-1.0, 1.0))
    except DataFormatError as e:
        raise TrainError(str(e)) from None
    return data.X.toarray().astype(np.float32), data.y


def load_w8a(data_dir: str, *, test_fraction: float) -> Dataset:
    """w8a (300 binary features, labels -1/+1 mapped to classes 0/1) from DATA_DIR/w8a or the file DATA_DIR.

    There is no w8a.t here, so a fixed share `test_fraction` (a permutation with seed 0) is held out as test set.
    With test_fraction 0 nothing is held out: the training set is all n rows in file order (as the convex simulator
    reads them, so its sampler's indices mean the same rows) and the test set is the training set.
    Labels 0/1 with the logistic loss of logreg-binary equal the simulator's -1/+1 (b = 2 y - 1).
    """
    p = Path(data_dir)
    path = p / "w8a" if p.is_dir() else p
    if not path.is_file():
        raise TrainError(f"w8a file missing: {path} (pass --data-dir with the folder that holds w8a)")
    x, b = read_libsvm(path, 300)
    y = (b > 0).astype(np.int64)
    if test_fraction == 0:
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        return Dataset(name="w8a", x_train=xt, y_train=yt, x_test=xt, y_test=yt, num_classes=2)
    perm = np.random.default_rng(0).permutation(len(y))
    n_test = max(1, round(test_fraction * len(y)))
    te, tr = perm[:n_test], perm[n_test:]
    return Dataset(name="w8a", x_train=torch.from_numpy(x[tr]), y_train=torch.from_numpy(y[tr]),
                   x_test=torch.from_numpy(x[te]), y_test=torch.from_numpy(y[te]), num_classes=2)
