"""Atomic per-rank checkpoints: every rank writes its own file, rank 0 then points `latest.json` at the set."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from train.errors import TrainError
from train.metrics import write_json_atomic

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "rank_file"]


def rank_file(run_dir: str | os.PathLike[str], step: int, rank: int) -> Path:
    """Path of rank `rank`'s checkpoint taken after 0-based step `step`."""
    return Path(run_dir) / "checkpoints" / f"step-{step:08d}" / f"rank-{rank:04d}.pt"


def save_checkpoint(run_dir: str | os.PathLike[str], step: int, state: dict[str, Any], world: Any) -> Path:
    """Write this rank's `state` after `step`; collective over `world`.

    Each rank writes to a temporary file and os.replace()s it; after a barrier rank 0 atomically rewrites
    checkpoints/latest.json (step, world size, folder) and removes older checkpoint folders. A crash at any point
    leaves latest.json naming a complete set.
    """
    rank, size = world.Get_rank(), world.Get_size()
    path = rank_file(run_dir, step, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    world.Barrier()
    if rank == 0:
        root = Path(run_dir) / "checkpoints"
        write_json_atomic(root / "latest.json", {"step": step, "world_size": size, "dir": path.parent.name})
        for old in root.glob("step-*"):
            if old.is_dir() and old.name != path.parent.name:
                shutil.rmtree(old, ignore_errors=True)
    world.Barrier()
    return path


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The content of checkpoints/latest.json of `run_dir`, or a TrainError naming what is missing."""
    meta = Path(run_dir) / "checkpoints" / "latest.json"
    if not meta.is_file():
        raise TrainError(f"no checkpoint to resume from: {meta} does not exist")
    with open(meta, encoding="utf-8") as fh:
        return json.load(fh)


def load_checkpoint(run_dir: str | os.PathLike[str], rank: int, size: int) -> dict[str, Any]:
    """Load rank `rank`'s state from the latest checkpoint of `run_dir`, checking the world size matches."""
    meta = latest_checkpoint(run_dir)
    if meta["world_size"] != size:
        raise TrainError(f"checkpoint in {run_dir} was written by {meta['world_size']} ranks; "
                         f"resume with mpirun -n {meta['world_size']}, got {size}")
    path = rank_file(run_dir, meta["step"], rank)
    if not path.is_file():
        raise TrainError(f"checkpoint file missing: {path}")
    return torch.load(path, map_location="cpu", weights_only=False)
