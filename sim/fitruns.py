"""Fit per-step and per-sync costs from measured runs (a table of configurations and wall times, or summary.json)."""
# Model (exact for the simulator without stragglers or jitter): every worker computes the same `step_s` per
# step, so the clocks stay aligned and a run of T steps with n_g global and n_b block syncs takes
#     wall = T * step_s + n_g * (D_g + f_g + g_g D_g) + n_b * (D_b + f_b + g_b D_b)
# where D_g, D_b are the collectives the base topology's links give (simulated at message level: the wire time of
# the payload's bytes on the links, with their latencies) and f + g D the per-sync cost the links do not explain
# (software, staging, waiting for the slowest): a fixed part f and a part g D that grows with the collective. step_s,
# f and g are fitted by non-negative least squares on relative residuals; the block terms only when some run has
# block syncs. f and g are told apart only by runs whose collectives differ (other payloads or K); where all are
# alike, --sync-split says which carries the cost: "scaled" (f = 0: the software ran the links' collective 1 + g
# times slower, its latency and its wire time alike, so a model with more bytes pays more) or "fixed" (g = 0: the
# same cost per sync whatever the bytes). Two runs with different syncs per step determine step_s and one of them.
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import nnls

from sim.compute import ComputeModel, ModelSpec, get_model
from sim.engine import simulate_collective
from sim.errors import SimError
from sim.run import resolve_allreduce
from sim.schedule import ALGORITHMS, SyncSchedule, total_steps
from sim.topology import Topology

__all__ = ["MeasuredRun", "RunsFit", "read_runs", "fit_runs", "fitted_topology"]

TABLE_COLUMNS = ("model", "K", "B", "algorithm", "H")


@dataclass(kw_only=True, frozen=True)
class MeasuredRun:
    """One measured run: what the fit needs (steps, syncs, bytes per sync) and its wall time (no evaluation)."""

    name: str
    model: str
    K: int
    B: int
    steps: int
    syncs_global: int
    syncs_block: int
    payload_bytes: int
    wall_s: float
    source: str = ""


def _int(where: str, key: str, v: Any, minimum: int = 1) -> int:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise SimError(f"{where}: {key} must be an integer >= {minimum}, got {v!r}") from None
    if not math.isfinite(f) or f != int(f) or f < minimum:
        raise SimError(f"{where}: {key} must be an integer >= {minimum}, got {v!r}")
    return int(f)


