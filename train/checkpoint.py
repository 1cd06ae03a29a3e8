"""Per-rank checkpoints: atomic files, a manifest with their digests, the last two sets kept, fallback on corruption.

Layout: RUN_DIR/checkpoints/step-XXXXXXXX/rank-RRRR.pt, one file per rank, and checkpoints/latest.json naming the
newest complete set (step, world size, folder, the sha256 of every rank's file) and the one before it ("previous").
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from atomicio import OutputError, atomic_open, describe_oserror, write_json_atomic
from train.errors import AgreedError, AgreedOutputError, TrainError
from train.launch import resume_command

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "rank_file", "read_rank_file",
           "checkpoint_sets"]


def rank_file(run_dir: str | os.PathLike[str], step: int, rank: int) -> Path:
    """Path of rank `rank`'s checkpoint taken after 0-based step `step`."""
    return Path(run_dir) / "checkpoints" / f"step-{step:08d}" / f"rank-{rank:04d}.pt"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(run_dir: str | os.PathLike[str], step: int, state: dict[str, Any], world: Any, *,
                    pending: str | None = None) -> Path:
    """Write this rank's `state` after `step`; collective over `world`.

    Every rank writes its file atomically (temp, fsync, rename, fsync of the folder); the ranks then agree on the
    outcome. Only when every rank succeeded does rank 0 rewrite latest.json (atomically) and delete the sets older
    than the previous one. `pending` is an earlier write failure of this rank (e.g. metrics.jsonl on a full disk):
    like a failed checkpoint it stops every rank with AgreedOutputError (one line, exit 74), and latest.json keeps
    naming the last complete set, so the run stays resumable.
    """
    rank, size = world.Get_rank(), world.Get_size()
    path = rank_file(run_dir, step, rank)
    err, digest = pending, None
    if err is None:
        try:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise OutputError(f"cannot write {path.parent}: {describe_oserror(e)}") from None
            with atomic_open(path, "wb") as fh:
                torch.save(state, fh)
            digest = _sha256(path)
        except OutputError as e:
            err = str(e)
    results = world.allgather((err, digest))
    errors = [e for e, _ in results if e]
    root = Path(run_dir) / "checkpoints"
    if not errors and rank == 0:
        try:
            old = _read_latest(root / "latest.json") if (root / "latest.json").is_file() else None
        except TrainError:
            old = None
        previous = None
        if old is not None:
            previous = ({k: old[k] for k in ("step", "dir", "sha256") if k in old} if old["dir"] != path.parent.name
                        else old.get("previous"))
        try:
            write_json_atomic(root / "latest.json", {"step": step, "world_size": size, "dir": path.parent.name,
                                                     "sha256": [d for _, d in results], "previous": previous})
        except OutputError as e:
            err = str(e)
        else:
            keep = {path.parent.name, previous["dir"] if previous else None}
            for d in root.glob("step-*"):
                if d.is_dir() and d.name not in keep:
                    shutil.rmtree(d, ignore_errors=True)
    if not errors:
        err = world.bcast(err if rank == 0 else None, root=0)
        errors = [err] if err else []
    if errors:
        if rank == 0 and path.parent.name != _named(root):
            shutil.rmtree(path.parent, ignore_errors=True)  # incomplete; latest.json names the last complete set
        raise AgreedOutputError(f"{errors[0]}; the run stops here and can be resumed from its last complete "
                                f"checkpoint ({resume_command(run_dir, world.Get_size())}) once the problem is fixed")
    return path


def _named(root: Path) -> str | None:
    """The folder checkpoints/latest.json names (None: no readable index)."""
    try:
        return _read_latest(root / "latest.json")["dir"]
    except TrainError:
        return None


def _read_latest(meta: Path) -> dict[str, Any]:
    try:
        obj = json.loads(meta.read_text(encoding="utf-8"))
        if not isinstance(obj, dict) or not {"step", "world_size", "dir"} <= obj.keys():
            raise ValueError("missing step, world_size or dir")
    except (OSError, ValueError) as e:
        raise TrainError(f"checkpoint index {meta} is corrupt or unreadable ({e}); "
                         f"remove it to start the run again from step 0") from None
    return obj


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The content of checkpoints/latest.json of `run_dir`, or a TrainError naming what is missing."""
    meta = Path(run_dir) / "checkpoints" / "latest.json"
    if not meta.is_file():
        raise TrainError(f"no checkpoint to resume from: {meta} does not exist")
    return _read_latest(meta)


def checkpoint_sets(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The sets a resume may use, newest first: latest.json's own and its `previous` (when recorded)."""
    sets = [{"step": meta["step"], "dir": meta["dir"], "sha256": meta.get("sha256")}]
    if meta.get("previous"):
        sets.append(meta["previous"])
    return sets


def read_rank_file(path: Path, sha256: str | None = None) -> dict[str, Any]:
    """One rank's checkpoint file, checked against its recorded digest; a TrainError naming the file otherwise."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise TrainError(f"checkpoint file missing: {path}") from None
    except OSError as e:
        raise TrainError(f"cannot read checkpoint file {path}: {describe_oserror(e)}") from None
    if sha256 is not None and hashlib.sha256(blob).hexdigest() != sha256:
        raise TrainError(f"checkpoint file {path} is corrupt: its sha256 differs from the one recorded in "
                         f"latest.json ({len(blob)} bytes: truncated or overwritten)")
    try:
        return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=False)
    except Exception as e:
        first = str(e).strip().splitlines()[0][:120] if str(e).strip() else ""
        raise TrainError(f"checkpoint file {path} is corrupt or unreadable ({type(e).__name__}: {first})") from None


def load_checkpoint(run_dir: str | os.PathLike[str], world: Any) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """Collective: this rank's state from the newest set every rank can read, its set, and what was skipped.

    The latest set is tried first; when any rank's file of it is missing or corrupt, every rank falls back to the
    previous set together. Nothing usable: AgreedError naming the first bad file (one line on rank 0, exit 2).
    """
    rank, size = world.Get_rank(), world.Get_size()
    meta = latest_checkpoint(run_dir)
    if meta["world_size"] != size:
        raise AgreedError(f"checkpoint in {run_dir} was written by {meta['world_size']} ranks; "
                          f"resume with mpirun -n {meta['world_size']}, got {size}")
    skipped: list[str] = []
    for ckpt in checkpoint_sets(meta):
        path = rank_file(run_dir, ckpt["step"], rank)
        digests = ckpt.get("sha256")
        state, err = None, None
        try:
            state = read_rank_file(path, digests[rank] if digests else None)
        except TrainError as e:
            err = str(e)
        errors = [e for e in world.allgather(err) if e]
        if not errors:
            return state, ckpt, skipped  # type: ignore[return-value]
        skipped.append(errors[0])
    more = "; the previous checkpoint is unusable too" if len(skipped) > 1 else "; there is no earlier checkpoint"
    raise AgreedError(f"{skipped[0]}{more} (start the run again in a new --out-dir)")
