"""The same small runs on both engines, recording every worker's model after every sync (test_virtual_equivalence).

`record_mpi` runs on max($VIRTUAL_KS) ranks under mpirun (the largest K, then the others on sub-communicators); `record_virtual` in one
process (a world of one rank) for each K of $VIRTUAL_KS, with the loop step and, for some runs, the vmap step. They
write <engine>-K<K>-<config>.npz (engine: mpi, virtual or vmap) into $VIRTUAL_REF_DIR: `models` [syncs, K, D]
(float64), `levels` (the level of each sync) and the evaluations' `test_acc` / `test_loss` from metrics.jsonl.
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
from tests.parallel.virtual_runs import VMAP, configs
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
def _run(K: int, name: str, over: dict[str, Any], out_dir: Path, engine: str, world: Any = WORLD) -> None:
    """`engine`: mpi, virtual (its default step, loop on the CPU) or vmap (engine virtual's vmap step)."""
    virtual = engine != "mpi"
    cfg = TrainConfig(**over, engine="virtual" if virtual else "mpi", workers=K if virtual else None,
                      virtual_step="vmap" if engine == "vmap" else "auto",
                      threads=1 if engine == "vmap" else None)  # vmap: torch's threads spin on a loaded machine
    run_dir = out_dir / f"{engine}-K{K}-{name}"
    cfg.out_dir = str(run_dir)
    tr = Trainer(cfg, world=world)
    rank = world.Get_rank()
    models: list[np.ndarray] = []
    levels: list[str] = []
    after = tr.sync.after_sync

    def record(level: str, sent: int, recv: int) -> None:
        after(level, sent, recv)
        record_models(level)

    def record_models(level: str) -> None:
        buf = tr.averager.flat.pack().detach().to(torch.float64)  # the models now (also after a gradient sync)
        if virtual:
            rows = tr.averager.backend.per_worker(buf).numpy()
        else:
            rows = world.gather(buf.numpy().copy(), root=0)
        if rank == 0:
            models.append(np.stack(rows) if isinstance(rows, list) else rows)
            levels.append(level)

    tr.sync.after_sync = record  # type: ignore[method-assign]
    overlapped = tr.sync.overlapped_sync

    def record_overlapped(level: str, sent: int, recv: int, **times: float) -> None:
        # engine mpi's mini-batch steps average their gradients in buckets (docs/README-overlap.md)
        overlapped(level, sent, recv, **times)
        record_models(level)

    tr.sync.overlapped_sync = record_overlapped  # type: ignore[method-assign]
    tr.run()
    if rank == 0:
        recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        ev = [r for r in recs if r["kind"] == "epoch"]
        np.savez(out_dir / f"{engine}-K{K}-{name}.npz", models=np.stack(models), levels=np.array(levels),
                 test_acc=np.array([r["test_acc"] for r in ev]), test_loss=np.array([r["test_loss"] for r in ev]),
                 train_loss=np.array([r["train_loss"] for r in ev]))


def record_mpi() -> None:
    """On max($VIRTUAL_KS) ranks: the runs of the largest K on all of them, then each smaller K on groups of K
    consecutive ranks side by side, the runs shared out between the groups (one job: every rank imports torch once,
    which costs more CPU than the runs)."""
    ks = sorted((int(k) for k in os.environ["VIRTUAL_KS"].split(",")), reverse=True)
    if WORLD.Get_size() != ks[0]:
        raise RuntimeError(f"record_mpi runs on {ks[0]} ranks, got {WORLD.Get_size()}")
    out = Path(os.environ["VIRTUAL_REF_DIR"])
    for name, over in configs(ks[0]).items():
        _run(ks[0], name, over, out, "mpi")
    rank = WORLD.Get_rank()
    for K in ks[1:]:
        groups, color = ks[0] // K, rank // K
        sub = WORLD.Split(color, rank)
        for name in list(configs(K))[color::groups]:
            _run(K, name, configs(K)[name], out, "mpi", world=sub)
        sub.Free()


def record_virtual() -> None:
    out = Path(os.environ["VIRTUAL_REF_DIR"])
    for K in (int(k) for k in os.environ["VIRTUAL_KS"].split(",")):
        for name, over in configs(K).items():
            _run(K, name, over, out, "virtual")
            if name in VMAP.get(K, ()):
                _run(K, name, over, out, "vmap")
    _cli_pause_resume(out)


def _cli_pause_resume(out: Path) -> None:
    """The CLI's own main() (what `python -m train` calls; in this process, saving two interpreters' start-up):
    the K = 2 hybrid run paused half-way with --stop-at-epoch into OUT/cli-pause-resume, then --resume'd."""
    from train.cli import FLAG_OF, main

    cfg = dict(configs(2)["resnet8-hybrid"], data_dir=None)
    args = ["--engine", "virtual", "--workers", "2", "--quiet"]
    for name, value in cfg.items():
        if value is not None:
            args += [FLAG_OF[name], repr(value) if isinstance(value, float) else str(value)]
    run = out / "cli-pause-resume"
    assert main([*args, "--out-dir", str(run), "--stop-at-epoch", repr(cfg["epochs"] / 2)]) == 0
    assert json.loads((run / "summary.json").read_text())["status"] == "paused"
    assert main(["--resume", str(run), "--quiet"]) == 0
