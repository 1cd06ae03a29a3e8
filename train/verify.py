"""Check a run's latest checkpoint: are the parameters bitwise identical on every rank?"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from train.checkpoint import latest_checkpoint, rank_file, read_rank_file
from train.errors import TrainError

__all__ = ["verify_checkpoint"]


def verify_checkpoint(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Compare every worker's parameters (not the per-worker BatchNorm statistics) in the latest checkpoint.

    The workers are the ranks' files, or the K rows of the one file of an engine-virtual run.
    Returns {"step", "world_size", "engine", "workers", "identical": bool, "digests": [sha256 of each worker's
    parameter bytes], "differing": [parameter names that differ from worker 0's on some worker], "pending_sync":
    whether an overlapped sync was in flight (its models differ by the local steps taken since it, by design;
    docs/README-overlap.md)}.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise TrainError(f"train verify: {root} is not a folder (give a run folder made by python -m train)")
    if not (root / "config.json").is_file():
        raise TrainError(f"train verify: {root} is not a run folder (no config.json; give a folder made by "
                         f"python -m train)")
    if not (root / "checkpoints" / "latest.json").is_file():
        raise TrainError(f"train verify: run folder {root} has no checkpoint yet (checkpoints/latest.json is "
                         f"missing): nothing to verify")
    meta = latest_checkpoint(run_dir)
    file_digests = meta.get("sha256")  # of each rank's file, checked as it is read
    models: list[dict[str, torch.Tensor]] = []
    engine = "mpi"
    pending = False
    for r in range(meta["world_size"]):
        st = read_rank_file(rank_file(run_dir, meta["step"], r), file_digests[r] if file_digests else None)
        pending = pending or (st.get("sync") or {}).get("pending") is not None
        stacked = st.get("virtual")
        if isinstance(stacked, dict):  # engine virtual: worker k is row k of every stacked parameter
            engine = "virtual"
            models += [{n: p[k] for n, p in stacked["params"].items()} for k in range(int(stacked["workers"]))]
        else:
            models.append(st["model"])
    digests: list[str] = []
    differing: set[str] = set()
    ref: dict[str, torch.Tensor] | None = None
    for model in models:
        params = {k: v for k, v in model.items() if not k.endswith(("running_mean", "running_var",
                                                                     "num_batches_tracked"))}
        h = hashlib.sha256()
        for k in sorted(params):
            h.update(params[k].contiguous().numpy().tobytes())
        digests.append(h.hexdigest())
        if ref is None:
            ref = params
        else:
            differing.update(k for k in params if not torch.equal(params[k], ref[k]))
    return {"step": meta["step"], "world_size": meta["world_size"], "engine": engine, "workers": len(models),
            "identical": not differing,
            "digests": digests, "differing": sorted(differing), "pending_sync": pending}
