"""Data: disjoint global reshuffle per epoch, augmentation, synthetic determinism, CIFAR/w8a/WikiText loaders."""
from __future__ import annotations

import hashlib
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from train.data import WorkerStream, augment_batch
from train.data import cifar as cifar_mod
from train.data.cifar import download_cifar, load_cifar, verify_md5
from train.data.dataset import Dataset
from train.data.libsvm import load_w8a, read_libsvm
from train.data.synthetic import synthetic_images, synthetic_tokens
from train.data.wikitext import load_wikitext2
from train.errors import TrainError


def _ds(n: int) -> Dataset:
    return Dataset(name="t", x_train=torch.arange(n, dtype=torch.float32).view(n, 1), y_train=torch.arange(n),
                   x_test=torch.zeros(1, 1), y_test=torch.zeros(1, dtype=torch.long), num_classes=n)


def test_train_partition_disjoint_and_reshuffled() -> None:
    n, K, B = 50, 3, 4          # n_local = 16: 4 steps per epoch, one sample left out per epoch
    streams = [WorkerStream(_ds(n), rank=k, size=K, batch=B, seed=7) for k in range(K)]
    for epoch in range(3):
        parts = [torch.cat([s.batch_indices(epoch * 4 + i) for i in range(4)]) for s in streams]
        allidx = torch.cat(parts)
        assert len(set(allidx.tolist())) == K * 16, "worker slices overlap"
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(7 * 1_000_003 + epoch))
        assert torch.equal(allidx, perm[:48]), "not one shared permutation cut in K slices"
    e0 = torch.cat([streams[0].batch_indices(i) for i in range(4)])
    e1 = torch.cat([streams[0].batch_indices(i) for i in range(4, 8)])
    assert not torch.equal(e0, e1)


def test_train_batch_straddles_epochs() -> None:
    s = WorkerStream(_ds(20), rank=1, size=2, batch=4, seed=0)   # n_local 10: step 2 reads 8, 9 | 0, 1
    p0 = torch.randperm(20, generator=torch.Generator().manual_seed(0))[10:20]
    p1 = torch.randperm(20, generator=torch.Generator().manual_seed(1))[10:20]
    assert torch.equal(s.batch_indices(2), torch.cat([p0[8:], p1[:2]]))
    assert s.epoch_of(4) == 2.0


