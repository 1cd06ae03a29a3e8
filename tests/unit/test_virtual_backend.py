"""Engine virtual without MPI: the stacked backend's means, its compressor against K SignCompressors, the
averager over it, and the configuration's refusals."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from train.averager import LocalSGD
from train.compress import SignCompressor
from train.config import TrainConfig
from train.errors import TrainError
from train.flat import FlatTensors
from train.virtual_backend import StackedCompressor, VirtualBackend

K, G = 6, 3
SHAPES = [(K, 2, 3), (K, 5), (K, 1)]  # three stacked parameters: 6 + 5 + 1 = 12 numbers per worker


def _stacked(seed: int = 0, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype) for s in SHAPES]


def _rows(ts: list[torch.Tensor]) -> np.ndarray:
    """[K, 12]: worker k's flat model, built independently of the backend."""
    return np.stack([np.concatenate([t[k].reshape(-1).numpy() for t in ts]) for k in range(K)])


def test_flat_layout_and_rows_round_trip() -> None:
    ts = _stacked()
    flat = FlatTensors(ts)
    b = VirtualBackend([t.shape for t in ts], workers=K)
    rows = b.per_worker(flat.pack())
    np.testing.assert_array_equal(rows.numpy(), _rows(ts))
    new = torch.arange(K * 12, dtype=torch.float64).view(K, 12)
    b.set_per_worker(flat.buffer, new)
    flat.unpack()
    np.testing.assert_array_equal(_rows(ts), new.numpy())


@pytest.mark.parametrize("level", ["global", "block"])
def test_allreduce_mean_is_the_mean_of_each_group(level: str) -> None:
    ts = _stacked()
    before = _rows(ts)
    flat = FlatTensors(ts)
    b = VirtualBackend([t.shape for t in ts], workers=K, block=G)
    b.allreduce_mean(flat.pack(), level)
    flat.unpack()
    after = _rows(ts)
    for group in b.groups(level):
        want = before[group].mean(0)
        for k in group:
            np.testing.assert_allclose(after[k], want, rtol=1e-15, atol=1e-15)
    if level == "block":  # the two blocks average apart
        assert not np.allclose(after[0], after[G])


def test_broadcast_copies_worker_0() -> None:
    ts = _stacked()
    want = _rows(ts)[0]
    flat = FlatTensors(ts)
    b = VirtualBackend([t.shape for t in ts], workers=K)
    b.broadcast(flat.pack(), 0)
    flat.unpack()
    assert all(np.array_equal(r, want) for r in _rows(ts))


def test_backend_refuses_bad_layouts() -> None:
    with pytest.raises(TrainError, match="must divide the workers 6, got 4"):
        VirtualBackend(SHAPES, workers=K, block=4)
    with pytest.raises(TrainError, match="must have 6 rows"):
        VirtualBackend([(5, 2)], workers=K)
    b = VirtualBackend(SHAPES, workers=K)
    with pytest.raises(TrainError, match="not 6 workers' flat model"):
        b.allreduce_mean(torch.zeros(7, dtype=torch.float64), "global")
    with pytest.raises(TrainError, match="needs blocks"):
        b.allreduce_mean(torch.zeros(K * 12, dtype=torch.float64), "block")


