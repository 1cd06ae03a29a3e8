"""The same small runs on both engines, recording every worker's model after every sync (test_virtual_equivalence).

`record_mpi` runs on K ranks under mpirun; `record_virtual` in one process (a world of one rank) for each K of
$VIRTUAL_KS. Both write RUN_DIR/<engine>-K<K>-<config>.npz into $VIRTUAL_REF_DIR: `models` [syncs, K, D] (float64),
`levels` (the level of each sync) and the evaluations' `test_acc` / `test_loss` from metrics.jsonl.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mpi4py import MPI

import train.trainer
from train.config import TrainConfig
from train.data import load_dataset
from train.trainer import Trainer

WORLD = MPI.COMM_WORLD
_LOADED: dict[tuple[str | None, float], Any] = {}


def _cached_dataset(cfg: TrainConfig) -> Any:
    """w8a parsed once per job by rank 0 and broadcast (parsing takes a CPU second per rank; the runs only read
    the tensors). The first w8a run is one of all ranks of the world, so the broadcast is collective."""
    if cfg.dataset != "w8a":
        return load_dataset(cfg)
    key = (cfg.data_dir, cfg.test_fraction)
    if key not in _LOADED:
        _LOADED[key] = WORLD.bcast(load_dataset(cfg) if WORLD.Get_rank() == 0 else None, root=0)
    return _LOADED[key]


train.trainer.load_dataset = _cached_dataset  # type: ignore[assignment]
#: 100 local steps at H = 2: 50 syncs (hierarchical: 25 block, 25 global).
STEPS, BATCH = 100, 4


def _configs(K: int) -> dict[str, dict[str, Any]]:
    """The compared runs. Sizes are fixed (not per K) so that every K reads the same data."""
    w8a = os.environ.get("VIRTUAL_W8A_DIR")  # needed by the logreg runs only
    g = max(1, K // 2)
    common: dict[str, Any] = dict(dtype="float64", batch_size=BATCH, target_acc=None, checkpoint_every=0,
                                  checkpoint_minutes=0, H=2, algorithm="local", log_every=1000)
    logreg = dict(common, model="logreg-binary", dataset="w8a", data_dir=w8a, test_fraction=0.2, lr=0.5,
                  weight_decay=1.0 / 49749, momentum=0.0, lr_schedule="const", lr_cap=1.0)
    resnet = dict(common, model="resnet8", width=4, synthetic_train=512, synthetic_test=128, synthetic_size=8,
                  synthetic_noise=3.0, lr=0.2, lr_scaling="none", lr_warmup_epochs=0.0, bn_eval="average")
    out: dict[str, dict[str, Any]] = {}
    for name, base, n_train in (("logreg", logreg, 39799), ("resnet8", resnet, 512)):
        epochs = STEPS * BATCH / (n_train // K)  # exactly STEPS steps per worker
        runs = {"local": {}, "hier": dict(algorithm="hierarchical", Hb=2, gpus_per_node=g),
                "slowmo": dict(momentum_variant="slowmo", slow_momentum=0.6, slow_lr=0.8)}
        for alg, over in runs.items():
            out[f"{name}-{alg}"] = dict(base, epochs=epochs, eval_every=epochs / 4, **over)
    if K == 4:  # the same run in float32: the difference between the engines is rounding (README-virtual.md)
        out["resnet8-local-float32"] = dict(out["resnet8-local"], dtype="float32")
    # the other syncs, at K = 2 only (cheap): sign / ef-sign compression, hybrid momentum, post-local with
    # mini-batch steps and clipping, BatchNorm statistics of worker 0 for evaluation
    if K == 2:
        r = dict(resnet, epochs=30 * BATCH / (512 // K), eval_every=30 * BATCH / (512 // K) / 2)
        out["resnet8-efsign"] = dict(r, compress="ef-sign")
        out["resnet8-sign"] = dict(r, compress="sign", sign_scale=0.5)
        out["resnet8-hybrid"] = dict(r, momentum_variant="hybrid", global_momentum=0.5, bn_eval="rank0")
        out["resnet8-postlocal"] = dict(r, algorithm="postlocal", switch_step=10, clip_grad_norm=0.5, H=3)
        out["logreg-minibatch"] = dict(logreg, algorithm="minibatch", H=1, epochs=30 * BATCH / (39799 // K),
                                       eval_every=30 * BATCH / (39799 // K) / 2)
    return out


def _run(K: int, name: str, over: dict[str, Any], out_dir: Path, engine: str, world: Any = WORLD) -> None:
    cfg = TrainConfig(**over, engine=engine, workers=K if engine == "virtual" else None)
    run_dir = out_dir / f"{engine}-K{K}-{name}"
    cfg.out_dir = str(run_dir)
    tr = Trainer(cfg, world=world)
    rank = world.Get_rank()
    models: list[np.ndarray] = []
    levels: list[str] = []
    after = tr.sync.after_sync

    def record(level: str, sent: int, recv: int) -> None:
        after(level, sent, recv)
        buf = tr.averager.flat.pack().detach().to(torch.float64)  # the models now (also after a gradient sync)
        if engine == "virtual":
            rows = tr.averager.backend.per_worker(buf).numpy()
        else:
            rows = world.gather(buf.numpy().copy(), root=0)
        if rank == 0:
            models.append(np.stack(rows) if isinstance(rows, list) else rows)
            levels.append(level)

    tr.sync.after_sync = record  # type: ignore[method-assign]
    tr.run()
    if rank == 0:
        recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        ev = [r for r in recs if r["kind"] == "epoch"]
        np.savez(out_dir / f"{engine}-K{K}-{name}.npz", models=np.stack(models), levels=np.array(levels),
                 test_acc=np.array([r["test_acc"] for r in ev]), test_loss=np.array([r["test_loss"] for r in ev]),
                 train_loss=np.array([r["train_loss"] for r in ev]))


def record_mpi() -> None:
    """On 8 ranks: the K = 8 runs, then K = 4 on ranks 0-3 beside K = 2 on ranks 4-5 and 6-7 (one job: every rank
    imports torch once, which costs more CPU than the runs)."""
    if WORLD.Get_size() != 8:
        raise RuntimeError(f"record_mpi runs on 8 ranks, got {WORLD.Get_size()}")
    out = Path(os.environ["VIRTUAL_REF_DIR"])
    for name, over in _configs(8).items():
        _run(8, name, over, out, "mpi")
    rank = WORLD.Get_rank()
    color = 0 if rank < 4 else 1 if rank < 6 else 2
    sub = WORLD.Split(color, rank)
    K = sub.Get_size()
    names = list(_configs(K))
    if K == 2:  # two pairs share the K = 2 runs
        names = names[color - 1::2]
    for name in names:
        _run(K, name, _configs(K)[name], out, "mpi", world=sub)
    sub.Free()


def record_virtual() -> None:
    out = Path(os.environ["VIRTUAL_REF_DIR"])
    for K in (int(k) for k in os.environ["VIRTUAL_KS"].split(",")):
        for name, over in _configs(K).items():
            _run(K, name, over, out, "virtual")
