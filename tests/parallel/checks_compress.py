"""Parallel checks of sign compression in the trainer, run on every rank by tests/parallel/runner.py."""
from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from typing import Any, Self

import numpy as np
import torch
from mpi4py import MPI

import comm
from train.compress import payload_bytes
from train.config import TrainConfig
from train.trainer import Trainer

WORLD = MPI.COMM_WORLD


def tiny(**over: object) -> TrainConfig:
    """A few dozen steps of logistic regression on easy 8x8 synthetic images (10 classes)."""
    base: dict[str, object] = dict(model="logreg", synthetic_train=128 * WORLD.Get_size(), synthetic_test=256,
                                   synthetic_size=8, synthetic_noise=2.0, batch_size=8, epochs=2.0, lr=0.05,
                                   lr_warmup_epochs=0.0, target_acc=None, algorithm="local", H=3)
    base.update(over)
    return TrainConfig(**base)  # type: ignore[arg-type]


def make(cfg: TrainConfig, resume: str | None = None) -> Trainer:
    out = resume or WORLD.bcast(tempfile.mkdtemp(prefix="compress-check-") if WORLD.Get_rank() == 0 else None, root=0)
    cfg.out_dir = out
    return Trainer(cfg, resume_dir=resume)


def params(tr: Trainer) -> np.ndarray:
    return tr.averager.flat.pack().detach().cpu().numpy().copy()


def digests(tr: Trainer, group: Any = WORLD) -> list[str]:
    return group.allgather(hashlib.sha256(params(tr).tobytes()).hexdigest())


class Spy:
    """Wraps comm.allgather: records a copy of every send and receive buffer really passed to comm."""

    def __init__(self) -> None:
        self.calls: list[tuple[np.ndarray, np.ndarray, int]] = []
        self.real: Callable[..., Any] = comm.allgather

    def __enter__(self) -> Self:
        def spy(sendbuf: Any, recvbuf: Any = None, **kw: Any) -> Any:
            out = self.real(sendbuf, recvbuf, **kw)
            self.calls.append((np.array(sendbuf, copy=True), np.array(recvbuf, copy=True), kw["comm"].Get_size()))
            return out
        comm.allgather = spy
        return self

    def __exit__(self, *exc: object) -> None:
        comm.allgather = self.real