@pytest.mark.parametrize("scheme", ["sign", "ef-sign"])
def test_stacked_compressor_equals_one_compressor_per_worker(scheme: str) -> None:
    """Three syncs (block, global, block) of K workers: the stacked compressor against K SignCompressors whose
    payloads are concatenated in worker order, as an all-gather over MPI ranks delivers them."""
    ts = _stacked(1)
    flat = FlatTensors(ts)
    b = VirtualBackend([t.shape for t in ts], workers=K, block=G)
    b.broadcast(flat.pack(), 0)  # as LocalSGD does: every worker starts from worker 0's model
    flat.unpack()
    start = _rows(ts)
    stacked = b.make_compressor(scheme, 12, dtype=torch.float64, sign_scale=0.5)
    assert isinstance(stacked, StackedCompressor) and stacked.nbytes == (2 if scheme == "sign" else 6)
    stacked.set_anchor(flat.pack().numpy())
    ref = [SignCompressor(scheme, 12, dtype=torch.float64, sign_scale=0.5) for _ in range(K)]
    for c in ref:
        c.set_anchor(start[0])
    models = start.copy()
    g = np.random.default_rng(0)
    for i, level in enumerate(["block", "global", "block"]):
        models = models + g.normal(size=models.shape)  # the workers' local steps
        b.set_per_worker(flat.buffer, torch.from_numpy(models))
        sent, recv = stacked.sync(level, flat.buffer, backend=b, lr=0.1 * (i + 1))
        sends = [c.encode(level, m) for c, m in zip(ref, models)]
        for group in b.groups(level):
            gathered = np.concatenate([sends[k] for k in group])
            for k in group:
                models[k] = ref[k].decode(level, gathered, len(group), 0.1 * (i + 1))
        np.testing.assert_array_equal(b.per_worker(flat.buffer).numpy(), models)
        size = len(b.groups(level)[0])
        assert (sent, recv) == (stacked.nbytes, (size - 1) * stacked.nbytes)
    for k in range(K):
        for key in ("anchor", "memory"):
            for lvl in ("block", "global"):
                np.testing.assert_array_equal(stacked.parts[k].state_dict()[key][lvl], ref[k].state_dict()[key][lvl])
    restored = b.make_compressor(scheme, 12, dtype=torch.float64, sign_scale=0.5)
    restored.load_state_dict(stacked.state_dict())
    with pytest.raises(TrainError, match="6 virtual workers"):
        restored.load_state_dict({"scheme": scheme, "workers": []})


def test_localsgd_over_stacked_workers_counts_one_workers_bytes_and_applies_global_momentum() -> None:
    """LocalSGD's own momentum arithmetic, run on K stacked rows, equals the formula on the mean model."""
    ts = _stacked(2, torch.float32)
    b = VirtualBackend([t.shape for t in ts], workers=K)
    avg = LocalSGD(ts, H=2, backend=b, momentum_variant="global", global_momentum=0.5, lr=0.1)
    assert avg.replicas == K and avg.nbytes == avg.model_nbytes == 12 * 4
    x0 = _rows(ts)[0].astype(np.float64)  # the constructor broadcast worker 0's model
    assert all(np.array_equal(r, _rows(ts)[0]) for r in _rows(ts))
    for t in ts:
        t.add_(torch.randn(t.shape, generator=torch.Generator().manual_seed(3)) * torch.arange(K).view(
            K, *([1] * (t.dim() - 1))))
    mean = _rows(ts).astype(np.float64).mean(0)
    assert avg.step() is None and avg.step() == "global"
    u = (x0 - mean) / 0.1
    want = x0 - 0.1 * u
    for r in _rows(ts):
        np.testing.assert_allclose(r, want, rtol=1e-5, atol=1e-6)


def test_config_engine_virtual_refusals() -> None:
    base = dict(engine="virtual", workers=4)
    assert TrainConfig(**base).workers_of(1) == 4 and TrainConfig().workers_of(3) == 3
    cases = [(dict(engine="virtual"), "needs workers"),
             (dict(workers=4), "applies to engine virtual only"),
             (dict(base, workers=0), "workers must be an integer >= 1"),
             (dict(base, global_sync_delay=1.0), "global_sync_delay 1.0 does not apply to engine virtual"),
             (dict(base, block_sync_delay=0.5), "block_sync_delay 0.5 does not apply"),
             (dict(base, stragglers=((1, 2.0),)), "straggler 1:2 does not apply to engine virtual"),
             (dict(base, allreduce="ring"), "allreduce 'ring' does not apply"),
             (dict(base, model="lstm"), "model 'lstm' is not supported by engine virtual"),
             (dict(base, algorithm="hierarchical", Hb=2), "needs gpus_per_node G"),
             (dict(base, engine="gpu"), "engine must be one of mpi, virtual")]
    for over, msg in cases:
        with pytest.raises(TrainError, match=msg):
            TrainConfig(**over)  # type: ignore[arg-type]
    cfg = TrainConfig(**base, algorithm="hierarchical", Hb=2, gpus_per_node=3)  # type: ignore[arg-type]
    with pytest.raises(TrainError, match="must divide the number of workers 4, got 3"):
        cfg.check_world(1)
    with pytest.raises(TrainError, match="launch it without mpirun \\(got a world of 2 ranks\\)"):
        TrainConfig(**base).check_world(2)  # type: ignore[arg-type]
    twin = TrainConfig(**base, H=4).on_mpi()  # type: ignore[arg-type]
    assert twin.engine == "mpi" and twin.workers is None and twin.H == 4
