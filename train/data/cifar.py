"""CIFAR-10/100 from the standard python-pickle batches, plus a download helper that verifies the checksum."""
from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import torch

from train.data.dataset import Dataset
from train.errors import TrainError

__all__ = ["ARCHIVES", "load_cifar", "download_cifar", "verify_md5"]

log = logging.getLogger(__name__)

# name -> (url, md5 of the archive, folder inside it, train files, test files, label key, classes)
ARCHIVES = {
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels", 10),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
                 "cifar-100-python", ["train"], ["test"], "fine_labels", 100),
}
_MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32).reshape(1, 3, 1, 1)
_STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32).reshape(1, 3, 1, 1)


def _folder(name: str, data_dir: str) -> Path:
    """The batch folder: DATA_DIR/<archive folder> when present, else DATA_DIR itself."""
    sub = Path(data_dir) / ARCHIVES[name][2]
    return sub if sub.is_dir() else Path(data_dir)


def _read(folder: Path, files: list[str], key: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for f in files:
        with open(folder / f, "rb") as fh:
            batch = pickle.load(fh, encoding="latin1")
        xs.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[key], dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def load_cifar(name: str, data_dir: str) -> Dataset:
    """Load CIFAR `name` ("cifar10" or "cifar100") from `data_dir`, normalised per channel, as tensors."""
    _, _, _, train_files, test_files, key, classes = ARCHIVES[name]
    folder = _folder(name, data_dir)
    missing = [f for f in train_files + test_files if not (folder / f).is_file()]
    if missing:
        raise TrainError(f"{name} files missing in {folder}: {', '.join(missing)}; "
                         f"fetch them with `python -m train download {name} --data-dir {data_dir}`")
    x_tr, y_tr = _read(folder, train_files, key)
    x_te, y_te = _read(folder, test_files, key)

    def norm(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((x.astype(np.float32) / 255.0 - _MEAN) / _STD).copy())

    return Dataset(name=name, x_train=norm(x_tr), y_train=torch.from_numpy(y_tr), x_test=norm(x_te),
                   y_test=torch.from_numpy(y_te), num_classes=classes, augment=True)


def verify_md5(path: str | os.PathLike[str], expected: str) -> None:
    """Raise TrainError unless the file's md5 is `expected`."""
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != expected:
        raise TrainError(f"checksum mismatch for {path}: md5 {h.hexdigest()}, expected {expected}")


def download_cifar(name: str, data_dir: str, *, url: str | None = None) -> Path:
    """Download the archive of `name` into `data_dir`, check its md5, extract it; return the batch folder.

    The archive is fetched to a temporary file next to its destination and only kept when the checksum matches.
    """
    if name not in ARCHIVES:
        raise TrainError(f"download supports {', '.join(ARCHIVES)}, got {name!r}")
    default_url, md5, folder, *_ = ARCHIVES[name]
    dest = Path(data_dir)
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / Path(default_url).name
    if not archive.is_file():
        fd, tmp = tempfile.mkstemp(dir=dest, suffix=".tmp")
        try:
            source = url or default_url
            try:
                with os.fdopen(fd, "wb") as out, urllib.request.urlopen(source, timeout=60) as resp:
                    while chunk := resp.read(1 << 20):
                        out.write(chunk)
            except (OSError, ValueError) as e:  # URLError, timeouts, a refused connection, a malformed --url
                reason = getattr(e, "reason", None) or e
                raise TrainError(f"cannot download {name} from {source}: {reason}; check the network, pass --url "
                                 f"with a mirror, or put the extracted {folder}/ into --data-dir {data_dir}") from None
            verify_md5(tmp, md5)
            os.replace(tmp, archive)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    verify_md5(archive, md5)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    log.info("extracted %s into %s", archive, dest / folder)
    return dest / folder