def _pos(where: str, key: str, v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise SimError(f"{where}: {key} must be a number > 0, got {v!r}") from None
    if not (math.isfinite(f) and f > 0):
        raise SimError(f"{where}: {key} must be a number > 0, got {v!r}")
    return f


def _from_row(row: dict[str, Any], where: str) -> MeasuredRun:
    """A table row: model, K, B, algorithm, H, [Hb], epochs or N, wall_s or wall_min, [name], [source]."""
    missing = [k for k in TABLE_COLUMNS if row.get(k) in (None, "")]
    if missing:
        raise SimError(f"{where}: missing column {missing[0]!r} (need {', '.join(TABLE_COLUMNS)}, epochs or N, "
                       f"wall_s or wall_min)")
    model = get_model(str(row["model"]))
    K, B, H = _int(where, "K", row["K"]), _int(where, "B", row["B"]), _int(where, "H", row["H"])
    Hb = _int(where, "Hb", row.get("Hb") or 1)
    alg = str(row["algorithm"])
    if alg not in ALGORITHMS:
        raise SimError(f"{where}: algorithm must be one of {', '.join(ALGORITHMS)}, got {alg!r}")
    if row.get("N") not in (None, ""):
        N = _int(where, "N", row["N"])
    elif row.get("epochs") not in (None, ""):
        N = max(1, round(_pos(where, "epochs", row["epochs"]) * model.train_samples))
    else:
        raise SimError(f"{where}: needs epochs or N")
    if row.get("wall_s") not in (None, ""):
        wall = _pos(where, "wall_s", row["wall_s"])
    elif row.get("wall_min") not in (None, ""):
        wall = 60.0 * _pos(where, "wall_min", row["wall_min"])
    else:
        raise SimError(f"{where}: needs wall_s or wall_min")
    T = total_steps(N, K, B)
    kw: dict[str, Any] = {"switch_step": math.ceil(0.5 * T)} if alg == "postlocal" else {}
    counts = SyncSchedule(algorithm=alg, H=H, Hb=Hb, **kw).counts(T)
    name = str(row.get("name") or f"{alg} H={H} Hb={Hb} K={K}")
    return MeasuredRun(name=name, model=model.name, K=K, B=B, steps=T, syncs_global=counts["global"],
                       syncs_block=counts["block"], payload_bytes=model.bytes, wall_s=wall,
                       source=str(row.get("source") or ""))


def _from_summary(obj: dict[str, Any], path: Path) -> MeasuredRun:
    """A train run's summary.json (and config.json beside it): training time = wall_s less evaluation."""
    where = f"summary {str(path)!r}"
    for key in ("world_size", "steps_done", "wall_s", "syncs", "payload_bytes", "model"):
        if key not in obj:
            raise SimError(f"{where}: missing key {key!r}")
    if obj.get("engine", "mpi") != "mpi":
        raise SimError(f"{where}: a run of engine {obj['engine']!r} (its K workers in one process) did not time K "
                       f"ranks and their syncs; fit on runs of engine mpi (mpirun -n K python -m train)")
    cfg_path = path.with_name("config.json")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SimError(f"{where}: cannot read {str(cfg_path)!r} beside it: {e}") from None
    eval_s = (obj.get("totals_mean") or {}).get("eval_s") or 0.0
    return MeasuredRun(name=str(obj.get("run_dir") or path.parent.name), model=str(obj["model"]),
                       K=_int(where, "world_size", obj["world_size"]),
                       B=_int(where, "batch_size", cfg.get("batch_size")),
                       steps=_int(where, "steps_done", obj["steps_done"]),
                       syncs_global=_int(where, "syncs.global", obj["syncs"].get("global"), 0),
                       syncs_block=_int(where, "syncs.block", obj["syncs"].get("block"), 0),
                       payload_bytes=_int(where, "payload_bytes", obj["payload_bytes"]),
                       wall_s=_pos(where, "wall_s less eval_s", float(obj["wall_s"]) - float(eval_s)),
                       source=f"measured run {str(path.parent)!r}")


def read_runs(paths: list[str | os.PathLike[str]]) -> list[MeasuredRun]:
    """Runs from summary.json files, run folders, JSON tables (a list of row objects) or CSV tables."""
    runs: list[MeasuredRun] = []
    for spec in paths:
        path = Path(spec)
        if path.is_dir():
            path = path / "summary.json"
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise SimError(f"cannot read runs file {str(path)!r}: {e}") from None
        if path.suffix == ".csv":
            rows = list(csv.DictReader(text.splitlines()))
            runs += [_from_row(r, f"{str(path)!r} row {i}") for i, r in enumerate(rows, 1)]
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise SimError(f"runs file {str(path)!r} is neither CSV (.csv) nor valid JSON: {e.msg}") from None
        if isinstance(obj, dict) and "steps_done" in obj:
            runs.append(_from_summary(obj, path))
        elif isinstance(obj, list) and all(isinstance(r, dict) for r in obj):
            runs += [_from_row(r, f"{str(path)!r} row {i}") for i, r in enumerate(obj, 1)]
        else:
            raise SimError(f"runs file {str(path)!r} must be a summary.json, a JSON list of rows or a .csv table")
    return runs


@dataclass(kw_only=True)
class RunsFit:
    """Fitted seconds per step and per sync beyond the links, with each run's fitted wall time."""

    step_s: float
    overhead_global_s: float
    overhead_block_s: float
    factor_global: float
    factor_block: float
    split: str
    model: str
    B: int
    rows: list[dict[str, Any]]
    notes: list[str]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SPLITS = ("scaled", "fixed")


def _spread(x: np.ndarray, on: np.ndarray) -> bool:
    """Whether x differs (by > 1 %) between the rows selected by `on`."""
    v = x[on]
    return v.size > 1 and float(v.max() - v.min()) > 0.01 * float(np.abs(v).max())


def fit_runs(runs: list[MeasuredRun], base: Topology, split: str = "scaled") -> RunsFit:
    """step_s, f_g, g_g (and f_b, g_b) of `wall = T step_s + n_g (D_g + f_g + g_g D_g) + n_b (D_b + f_b + g_b D_b)`
    over `runs`, on base's links; `split` ("scaled" or "fixed") decides between f and g where the runs cannot."""
    if split not in SPLITS:
        raise SimError(f"sync split must be one of {', '.join(SPLITS)}, got {split!r}")
    if len(runs) < 2:
        raise SimError(f"calibrate --runs needs at least 2 measured runs, got {len(runs)}")
    for r in runs[1:]:
        if (r.model, r.B) != (runs[0].model, runs[0].B):
            raise SimError(f"all runs must share model and batch (one step time is fitted): {runs[0].name!r} has "
                           f"{runs[0].model} B={runs[0].B}, {r.name!r} has {r.model} B={r.B}")
    b = base.gpus_per_node
    X, y, comm, durs = [], [], [], []
    for r in runs:
        try:
            nodes = base.check_workers(r.K)
        except SimError as e:
            raise SimError(f"run {r.name!r}: {e}") from None
        glob, blk = resolve_allreduce("auto", nodes, b, float(r.payload_bytes))
        d_g = simulate_collective(base, tuple(range(r.K)), glob, float(r.payload_bytes), "inter").duration_s
        d_b = simulate_collective(base, tuple(range(b)), blk, float(r.payload_bytes), "intra").duration_s
        c = r.syncs_global * d_g + r.syncs_block * d_b
        # columns: steps, fixed per global sync, per global collective second, the same for block syncs
        X.append([r.steps, r.syncs_global, r.syncs_global * d_g, r.syncs_block, r.syncs_block * d_b])
        y.append(r.wall_s - c)
        comm.append(c)
        durs.append((d_g, d_b))
    A, t = np.array(X, dtype=float), np.array(y)
    D = np.array(durs)
    walls = np.array([r.wall_s for r in runs])
    notes = []
    cols = [0]
    for lvl, (fc, gc) in (("global", (1, 2)), ("block", (3, 4))):
        on = A[:, fc] > 0
        if not on.any():
            notes.append(f"no run has {lvl} syncs: the per-{lvl}-sync cost is not fitted (0)")
            continue
        d = D[:, 0 if lvl == "global" else 1]
        if _spread(d, on):
            cols += [fc, gc]
        elif not d[on].any():  # links that cost nothing: only a fixed cost can carry the syncs
            cols.append(fc)
        else:
            cols.append(gc if split == "scaled" else fc)
            notes.append(f"every run has the same {lvl} collective: its fitted cost per sync is "
                         + ("that collective x a factor (--sync-split scaled: it grows with the bytes)"
                            if split == "scaled" else "a constant (--sync-split fixed: the same for any bytes)"))
    W = A[:, cols] / walls[:, None]
    if np.linalg.matrix_rank(W) < len(cols):
        raise SimError("the runs cannot separate the per-step from the per-sync cost: give runs with different "
                       "syncs per step (e.g. H = 1 and H = 16)")
    coef_s, _ = nnls(W, t / walls)
    coef = np.zeros(5)
    coef[cols] = coef_s
    if len(runs) == len(cols):
        notes.append(f"{len(runs)} runs for {len(cols)} unknowns: an exact fit, no residual to judge it by")
    pred = A @ coef + np.array(comm)
    rows = [{"name": r.name, "K": r.K, "steps": r.steps, "syncs_global": r.syncs_global, "syncs_block": r.syncs_block,
             "links_s": c, "collective_global_s": float(d[0]), "wall_s": r.wall_s, "fit_s": float(p),
             "rel_residual": float(p / r.wall_s - 1.0), "source": r.source}
            for r, c, d, p in zip(runs, comm, D, pred)]
    return RunsFit(step_s=float(coef[0]), overhead_global_s=float(coef[1]), overhead_block_s=float(coef[3]),
                   factor_global=float(coef[2]), factor_block=float(coef[4]), split=split,
                   model=runs[0].model, B=runs[0].B, rows=rows, notes=notes)


def fitted_topology(base: Topology, fit: RunsFit, *, name: str, table: str) -> Topology:
    """`base`'s links with the fitted step time (base's compute table rescaled) and per-sync overheads."""
    try:
        spec: ModelSpec | None = get_model(fit.model)
    except SimError:
        spec = None
    if base.compute.kind in ("table", "layers") and spec is not None:
        scale = fit.step_s / base.compute.seconds(spec, fit.B)
        compute = base.compute.scaled(scale, f"{base.compute.device} (fitted)")
        what = ("compute table" if base.compute.kind == "table"
                else "compute model (every time of its layer model and its measured steps)")
        how = (f"{base.name}'s {what} x{scale:.4g} so that {fit.model} at B={fit.B} takes the fitted "
               f"{fit.step_s:.6g} s per step (other batches and models keep the model's shape: assumed)")
    else:
        compute = ComputeModel(kind="fixed", device="fitted", seconds_per_iter=(fit.step_s,))
        how = f"a fixed {fit.step_s:.6g} s per step (valid for {fit.model} at B={fit.B} only)"
    runs = "; ".join(f"{r['name']}: {r['wall_s']:.6g} s" for r in fit.rows)
    d0 = fit.rows[0]["collective_global_s"] if fit.rows else 0.0
    total0 = fit.overhead_global_s + fit.factor_global * d0
    per_sync = (f"per global sync {fit.overhead_global_s:.6g} s + {fit.factor_global:.6g} x the sync's collective "
                f"on {base.name}'s links (for {fit.model}: {d0:.4g} s, so {total0:.6g} s), "
                f"per block sync {fit.overhead_block_s:.6g} s + {fit.factor_block:.6g} x its collective")
    split = (" A fixed part and a part that grows with the bytes could not both be fitted from these runs: "
             + ("--sync-split scaled charges the fitted cost as the links' collective x a factor, so a model with "
                "more bytes pays more (its wire time and latency on the preset's links, scaled alike)"
                if fit.split == "scaled" else "--sync-split fixed charges the same fitted cost per sync whatever "
                "the bytes") + ".") if any("every run has the same" in n for n in fit.notes) else ""
    desc = (f"FITTED to measured wall times by `python -m sim calibrate --runs {table} --base {base.name}"
            f"{' --sync-split fixed' if fit.split == 'fixed' else ''}`: {runs}. "
            f"Per step {fit.step_s:.6g} s ({how}); {per_sync}, beyond {base.name}'s link-spec collectives (software, "
            f"staging, waiting), which stay in the model.{split} Answers: how long do runs like the measured ones "
            f"take, all costs included, and which H is best there? The link-spec preset {base.name} answers what the "
            f"wire alone costs.")
    return dataclasses.replace(base, name=name, description=desc, compute=compute,
                               sync_overhead_s=(fit.overhead_global_s, fit.overhead_block_s),
                               sync_collective_factor=(fit.factor_global, fit.factor_block))
