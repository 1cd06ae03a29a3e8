"""Retime a trainer run on another cluster: its learning curve on the simulated clock, time to target, speedup."""
# The learning dynamics of K workers do not depend on the cluster (same seeds, same trajectory); only the clock
# does. So a run folder (config.json, metrics.jsonl) is priced by the simulator on its own configuration
# (sim/trainrun.py, the code of `train --predict`): the simulated time after every step (compute and syncs, with
# the evaluations and checkpoints the run did on top) puts each evaluation of the run on that cluster's clock.
# Inside a round of local steps the compute is shared out evenly over its steps (an evaluation between two syncs
# sits at its share). Time to target is the time of the first evaluation that reaches the target (the eval point:
# a run can only know it there); `interpolated_time_s` places the crossing between it and the evaluation before.
# The speedup is the paper's: the time of one worker to reach the target over the time of this run to reach it,
# both on the same cluster's clock, the one-worker reference being itself a run folder retimed the same way.
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import SimError
from sim.overlap import uniform_buckets
from sim.trainrun import TrainRun, predict_run

__all__ = ["SCHEMA", "METRICS", "RunFolder", "read_run", "train_run_of", "first_reach", "retime", "speedup"]

SCHEMA = "sim.retime/1"
#: metric -> larger is better: accuracy rises to its target, the objective's gap to f* falls to it.
METRICS = {"test_acc": True, "objective_gap": False}
#: Largest metrics.jsonl line read (a run's epoch records are about 1-2 KB; a longer line is not a record of ours).
MAX_LINE = 1 << 20


