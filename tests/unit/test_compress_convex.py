"""The trainer's convex pieces against the simulator's: objective, binary loss, sampler rows, step sizes, w8a."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sim.convex.objective import LogisticObjective
from sim.convex.sampler import Sampler
from train.config import TrainConfig
from train.convex import SamplerStream, cast_dataset, convex_lr, objective_value
from train.data.dataset import Dataset
from train.errors import TrainError
from train.evaluate import batch_metrics
from train.models import build_model


def _data(n: int = 60, d: int = 9, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = (rng.random((n, d)) < 0.3).astype(np.float64) * rng.integers(1, 3, size=(n, d))
    b = rng.choice([-1.0, 1.0], size=n)
    return X, b


def test_compress_binary_logreg_objective_equals_simulator_f() -> None:
    X, b = _data()
    n, d = X.shape
    model = build_model("logreg-binary", input_shape=(d,), num_classes=2).double()
    assert [n_ for n_, _ in model.named_parameters()] == ["w"] and float(model.w.detach().abs().sum()) == 0.0  # w0 = 0
    obj = LogisticObjective(sp.csr_matrix(X), b)
    y = torch.from_numpy((b > 0).astype(np.int64))
    assert objective_value(model, torch.from_numpy(X), y, weight_decay=1 / n) == pytest.approx(math.log(2), rel=1e-15)
    w = np.random.default_rng(1).standard_normal(d)
    with torch.no_grad():
        model.w.copy_(torch.from_numpy(w))
    f = objective_value(model, torch.from_numpy(X), y, weight_decay=1 / n, chunk=7)
    assert f == pytest.approx(obj.value(w), rel=1e-13)


def test_compress_binary_batch_metrics_and_gradient_match_logistic_loss() -> None:
    X, b = _data(n=16)
    model = build_model("logreg-binary", input_shape=(X.shape[1],), num_classes=2).double()
    w = np.random.default_rng(2).standard_normal(X.shape[1])
    with torch.no_grad():
        model.w.copy_(torch.from_numpy(w))
    y = torch.from_numpy((b > 0).astype(np.int64))
    loss, correct, count = batch_metrics(model(torch.from_numpy(X)), y)
    z = b * (X @ w)
    assert float(loss.detach()) == pytest.approx(np.mean(np.log1p(np.exp(-z))), rel=1e-13)
    assert correct == int(np.sum(np.sign(X @ w) == b)) and count == 16
    loss.backward()
    grad = -(X.T @ (b / (1 + np.exp(z)))) / len(b)  # the simulator's stochastic gradient without lam
    np.testing.assert_allclose(model.w.grad.numpy(), grad, rtol=1e-12, atol=1e-15)


def test_compress_logreg_binary_needs_two_classes() -> None:
    with pytest.raises(TrainError, match="logreg-binary needs 2 classes, got 10"):
        build_model("logreg-binary", input_shape=(5,), num_classes=10)


@pytest.mark.parametrize("mode", ["iid", "shuffle"])
def test_compress_sampler_stream_reads_the_simulators_rows(mode: str) -> None:
    n, K, B = 103, 3, 4
    x = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    data = Dataset(name="toy", x_train=x, y_train=torch.arange(n), x_test=x, y_test=torch.arange(n), num_classes=2)
    ref = Sampler(n=n, K=K, B_loc=B, seed=5, mode=mode)
    streams = [SamplerStream(data, rank=k, size=K, batch=B, seed=5, mode=mode) for k in range(K)]
    for t in (0, 1, 63, 64, 200, 7):
        for k, s in enumerate(streams):
            xb, yb = s.batch_at(t, torch.Generator())
            assert yb.tolist() == ref.indices(t)[k].tolist() and xb[:, 0].long().tolist() == yb.tolist()


def test_compress_convex_lr_is_the_simulators_rule() -> None:
    assert convex_lr("decay", 0.125, 0, 1000, 32.0) == 32.0
    assert convex_lr("decay", 0.125, 9999, 1000, 32.0) == pytest.approx(0.125 * 1000 / 10000)
    assert convex_lr("const", 0.25, 77, 1000, 32.0) == 8.0


def test_compress_cast_dataset_keeps_shared_test_set() -> None:
    x = torch.zeros(4, 2)
    data = cast_dataset(Dataset(name="t", x_train=x, y_train=torch.zeros(4), x_test=x, y_test=torch.zeros(4),
                                num_classes=2), torch.float64)
    assert data.x_train.dtype == torch.float64 and data.x_test is data.x_train


def test_compress_convex_config_errors() -> None:
    with pytest.raises(TrainError, match="sampler must be one of stream, iid, shuffle, got 'random'"):
        TrainConfig(sampler="random")
    with pytest.raises(TrainError, match="dtype must be one of float32, float64, got 'float16'"):
        TrainConfig(dtype="float16")
    with pytest.raises(TrainError, match="lr_schedule must be one of protocol, decay, const, got 'cosine'"):
        TrainConfig(lr_schedule="cosine")
    TrainConfig(test_fraction=0.0)  # no hold-out is valid now


def test_compress_w8a_without_holdout_is_every_row_in_file_order(w8a: Path) -> None:
    W8A = w8a
    from sim.convex.libsvm import load_libsvm
    from train.data.libsvm import load_w8a
    data = load_w8a(str(W8A.parent), test_fraction=0.0)
    ref = load_libsvm(W8A, n_features=300)
    assert len(data.x_train) == 49749 and data.x_test is data.x_train
    np.testing.assert_array_equal(data.x_train.numpy(), ref.X.toarray())
    np.testing.assert_array_equal(2 * data.y_train.numpy() - 1, ref.y)
