"""The trainer's records: step and epoch lines of metrics.jsonl, the objective line, and summary.json."""
from __future__ import annotations

import resource
import signal
import time
from typing import TYPE_CHECKING, Any

import torch

import comm
from train.convex import objective_value
from train.metrics import write_json_atomic
from train.sync import LEVELS
from train.targets import crossing, reached

if TYPE_CHECKING:
    from pathlib import Path

    from train.averager import LocalSGD
    from train.config import TrainConfig
    from train.evaluate import Evaluator
    from train.memory import MemoryEstimate
    from train.plan import RunPlan
    from train.sync import SyncTimer
    from train.workers import Workers

__all__ = ["RecordsMixin"]


class RecordsMixin:
    """Trainer methods that build records from its counters; every attribute they use is set in Trainer.__init__."""

    # declared for type checkers; Trainer.__init__ sets every one of them
    cfg: TrainConfig
    plan: RunPlan
    sync: SyncTimer
    averager: LocalSGD
    evaluator: Evaluator
    workers: Workers
    model: torch.nn.Module
    data: Any
    world: Any
    rank: int
    K: int
    step: int
    run_dir: Path
    compute_s: float
    eval_s: float
    straggle_s: float
    checkpoint_s: float
    checkpoints: int
    wall_offset: float
    window: list[float]
    best: dict[str, Any]
    last_epoch: dict[str, Any] | None
    startup_s: float | None
    prediction: dict[str, Any] | None
    memory: MemoryEstimate | None
    usage: list[tuple[int, float]] | None
    signal: int
    no_decay: set[str]
    fstar: tuple[float, str] | None
    _t0: float | None

    def _wall(self) -> float:
        return self.wall_offset + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)

    def _totals(self) -> dict[str, Any]:
        out: dict[str, Any] = {"compute_s": self.compute_s, "straggle_s": self.straggle_s, "eval_s": self.eval_s,
                               "checkpoint_s": self.checkpoint_s, "checkpoints": self.checkpoints}
        for lvl in LEVELS:
            for k, v in self.sync.stats[lvl].items():
                out[f"{k}_{lvl}"] = v
        return out

    def _step_record(self, t: int, lr: float, h: int, level: str | None, loss: float,
                     acc: float) -> dict[str, Any]:
        rec = {"kind": "step", "step": t, "epoch": self.plan.epoch_after(t), "wall_s": self._wall(), "lr": lr,
               "H": h, "sync": level, "phase": "minibatch" if self.plan.grad_phase(t) else "local",
               "train_loss": loss, "train_acc": acc}
        rec.update(self._totals())
        return rec

    def _epoch_record(self, t: int, lr: float, h: int) -> dict[str, Any] | None:
        """Collective: evaluate, reduce the training window, gather per-rank timings; the record on rank 0."""
        t0 = time.perf_counter()
        test_loss, test_acc, objective = self.workers.evaluate()
        win = torch.tensor(self.window, dtype=torch.float64).numpy()
        comm.allreduce(win, op="sum", comm=self.world, algorithm=self.cfg.allreduce)
        self.window = [0.0, 0, 0]
        self.eval_s += time.perf_counter() - t0
        per_rank = self.world.gather(self._totals(), root=0)
        if self.rank != 0:
            return None
        rec: dict[str, Any] = {"kind": "epoch", "step": t, "epoch": self.plan.epoch_after(t), "wall_s": self._wall(),
                               "train_s": self._wall() - self.eval_s, "lr": lr, "H": h,
                               "train_loss": win[0] / max(win[2], 1), "train_acc": win[1] / max(win[2], 1),
                               "test_loss": test_loss, "test_acc": test_acc}
        if objective is not None:
            rec["objective"] = objective
            if self.fstar is not None:
                rec["objective_gap"] = objective - self.fstar[0]
        for key in per_rank[0]:
            vals = [r[key] for r in per_rank]
            rec[key] = sum(vals) / len(vals) if isinstance(vals[0], float) else vals[0]
            rec[f"{key}_max"] = max(vals)
        rec["per_rank"] = {k: [r[k] for r in per_rank] for k in ("compute_s", "wait_s_global", "wait_s_block",
                                                                    "comm_s_global", "comm_s_block", "straggle_s")}
        if self.best["test_acc"] is None or test_acc > self.best["test_acc"]:
            self.best["test_acc"] = test_acc
        prev = self.best.get("prev")  # the evaluation before this one (older checkpoints: none kept)
        for key, metric, target in (("target", "test_acc", self.cfg.target_acc),
                                    ("target_loss", "objective_gap", self.cfg.target_loss)):
            if target is not None and self.best.get(key) is None and reached(metric, rec.get(metric), target):
                self.best[key] = crossing(metric, target, prev, rec, self.plan.steps_per_epoch)
        self.best["prev"] = {k: rec.get(k) for k in ("step", "test_acc", "objective_gap")}
        self.last_epoch = rec
        return rec

    def _summary(self, status: str, per_rank: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Rank 0's summary.json. `per_rank`: every rank's totals gathered after the last step (and the final
        checkpoint); without it (a second signal) the mean and max are those of the last epoch record."""
        last = self.last_epoch or {}
        totals = self._totals()
        if per_rank is not None:
            mean = {k: sum(r[k] for r in per_rank) / len(per_rank) if isinstance(totals[k], float) else totals[k]
                    for k in totals}
            high = {k: max(r[k] for r in per_rank) for k in totals}
        else:
            mean, high = {k: last.get(k) for k in totals}, {k: last.get(f"{k}_max") for k in totals}
        summary: dict[str, Any] = {
            "status": status, "run_dir": str(self.run_dir), "algorithm": self.cfg.algorithm,
            "model": self.cfg.model, "dataset": self.data.name, "world_size": self.K,
            "steps_done": self.step, "total_steps": self.plan.total_steps,
            "epochs_done": self.plan.epoch_after(self.step - 1) if self.step else 0.0,
            "wall_s": self._wall(), "startup_s": self.startup_s,
            "final": {k: last.get(k) for k in ("test_loss", "test_acc", "train_loss", "train_acc")},
            "best_test_acc": self.best["test_acc"], "target_acc": self.cfg.target_acc,
            "time_to_target": self.best["target"], "target_loss": self.cfg.target_loss,
            "fstar": None if self.fstar is None else {"value": self.fstar[0], "source": self.fstar[1]},
            "time_to_target_loss": self.best.get("target_loss"),
            "totals_rank0": totals,
            "totals_mean": mean, "totals_max": high,
            "expected_syncs": self.plan.schedule.counts(self.plan.total_steps),
            "syncs": {lvl: self.sync.stats[lvl]["syncs"] for lvl in LEVELS},
            "payload_bytes": self.averager.nbytes, "samples_per_s": None, "prediction": self.prediction,
            "compression": {"scheme": self.cfg.compress, "payload_bytes": self.averager.nbytes,
                            "uncompressed_bytes": self.averager.model_nbytes,
                            "bytes_sent": {lvl: self.sync.stats[lvl]["bytes"] for lvl in LEVELS},
                            "bytes_recv": {lvl: self.sync.stats[lvl]["bytes_recv"] for lvl in LEVELS}},
        }
        summary["engine"] = self.cfg.engine  # mpi: K ranks; virtual: K workers in one process (no comm timing)
        summary["processes"] = self.world.Get_size()
        usage = self.usage or [(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, 0.0)]
        rss = [u[0] for u in usage]
        summary["train_cpu_s"] = sum(u[1] for u in usage)  # CPU seconds of the loop in this invocation, all ranks
        summary["memory"] = {"peak_rss_bytes_sum": sum(rss), "peak_rss_bytes_max": max(rss),
                             "estimate_bytes": None if self.memory is None else self.memory.total,
                             "estimate_parts": None if self.memory is None else dict(self.memory.parts),
                             "estimate_processes": None if self.memory is None else self.memory.processes}
        if self.signal:
            summary["signal"] = signal.Signals(self.signal).name
        if summary["wall_s"] > 0:
            summary["samples_per_s"] = self.step * self.cfg.batch_size * self.K / summary["wall_s"]
        write_json_atomic(self.run_dir / "summary.json", summary)
        return summary

    def _objective_record(self, t: int) -> dict[str, Any]:
        """f(w) of the synchronised model over the whole training set (rank 0; all ranks hold the same w)."""
        f = objective_value(self.workers.synced_model(), self.data.x_train, self.data.y_train,
                            weight_decay=self.cfg.weight_decay, skip=self.no_decay)
        return {"kind": "objective", "step": t, "sync": self.sync.stats["global"]["syncs"], "f": f}
