"""`--resume RUN_DIR`, decided before MPI starts: which configuration, from where, or nothing to do.

Runs on every rank from the files of the run folder (config.json, checkpoints/latest.json, summary.json) and the
launcher's world size, so every refusal is one line from launch rank 0 and exit 2, with no MPI job at all.
Flags given with --resume must equal the run's, except those in MAY_CHANGE.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from train.checkpoint import latest_checkpoint
from train.config import TrainConfig
from train.errors import TrainError

__all__ = ["MAY_CHANGE", "ResumePlan", "plan_resume"]

#: Configuration fields a resume may change: more (or fewer, but not fewer than done) epochs, when to pause, how
#: often to checkpoint, and where the data lives. Everything else would make the run a different run.
MAY_CHANGE = ("epochs", "stop_at_epoch", "checkpoint_every", "checkpoint_minutes", "data_dir")


@dataclass(kw_only=True)
class ResumePlan:
    """What a resume does: `cfg` to run with (None: nothing to do, `message` says why)."""

    cfg: TrainConfig | None
    message: str | None = None      # for the user (rank 0): why nothing is done, or how the run goes on
    from_scratch: bool = False      # the folder holds a run without any checkpoint: start it again at step 0
    config_changed: bool = False    # config.json is rewritten (after the checkpoint loaded)


def _norm(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    return v


def _show(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(_show(x) for x in v) if not any(isinstance(x, (list, tuple)) for x in v) else \
            " ".join(":".join(map(str, x)) for x in v)
    return str(v)


def _read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return {"config": dict(doc["config"]), "plan": dict(doc["plan"])}
    except (OSError, KeyError, TypeError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else f"{type(e).__name__}: {e}"
        raise TrainError(f"cannot resume: {path} is missing or unreadable ({reason})") from None


def plan_resume(run_dir: str, given: dict[str, Any], size: int, flag_of: dict[str, str]) -> ResumePlan:
    """Decide a resume of `run_dir` with the explicitly `given` config fields on `size` ranks (TrainError: refused).

    `flag_of` maps a field name to its command-line flag, for the messages.
    """
    root = Path(run_dir)
    doc = _read_config(root)
    saved, plan = doc["config"], doc["plan"]
    known = {f.name for f in fields(TrainConfig)}
    saved = {k: v for k, v in saved.items() if k in known}
    saved.setdefault("bucket_size", 0)  # runs from before gradient buckets go on with one all-reduce per step
    differ = [k for k, v in given.items() if k in saved and k not in ("out_dir",) and _norm(v) != _norm(saved[k])]
    refused = [k for k in differ if k not in MAY_CHANGE]
    if refused:
        listed = ", ".join(f"{flag_of.get(k, k)} {_show(given[k])} (the run has {_show(saved[k])})" for k in refused)
        allowed = ", ".join(flag_of.get(k, k) for k in MAY_CHANGE)
        raise TrainError(f"--resume {run_dir}: {listed} would change the run's configuration; only {allowed} "
                         f"may change on resume (start a new run with --out-dir for other settings)")
    new = {**saved, **{k: given[k] for k in differ}, "out_dir": run_dir,
           "stop_at_epoch": given.get("stop_at_epoch")}
    cfg = TrainConfig(**new)
    spe = float(plan["steps_per_epoch"])
    if not (root / "checkpoints" / "latest.json").is_file():
        return ResumePlan(cfg=cfg, from_scratch=True, config_changed=bool(differ),
                          message=f"note: {run_dir} has no checkpoint yet: its run starts again from step 0 "
                                  f"with its saved configuration")
    meta = latest_checkpoint(root)
    if meta["world_size"] != size:
        raise TrainError(f"checkpoint in {run_dir} was written by {meta['world_size']} ranks; "
                         f"resume with mpirun -n {meta['world_size']}, got {size}")
    done = int(meta["step"]) + 1
    done_epochs = done / spe
    per_worker = max(1, round(cfg.epochs * plan["n_local"]))  # as train.plan.RunPlan.build counts them
    total = -(-per_worker * size // (size * cfg.batch_size))
    if "epochs" in differ and cfg.epochs * spe + 1e-9 < done:
        raise TrainError(f"--epochs {_show(given['epochs'])} is less than the {done_epochs:.3f} epochs the run in "
                         f"{run_dir} has done; give more epochs to extend it")
    if done >= total:
        summary = _summary(root)
        acc = summary.get("final", {}).get("test_acc") if summary else None
        shown = f", final test acc {100 * acc:.2f} %" if isinstance(acc, (int, float)) else ""
        return ResumePlan(cfg=None, message=f"{run_dir} is already complete ({done}/{total} steps, "
                                            f"{done_epochs:g} epochs{shown}); nothing to do (to train longer: "
                                            f"--resume {run_dir} --epochs E with E > {cfg.epochs:g})")
    if cfg.stop_at_epoch is not None and cfg.stop_at_epoch <= done_epochs + 1e-9:
        raise TrainError(f"--stop-at-epoch must be beyond the {done_epochs:.3f} epochs already done in {run_dir}, "
                         f"got {_show(cfg.stop_at_epoch)}")
    return ResumePlan(cfg=cfg, config_changed=bool(differ))


def _summary(root: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads((root / "summary.json").read_text(encoding="utf-8"))
        return obj if isinstance(obj, dict) else None
    except (OSError, ValueError):
        return None