@dataclass(kw_only=True)
class RunFolder:
    """What retime reads of a run folder: the resolved configuration, the evaluations and the summary (if any)."""

    path: str
    resolved: dict[str, Any]
    curve: list[dict[str, Any]]
    summary: dict[str, Any] | None

    @property
    def config(self) -> dict[str, Any]:
        return self.resolved["config"]

    @property
    def plan(self) -> dict[str, Any]:
        return self.resolved["plan"]


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        if path.stat().st_size > (64 << 20):
            raise SimError(f"{what} {path} is {path.stat().st_size} bytes; a run's JSON file is far smaller")
        obj = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SimError(f"cannot read {what} {path}: {e.strerror or e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SimError(f"{what} {path} is not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise SimError(f"{what} {path} must hold a JSON object, got {type(obj).__name__}")
    return obj


def _epoch_records(path: Path) -> list[dict[str, Any]]:
    """The evaluation ("epoch") records of metrics.jsonl, read line by line; a torn last line is left out."""
    out: list[dict[str, Any]] = []
    try:
        with open(path, encoding="utf-8") as fh:
            lines = iter(lambda: fh.readline(MAX_LINE), "")
            for n, line in enumerate(lines, 1):
                if '"epoch"' not in line or '"kind"' not in line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    if fh.readline(1) == "":  # the last line, cut by a crash mid-write
                        break
                    raise SimError(f"{path} line {n} is not JSON") from None
                if isinstance(rec, dict) and rec.get("kind") == "epoch":
                    out.append(rec)
    except OSError as e:
        raise SimError(f"cannot read {path}: {e.strerror or e}") from None
    for rec in out:
        for key in ("step", "epoch"):
            if not isinstance(rec.get(key), (int, float)):
                raise SimError(f"{path}: an epoch record lacks a number {key!r}: {str(rec)[:120]}")
    return out


def read_run(run_dir: str) -> RunFolder:
    """Read a run folder of `python -m train` (any engine)."""
    root = Path(run_dir)
    if not root.is_dir():
        raise SimError(f"run folder {run_dir!r} does not exist or is not a folder")
    resolved = _read_json(root / "config.json", "config file")
    for key in ("config", "plan", "model_params", "dataset"):
        if key not in resolved:
            raise SimError(f"{root / 'config.json'} lacks key {key!r}; is {run_dir} a python -m train run folder?")
    summary = _read_json(root / "summary.json", "summary") if (root / "summary.json").is_file() else None
    curve = _epoch_records(root / "metrics.jsonl") if (root / "metrics.jsonl").is_file() else []
    return RunFolder(path=str(root), resolved=resolved, curve=curve, summary=summary)


def train_run_of(run: RunFolder) -> TrainRun:
    """The TrainRun of a run folder: its configuration and plan as the trainer resolved them."""
    c, p, r = run.config, run.plan, run.resolved
    gflops = r.get("gflops_per_sample")
    if gflops is None and run.summary and isinstance(run.summary.get("prediction"), dict):
        gflops = run.summary["prediction"].get("gflops_per_sample")  # older runs predicted with --predict-topology
    if gflops is None:
        raise SimError(f"{run.path}/config.json lacks gflops_per_sample (trainers before issue 19 did not write it); "
                       f"run it again to retime it")
    try:
        return TrainRun(K=int(p["world_size"]), algorithm=c["algorithm"], H=int(c["H"]), Hb=int(c["Hb"]),
                        gpus_per_node=c.get("gpus_per_node"), switch_step=int(p.get("switch_step", 0)),
                        local_warmup=c.get("local_warmup", "constant"),
                        local_warmup_steps=int(p.get("local_warmup_steps", 0)), batch_size=int(c["batch_size"]),
                        epochs=float(c["epochs"]), total_steps=int(p["total_steps"]),
                        samples_total=int(p["samples_total"]), steps_per_epoch=float(p["steps_per_epoch"]),
                        eval_every=float(c["eval_every"]), checkpoint_every=float(c.get("checkpoint_every", 1.0)),
                        allreduce=c.get("allreduce", "auto"), compress=c.get("compress", "none"),
                        global_sync_delay=float(c.get("global_sync_delay", 0.0)),
                        block_sync_delay=float(c.get("block_sync_delay", 0.0)),
                        stragglers=tuple((int(a), float(b)) for a, b in c.get("stragglers") or ()),
                        model=c["model"], width=int(c.get("width", 8)), dataset=c["dataset"],
                        params=int(r["model_params"]), gflops_per_sample=float(gflops),
                        n_train=int(r["dataset"]["n_train"]), n_test=int(r["dataset"]["n_test"]),
                        bytes_per_param=8 if c.get("dtype") == "float64" else 4,
                        buckets=_buckets(c, int(r["model_params"])),
                        overlap_steps=int(c.get("overlap_steps", 1)) if c.get("overlap") else 0)
    except (KeyError, TypeError, ValueError) as e:
        raise SimError(f"{run.path}/config.json: missing or bad value ({type(e).__name__}: {e})") from None


def _buckets(c: dict[str, Any], params: int) -> tuple[tuple[float, float], ...]:
    """A run's gradient buckets (runs before them: none), taken as ready evenly over backward (the trainer's own
    prediction derives them from the model's per-layer FLOPs, which needs torch)."""
    if not c.get("bucket_size") or c["algorithm"] not in ("minibatch", "postlocal") or c.get("compress", "none") \
            != "none":
        return ()
    nbytes = params * (8 if c.get("dtype") == "float64" else 4)
    return uniform_buckets(nbytes, int(c["bucket_size"]), int(c.get("first_bucket_size", 64 * 1024)))


def reached(metric: str, value: Any, target: float) -> bool:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return value >= target if METRICS[metric] else value <= target


def first_reach(curve: list[dict[str, Any]], metric: str, target: float) -> int | None:
    """Index of the first point of `curve` whose `metric` reaches `target` (None: never)."""
    for i, pt in enumerate(curve):
        if reached(metric, pt.get(metric), target):
            return i
    return None


def _target(run: RunFolder, target_acc: float | None, target_loss: float | None) -> tuple[str, float]:
    if target_acc is not None and target_loss is not None:
        raise SimError(f"give one of target_acc and target_loss, got {target_acc} and {target_loss}")
    if target_acc is not None:
        if not (math.isfinite(target_acc) and 0 <= target_acc <= 1):
            raise SimError(f"target_acc must be a fraction in 0..1, got {target_acc!r}")
        return "test_acc", target_acc
    if target_loss is not None:
        if not (math.isfinite(target_loss) and target_loss > 0):
            raise SimError(f"target_loss must be a finite number > 0, got {target_loss!r}")
        return "objective_gap", target_loss
    c = run.config
    if c.get("target_loss") is not None:
        return "objective_gap", float(c["target_loss"])
    if c.get("target_acc") is not None:
        return "test_acc", float(c["target_acc"])
    raise SimError(f"{run.path} has no target of its own; give target_acc or target_loss")


def retime(run: RunFolder, source: tuple[str, Any, str], *, target_acc: float | None = None,
           target_loss: float | None = None, load: float | None = None, nodes: int | None = None,
           network: str | None = None, engine: str = "fast") -> dict[str, Any]:
    """The run's learning curve, time to target and what it took, on the cluster `source` (sim.trainrun's
    (kind, content, spec) of load_source)."""
    metric, target = _target(run, target_acc, target_loss)
    tr = train_run_of(run)
    pred, res = predict_run(tr, source, engine=engine, load=load, nodes=nodes, network=network)
    timeline = res.timeline
    assert timeline is not None
    evals = tr.eval_steps()
    eval_each = pred["eval_s"] / max(1, pred["evals"])
    ckpt_each = pred["checkpoint_s"] / max(1, pred["checkpoints"])
    ckpts = np.asarray(tr.checkpoint_steps())
    curve_in = [r for r in run.curve if 0 <= int(r["step"]) < tr.total_steps]
    steps = np.asarray([int(r["step"]) for r in curve_in], dtype=np.int64)
    times = timeline.time_after(steps) if len(steps) else np.zeros(0)
    n_eval = np.searchsorted(np.asarray(evals), steps, side="right")    # this evaluation included
    n_ckpt = np.searchsorted(ckpts, steps, side="left")                  # written before it (after it at its step)
    times = times + n_eval * eval_each + n_ckpt * ckpt_each
    curve: list[dict[str, Any]] = []
    for r, t in zip(curve_in, times):
        pt = {"step": int(r["step"]), "epoch": float(r["epoch"]), "time_s": float(t),
              "measured_wall_s": r.get("wall_s")}
        for key in ("test_acc", "test_loss", "train_loss", "objective", "objective_gap"):
            if r.get(key) is not None:
                pt[key] = r[key]
        curve.append(pt)
    i = first_reach(curve, metric, target)
    tgt: dict[str, Any] = {"metric": metric, "value": target, "reached": i is not None}
    if i is not None:
        hit = curve[i]
        t_int = hit["time_s"]
        if i > 0 and isinstance(curve[i - 1].get(metric), (int, float)):
            v0, v1 = float(curve[i - 1][metric]), float(hit[metric])
            frac = 1.0 if v1 == v0 else min(1.0, max(0.0, (target - v0) / (v1 - v0)))
            t_int = curve[i - 1]["time_s"] + frac * (hit["time_s"] - curve[i - 1]["time_s"])
        syncs = timeline.syncs_through(hit["step"])
        tgt.update(step=hit["step"], steps=hit["step"] + 1, epoch=hit["epoch"], time_s=hit["time_s"],
                   interpolated_time_s=t_int, syncs_global=syncs["global"], syncs_block=syncs["block"],
                   bytes_sent=(syncs["global"] + syncs["block"]) * int(pred["wire_bytes"]),
                   measured_wall_s=hit.get("measured_wall_s"))
    s = run.summary or {}
    last = curve[-1] if curve else {}
    c = run.config
    return {
        "schema": SCHEMA, "run_dir": run.path, "source_spec": source[2], "topology": pred["topology"],
        "workers": tr.K, "algorithm": tr.algorithm, "H": tr.H if tr.algorithm != "minibatch" else 1, "Hb": tr.Hb,
        "batch_size": tr.batch_size, "momentum_variant": c.get("momentum_variant", "local"),
        "seed": c.get("seed"), "epochs": tr.epochs, "engine": s.get("engine", "mpi"), "status": s.get("status"),
        "steps_done": s.get("steps_done"), "total_steps": tr.total_steps,
        "complete": bool(s) and s.get("steps_done") == tr.total_steps,
        "measured_wall_s": s.get("wall_s"), "predicted_wall_s": pred["wall_s"],
        "reached_time_s": last.get("time_s", 0.0), "target": tgt,
        "final": {k: last.get(k) for k in ("epoch", "test_acc", "test_loss", "objective_gap")},
        "curve": curve, "prediction": pred,
    }


def speedup(run: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """The paper's speedup: the one-worker reference's time to the target over this run's, same clock; None when
    either did not reach it (with the reason)."""
    if reference["workers"] != 1:
        raise SimError(f"the speedup reference must be a one-worker run, got {reference['workers']} workers "
                       f"({reference['run_dir']})")
    a, b = run["target"], reference["target"]
    if (a["metric"], a["value"]) != (b["metric"], b["value"]):
        raise SimError(f"run and reference must share one target, got {a['metric']} {a['value']} and "
                       f"{b['metric']} {b['value']}")
    if not b["reached"]:
        return {"value": None, "reason": f"the one-worker reference {reference['run_dir']} does not reach the target"}
    if not a["reached"]:
        return {"value": None, "reason": "this run does not reach the target"}
    return {"value": b["time_s"] / a["time_s"], "reference_time_s": b["time_s"], "reference": reference["run_dir"]}