def test_train_augment_matches_loop_reference() -> None:
    x = torch.randn(6, 3, 5, 5)
    out = augment_batch(x, torch.Generator().manual_seed(3), pad=2)
    g = torch.Generator().manual_seed(3)
    dy, dx = torch.randint(0, 5, (6,), generator=g), torch.randint(0, 5, (6,), generator=g)
    flip = torch.rand(6, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(6):
        ref = padded[i, :, dy[i]:dy[i] + 5, dx[i]:dx[i] + 5]
        if flip[i]:
            ref = ref.flip(2)
        assert torch.equal(out[i], ref)


def test_train_synthetic_is_deterministic() -> None:
    a = synthetic_images(n_train=32, n_test=8, classes=4, size=8, noise=1.0)
    b = synthetic_images(n_train=32, n_test=8, classes=4, size=8, noise=1.0)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert a.input_shape == (3, 8, 8) and set(a.y_train.tolist()) <= set(range(4))
    t = synthetic_tokens(n_train=16, n_test=4, vocab=20, bptt=6)
    assert torch.equal(t.x_train[:, 1:], t.y_train[:, :-1])  # next-token targets


def test_train_w8a_matches_its_readme(w8a: Path) -> None:
    W8A = w8a.parent
    x, b = read_libsvm(W8A / "w8a", 300)
    assert x.shape == (49749, 300)                         # figures from shared/data/README.md
    assert int((b > 0).sum()) == 1479 and int((b < 0).sum()) == 48270
    assert int(np.count_nonzero(x)) == 579586 and int((x.sum(1) == 0).sum()) == 4203
    ds = load_w8a(str(W8A), test_fraction=0.2)
    assert len(ds.x_train) + len(ds.x_test) == 49749 and len(ds.x_test) == round(0.2 * 49749)


@pytest.mark.parametrize("text, needle", [
    ("+1 3:1 7:0.5\n-1 x:1\n", "bad:2: feature index must be an integer >= 1, got 'x'"),
    ("+1 3:1 12:1\n", "bad:1: feature index 12 exceeds n_features=10"),
    ("+1 3:1\n2 1:1\n", "bad:2: label must be one of -1, +1, got '2'"),           # was taken as class 1
    ("+1 3:1 3:1\n", "bad:1: feature indices must be strictly ascending, got 3 after 3"),  # duplicate index
    ("-1 3:nan\n", "bad:1: feature value must be finite, got 'nan'"),
])
def test_train_libsvm_is_the_strict_reader(tmp_path: Path, text: str, needle: str) -> None:
    """The trainer reads LIBSVM through sim.convex.libsvm: one line naming file, line and value."""
    f = tmp_path / "bad"
    f.write_text(text)
    with pytest.raises(TrainError) as info:
        read_libsvm(f, 10)
    assert str(info.value) == f"{f}:{needle[4:]}" or needle[4:] in str(info.value), str(info.value)
    assert str(info.value).startswith(f"{f}:") and "\n" not in str(info.value)


def test_train_libsvm_binary_file_is_one_line(tmp_path: Path) -> None:
    f = tmp_path / "w8a"
    f.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(TrainError, match=f"^{f}: not UTF-8 text at byte 128; a LIBSVM file is plain text$"):
        load_w8a(str(tmp_path), test_fraction=0.2)
    f.write_bytes(b"+1 1:1\n\0\0\0")
    with pytest.raises(TrainError, match="contains NUL bytes .* binary file"):
        read_libsvm(f, 10)


def test_train_libsvm_reads_valid_files(tmp_path: Path) -> None:
    f = tmp_path / "ok"
    f.write_text("+1 3:1 7:0.5\n\n-1 1:2\n")
    x, b = read_libsvm(f, 10)
    assert x[0, 2] == 1 and x[0, 6] == 0.5 and x[1, 0] == 2 and list(b) == [1, -1]
    with pytest.raises(TrainError, match="w8a file missing"):
        load_w8a(str(tmp_path / "nowhere"), test_fraction=0.2)


def _fake_cifar(folder: Path, n: int = 4) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": list(range(n))}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)


def test_train_cifar_loader_and_missing_files(tmp_path: Path) -> None:
    _fake_cifar(tmp_path / "cifar-10-batches-py")
    ds = load_cifar("cifar10", str(tmp_path))
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32) and ds.augment
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_2", "rb") as fh:
        raw = pickle.load(fh)["data"][1].reshape(3, 32, 32)
    assert abs(float(ds.x_train[5, 0, 0, 0]) - (raw[0, 0, 0] / 255 - 0.4914) / 0.2470) < 1e-5
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(TrainError, match="cifar10 files missing in .*: data_batch_3, test_batch; fetch them"):
        load_cifar("cifar10", str(tmp_path))


def test_train_download_checks_md5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    _fake_cifar(src / "cifar-10-batches-py")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    entry = list(cifar_mod.ARCHIVES["cifar10"])
    monkeypatch.setitem(cifar_mod.ARCHIVES, "cifar10", (entry[0], md5, *entry[2:]))
    folder = download_cifar("cifar10", str(tmp_path / "dest"), url=archive.as_uri())
    assert len(load_cifar("cifar10", str(tmp_path / "dest")).x_train) == 20 and folder.is_dir()
    monkeypatch.setitem(cifar_mod.ARCHIVES, "cifar10", (entry[0], "0" * 32, *entry[2:]))
    with pytest.raises(TrainError, match="checksum mismatch"):
        download_cifar("cifar10", str(tmp_path / "dest2"), url=archive.as_uri())
    assert not list((tmp_path / "dest2").iterdir()), "a bad download must not be kept"
    with pytest.raises(TrainError, match="checksum mismatch"):
        verify_md5(archive, "f" * 32)


def test_train_wikitext_loader(tmp_path: Path) -> None:
    (tmp_path / "wiki.train.tokens").write_text("a b c\nd a\n")
    (tmp_path / "wiki.valid.tokens").write_text("a\n")
    (tmp_path / "wiki.test.tokens").write_text("a zz b\n")
    ds = load_wikitext2(str(tmp_path), bptt=3)
    # vocabulary <unk> 0, <eos> 1, a 2, b 3, c 4, d 5; train ids 2 3 4 1 5 2 1 -> 2 sequences of 3
    assert ds.num_classes == 6
    assert ds.x_train.tolist() == [[2, 3, 4], [1, 5, 2]] and ds.y_train.tolist() == [[3, 4, 1], [5, 2, 1]]
    assert ds.x_test.tolist() == [[2, 0, 3]] and ds.y_test.tolist() == [[0, 3, 1]]
    (tmp_path / "wiki.valid.tokens").unlink()
    with pytest.raises(TrainError, match="wikitext2 files missing in .*: wiki.valid.tokens"):
        load_wikitext2(str(tmp_path), bptt=3)