def reference_update(scheme: str, recv: np.ndarray, p: int, d: int, lr: float, sign_scale: float) -> np.ndarray:
    """The averaged update from the gathered bytes, decoded here independently of train.compress."""
    block = recv.size // p
    signs, scales = [], []
    for k in range(p):
        b = recv[k * block:(k + 1) * block]
        off = 4 if scheme == "ef-sign" else 0
        scales.append(float(np.frombuffer(b[:4].tobytes(), dtype="<f4")[0]) if off else 1.0)
        bits = np.array([(int(b[off + j // 8]) >> (j % 8)) & 1 for j in range(d)], dtype=np.float64)
        signs.append(2 * bits - 1)  # bit k of byte j is coordinate 8 j + k
    if scheme == "sign":
        return np.sign(np.sum(signs, axis=0)) * lr * sign_scale
    return sum(s * x for s, x in zip(scales, signs)) / p


def _check_scheme(scheme: str, **over: object) -> None:
    tr = make(tiny(compress=scheme, sign_scale=0.5, **over))
    T, d = tr.plan.total_steps, tr.averager.flat.numel
    events = dict(tr.plan.schedule.events(T))
    nb = payload_bytes(scheme, d)
    assert tr.averager.nbytes == nb
    anchor = params(tr)
    with Spy() as spy:
        for t in range(T):
            anchor = params(tr) if t == 0 or (t - 1) in events else anchor  # the model after the last sync
            lr = tr._lr_at(t)
            n_before = len(spy.calls)
            tr._one_step(t, None)
            if t in events:
                assert len(set(digests(tr))) == 1, f"{scheme}: models differ after the sync at step {t}"
                assert len(spy.calls) == n_before + 1
                send, recv, p = spy.calls[-1]
                assert send.nbytes == nb and recv.nbytes == p * nb and p == WORLD.Get_size()
                expected = anchor.astype(np.float64) - reference_update(scheme, recv, p, d, lr, 0.5)
                np.testing.assert_allclose(params(tr), expected, rtol=0, atol=1e-6)
            else:
                assert len(spy.calls) == n_before, f"{scheme}: an all-gather outside a sync at step {t}"
    st = tr.sync.stats["global"]
    assert st["syncs"] == len(events) == len(spy.calls)
    assert st["bytes"] == sum(s.nbytes for s, _, _ in spy.calls)  # bytes accounted == bytes handed to comm
    assert st["bytes_recv"] == sum(r.nbytes - s.nbytes for s, r, _ in spy.calls)


def check_sign_local_matches_reference_and_bytes() -> None:
    _check_scheme("sign")


def check_ef_sign_local_matches_reference_and_bytes() -> None:
    _check_scheme("ef-sign")


def check_postlocal_compressed_syncs_every_step_before_switch() -> None:
    tr = make(tiny(compress="ef-sign", algorithm="postlocal", switch_step=5, H=4))
    assert tr.plan.grad_phase(0) and not tr.plan.grad_phase(5)
    for t in range(9):
        tr._one_step(t, None)
        if t < 5:  # mini-batch phase: a compressed model sync after every local step, no gradient all-reduce
            assert len(set(digests(tr))) == 1, f"models differ at mini-batch step {t}"
    assert tr.sync.stats["global"]["syncs"] == 5 + 1  # steps 0..4, then the local sync after step 8
    assert tr.sync.stats["global"]["bytes"] == 6 * tr.averager.nbytes


def check_hierarchical_compressed_levels() -> None:
    tr = make(tiny(compress="sign", algorithm="hierarchical", H=2, Hb=2, gpus_per_node=2))
    block = tr.topology.node_comm
    events = dict(tr.plan.schedule.events(tr.plan.total_steps))
    for t in range(12):
        tr._one_step(t, None)
        if events.get(t) == "block":
            assert len(set(digests(tr, block))) == 1, f"block models differ after the block sync at {t}"
            assert len(set(digests(tr))) > 1 or WORLD.Get_size() == block.Get_size()
        elif events.get(t) == "global":
            assert len(set(digests(tr))) == 1, f"models differ after the global sync at {t}"
    nb, K, g = tr.averager.nbytes, WORLD.Get_size(), block.Get_size()
    for lvl, p in (("block", g), ("global", K)):
        st = tr.sync.stats[lvl]
        assert st["syncs"] > 0 and st["bytes"] == st["syncs"] * nb and st["bytes_recv"] == st["syncs"] * (p - 1) * nb


def check_each_scheme_converges() -> None:
    """Synthetic 10-class data: every scheme ends far above chance (0.1) and far below the initial loss ln 10."""
    for scheme in ("none", "sign", "ef-sign"):
        tr = make(tiny(compress=scheme, epochs=4.0, H=4, sign_scale=0.5))
        summary = WORLD.bcast(tr.run(), root=0)
        fin = summary["final"]
        assert fin["test_acc"] > 0.6 and fin["train_loss"] < 0.6 * np.log(10), f"{scheme} did not converge: {fin}"


def check_ef_memory_resumes_exactly() -> None:
    full = make(tiny(compress="ef-sign", epochs=2.0, H=3, log_objective=True))
    full.run()
    part = make(tiny(compress="ef-sign", epochs=2.0, H=3, stop_at_epoch=1.0, log_objective=True))
    part.run()
    assert 0 < part.step < part.plan.total_steps
    mem = part.averager.compressor.memory["global"]
    assert np.abs(mem).sum() > 0, "the error-feedback memory is zero at the pause: the check could not fail"
    resumed = make(tiny(compress="ef-sign", epochs=2.0, H=3, log_objective=True), resume=str(part.run_dir))
    np.testing.assert_array_equal(resumed.averager.compressor.memory["global"], mem)
    resumed.run()
    assert np.array_equal(params(resumed), params(full)), "resumed run differs from the uninterrupted one"
    np.testing.assert_array_equal(resumed.averager.compressor.memory["global"], full.averager.compressor.memory["global"])
    assert torch.equal(torch.from_numpy(params(resumed)), torch.from_numpy(params(full)))
    if WORLD.Get_rank() == 0:  # f after every global sync: the same records, once each, after the resume
        a = (full.run_dir / "objective.jsonl").read_text().splitlines()
        b = (resumed.run_dir / "objective.jsonl").read_text().splitlines()
        assert a == b and len(a) == full.sync.stats["global"]["syncs"], (len(a), len(b))
