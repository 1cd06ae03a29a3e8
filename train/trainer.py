"""The training loop of every algorithm: local steps, syncs through comm, evaluation, metrics and checkpoints."""
from __future__ import annotations

import logging
import os
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import comm
from mpi4py import MPI
from train.checkpoint import load_checkpoint, save_checkpoint
from train.config import TrainConfig
from train.convex import SamplerStream, cast_dataset, convex_lr, objective_value
from train.data import WorkerStream, load_dataset
from train.errors import AgreedError, AgreedOutputError, TrainError
from train.evaluate import Evaluator, batch_metrics
from train.metrics import JsonlWriter, OutputError, write_json_atomic
from train.outputs import open_outputs, rewind_records
from train.models import build_model, no_decay_names
from train.launch import process_age
from train.lmstate import CarriedState, ContiguousStream
from train.plan import RunPlan
from train.signals import EARLY, interrupt_on_signal
from train.stop import StopAgreement
from train.sync import LEVELS, Synchronizer, device_sync

__all__ = ["Trainer", "pick_device"]

log = logging.getLogger(__name__)


def pick_device(choice: str, local_rank: int) -> torch.device:
    """cuda:(local_rank % device_count) when CUDA is present (or forced), else the CPU."""
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise TrainError("device 'cuda' was asked for but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(f"cuda:{local_rank % torch.cuda.device_count()}")


class Trainer:
    """One rank's share of a run. Construct on every rank (collective), then call run()."""

    def __init__(self, cfg: TrainConfig, *, resume_dir: str | None = None, world: Any = None,
                 progress: bool = False, prediction: dict[str, Any] | None = None, from_scratch: bool = False) -> None:
        self.world = world if world is not None else MPI.COMM_WORLD
        self.rank, self.K = self.world.Get_rank(), self.world.Get_size()
        cfg.check_world(self.K)
        self.cfg = cfg
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
        # Data first: a missing file or a shard too small for the batch stops every rank alike, before training's
        # collectives (one agreement step: every rank learns of a problem found on any rank).
        problem = None
        try:
            self._load_data(cfg)
        except TrainError as e:
            problem = str(e)
        agreed = self.world.allgather((problem, EARLY.seen))  # a Ctrl-C during start-up is agreed on here too
        interrupt_on_signal(max(sig for _, sig in agreed))
        problems = [p for p, _ in agreed if p]
        if problems:
            raise AgreedError(problems[0])
        node = comm.Topology.from_comm(self.world)
        self.device = pick_device(cfg.device, node.node_rank)
        hier = cfg.algorithm == "hierarchical"
        self.topology = comm.Topology.from_comm(self.world, cfg.gpus_per_node) if hier else None
        self.run_dir = Path(resume_dir or self.world.bcast(self._default_dir() if self.rank == 0 else None, root=0))

        torch.manual_seed(cfg.seed)  # the same initial model on every rank (then broadcast to be sure)
        self.model = build_model(cfg.model, input_shape=self.data.input_shape, num_classes=self.data.num_classes,
                                 width=cfg.width, dropout=cfg.dropout).to(self.device, getattr(torch, cfg.dtype))
        torch.manual_seed(cfg.seed * 100_003 + self.rank + 1)  # per-rank stream for dropout
        self.gen = torch.Generator().manual_seed(cfg.seed * 100_003 + self.rank + 1)  # data augmentation
        self.no_decay = skip = no_decay_names(self.model)
        named = list(self.model.named_parameters())
        groups = [{"params": [p for n, p in named if n not in skip], "weight_decay": cfg.weight_decay},
                  {"params": [p for n, p in named if n in skip], "weight_decay": 0.0}]
        local_m = 0.0 if cfg.momentum_variant == "global" else cfg.momentum
        self.opt = torch.optim.SGD([g for g in groups if g["params"]], lr=self.plan.lr.lr_at(0), momentum=local_m,
                                   dampening=0.0, nesterov=cfg.nesterov and local_m > 0)
        self.sync = Synchronizer([p for _, p in named], world=self.world, topology=self.topology, hierarchical=hier,
                                 allreduce=cfg.allreduce, variant=cfg.momentum_variant,
                                 global_momentum=cfg.global_momentum,
                                 delays={"global": cfg.global_sync_delay, "block": cfg.block_sync_delay},
                                 compress=cfg.compress, sign_scale=cfg.sign_scale)
        self._broadcast_model()
        self.sync.reset_compress_anchor()
        if self.sync.anchor is not None:
            self.sync.reset_anchor()
        self.evaluator = Evaluator(self.model, self.sync.model_fb, world=self.world, bn_eval=cfg.bn_eval,
                                   x_test=self.data.x_test, y_test=self.data.y_test, device=self.device,
                                   contiguous=self.carry is not None)
        self.slow = dict(self.cfg.stragglers).get(self.rank, 1.0)
        self.progress = progress and self.rank == 0
        self.prediction = prediction  # the simulator's, made before the run (train/predict.py); summary.json keeps it
        self.signal = 0  # the signal the ranks agreed to stop on (0: none); not part of a checkpoint
        self.stopper: StopAgreement | None = None  # run() sets it: steps driven from outside never stop on signals
        # counters (all saved in checkpoints)
        self.step = 0
        self.compute_s = self.eval_s = self.straggle_s = 0.0
        self.wall_offset = 0.0
        self.window = [0.0, 0, 0]  # loss sum, correct, count since the last epoch record
        self.best: dict[str, Any] = {"test_acc": None, "target": None}
        self.resumed = bool(resume_dir)
        if resume_dir and not from_scratch:  # train/resume.py checked the folder before MPI started
            self._restore()
        elif resume_dir and self.rank == 0:  # a run without any checkpoint starts again: its records go
            self._rewind(-1)

    # -- set-up helpers ------------------------------------------------------------------------------
    def _load_data(self, cfg: TrainConfig) -> None:
        """The dataset, this rank's stream of batches (or the LSTM's contiguous columns) and the run plan."""
        self.data = cast_dataset(load_dataset(cfg), getattr(torch, cfg.dtype))
        self.carry = CarriedState() if cfg.carries_state else None  # the LSTM's truncated BPTT (train/lmstate.py)
        if self.carry is not None:
            self.stream: WorkerStream | SamplerStream | ContiguousStream = ContiguousStream(
                self.data, rank=self.rank, size=self.K, batch=cfg.batch_size)
        elif cfg.sampler == "stream":
            self.stream = WorkerStream(self.data, rank=self.rank, size=self.K, batch=cfg.batch_size, seed=cfg.seed)
        else:  # the convex simulator's sampler: the same samples as its worker `rank`
            self.stream = SamplerStream(self.data, rank=self.rank, size=self.K, batch=cfg.batch_size, seed=cfg.seed,
                                        mode=cfg.sampler)
        self.plan = RunPlan.build(cfg, workers=self.K, n_train=len(self.data.x_train))

    def _default_dir(self) -> str:
        if self.cfg.out_dir:
            return self.cfg.out_dir
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        base = os.path.join("runs", f"train-{stamp}-{self.cfg.algorithm}-K{self.K}")
        path, n = base, 1
        while os.path.exists(path):  # two runs started in the same second
            n += 1
            path = f"{base}-{n}"
        return path

    def _broadcast_model(self) -> None:
        buf = self.sync.model_fb.pack()
        host = buf.detach().cpu().numpy().copy()
        self.world.Bcast(host, root=0)
        buf.copy_(torch.from_numpy(host))
        self.sync.model_fb.unpack()

    def _state(self) -> dict[str, Any]:
        return {"step": self.step, "model": self.model.state_dict(), "opt": self.opt.state_dict(),
                "sync": self.sync.state_dict(), "torch_rng": torch.get_rng_state(), "gen": self.gen.get_state(),
                "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
                "compute_s": self.compute_s, "eval_s": self.eval_s, "straggle_s": self.straggle_s,
                "wall_s": self._wall(), "window": list(self.window), "best": dict(self.best),
                "lm_state": self.carry.state_dict() if self.carry is not None else None}

    def _restore(self) -> None:
        st, used, skipped = load_checkpoint(self.run_dir, self.world)
        if skipped and self.rank == 0:
            print(f"warning: {skipped[0]}; resuming from the previous checkpoint instead: checkpoints/{used['dir']} "
                  f"(after step {used['step'] + 1})", file=sys.stderr, flush=True)
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["opt"])
        self.sync.load_state_dict(st["sync"])
        torch.set_rng_state(st["torch_rng"])
        self.gen.set_state(st["gen"])
        if st["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(st["cuda_rng"], self.device)
        self.step = st["step"] + 1
        self.compute_s, self.eval_s, self.straggle_s = st["compute_s"], st["eval_s"], st["straggle_s"]
        self.wall_offset = st["wall_s"]
        self.window = list(st["window"])
        self.best = dict(st["best"])
        if self.carry is not None:
            self.carry.load_state_dict(st.get("lm_state") or {"hidden": None}, self.device)
        if self.rank == 0:  # records after the checkpoint go (they are redone); the last epoch feeds final.*
            self._rewind(st["step"])
        log.info("rank %d resumed at step %d from %s", self.rank, self.step, self.run_dir)

    def _rewind(self, step: int) -> None:
        """Rank 0: drop the records after `step`; a failure is agreed on at the start of run(), exit 2 or 74."""
        try:
            self.last_epoch = rewind_records(self.run_dir, step)
        except (OutputError, ValueError) as e:
            self._startup_problem = (str(e), isinstance(e, OutputError))

    def _wall(self) -> float:
        return self.wall_offset + (time.perf_counter() - self._t0 if hasattr(self, "_t0") else 0.0)

    # -- records -------------------------------------------------------------------------------------
    def _totals(self) -> dict[str, Any]:
        out: dict[str, Any] = {"compute_s": self.compute_s, "straggle_s": self.straggle_s, "eval_s": self.eval_s}
        for lvl in LEVELS:
            for k, v in self.sync.stats[lvl].items():
                out[f"{k}_{lvl}"] = v
        return out

    def _step_record(self, t: int, lr: float, h: int, level: str | None, loss: float, acc: float) -> dict[str, Any]:
        rec = {"kind": "step", "step": t, "epoch": self.plan.epoch_after(t), "wall_s": self._wall(), "lr": lr,
               "H": h, "sync": level, "phase": "minibatch" if self.plan.grad_phase(t) else "local",
               "train_loss": loss, "train_acc": acc}
        rec.update(self._totals())
        return rec

    def _epoch_record(self, t: int, lr: float, h: int) -> dict[str, Any] | None:
        """Collective: evaluate, reduce the training window, gather per-rank timings; the record on rank 0."""
        t0 = time.perf_counter()
        test_loss, test_acc = self.evaluator.evaluate()
        win = torch.tensor(self.window, dtype=torch.float64).numpy()
        comm.allreduce(win, op="sum", comm=self.world)
        self.window = [0.0, 0, 0]
        self.eval_s += time.perf_counter() - t0
        per_rank = self.world.gather(self._totals(), root=0)
        if self.rank != 0:
            return None
        rec: dict[str, Any] = {"kind": "epoch", "step": t, "epoch": self.plan.epoch_after(t), "wall_s": self._wall(),
                               "train_s": self._wall() - self.eval_s, "lr": lr, "H": h,
                               "train_loss": win[0] / max(win[2], 1), "train_acc": win[1] / max(win[2], 1),
                               "test_loss": test_loss, "test_acc": test_acc}
        for key in per_rank[0]:
            vals = [r[key] for r in per_rank]
            rec[key] = sum(vals) / len(vals) if isinstance(vals[0], float) else vals[0]
            rec[f"{key}_max"] = max(vals)
        rec["per_rank"] = {k: [r[k] for r in per_rank] for k in ("compute_s", "wait_s_global", "wait_s_block",
                                                                    "comm_s_global", "comm_s_block", "straggle_s")}
        if self.best["test_acc"] is None or test_acc > self.best["test_acc"]:
            self.best["test_acc"] = test_acc
        target = self.cfg.target_acc
        if target is not None and self.best["target"] is None and test_acc >= target:
            self.best["target"] = {"wall_s": rec["wall_s"], "train_s": rec["train_s"], "step": t,
                                   "epoch": rec["epoch"]}
        self.last_epoch = rec
        return rec

    # -- the loop --------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any] | None:
        """Train to the end (or to stop_at_epoch); returns the summary on rank 0, None elsewhere."""
        cfg, plan, T = self.cfg, self.plan, self.plan.total_steps
        writer, problem = None, getattr(self, "_startup_problem", None)
        if self.rank == 0 and problem is None:
            resolved = {"config": cfg.to_dict(), "plan": plan.to_dict(), "device": str(self.device),
                        "topology": self.topology.describe() if self.topology else None,
                        "model_params": sum(p.numel() for p in self.model.parameters()),
                        "payload_bytes": self.sync.nbytes, "run_dir": str(self.run_dir),
                        "dataset": {"name": self.data.name, "n_train": len(self.data.x_train),
                                    "n_test": len(self.data.x_test), "input_shape": list(self.data.input_shape),
                                    "num_classes": self.data.num_classes}}
            try:
                writer, self.objective_writer = open_outputs(self.run_dir, resolved, resumed=self.resumed,
                                                             objective=cfg.log_objective)
            except OutputError as e:
                problem = (str(e), True)
        agreed = self.world.allgather((problem, EARLY.seen))  # the last start-up agreement: outputs and Ctrl-C
        interrupt_on_signal(max(sig for _, sig in agreed))
        for p, _ in agreed:
            if p:
                raise AgreedOutputError(p[0]) if p[1] else AgreedError(p[0])
        bar = None
        if self.progress:
            from tqdm import tqdm
            bar = tqdm(total=T, initial=self.step, unit="step", dynamic_ncols=True, leave=False, mininterval=0.5)
        self.stopper = StopAgreement(self.world, announce=self.rank == 0)
        self.world.Barrier()
        self.stopper.install()
        self.startup_s = process_age()
        self._t0 = self._ckpt_t = time.perf_counter()
        status, self.last_epoch = "completed", getattr(self, "last_epoch", None)
        self.model.train()
        failed = True
        try:
            while self.step < T:
                t = self.step
                stop = self._one_step(t, writer)
                if bar is not None:
                    bar.update(1)
                self.step = t + 1
                if stop is not None:
                    status = stop
                    break
            failed = False
        except KeyboardInterrupt:  # a second signal: best effort, the job is about to abort
            if self.rank == 0:  # everything on disk is already consistent (atomic files, flushed lines)
                try:
                    self._summary("interrupted")
                except OutputError:
                    pass
            raise
        finally:
            self.stopper.close(complete=not failed)
            self.stopper = None
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
            if getattr(self, "objective_writer", None) is not None:
                self.objective_writer.close()
        summary, problem = None, None
        if self.rank == 0:
            try:
                summary = self._summary(status)
            except OutputError as e:
                problem = str(e)
        problem = self.world.bcast(problem, root=0)
        if problem:
            raise AgreedOutputError(f"{problem}; the checkpoints and metrics.jsonl of {self.run_dir} are complete, "
                                    f"only summary.json is missing")
        return summary

    @property
    def exit_code(self) -> int:
        """0, or 128 + the signal the run was stopped by (130 for Ctrl-C), as a shell reports it."""
        return 128 + self.signal if self.signal else 0

    def _one_step(self, t: int, writer: JsonlWriter | None) -> str | None:
        """One local step and whatever the schedule puts after it; 'paused' or 'interrupted' ends the run."""
        cfg, plan, T = self.cfg, self.plan, self.plan.total_steps
        lr, h = self._lr_at(t), plan.schedule.h_at(t)
        for g in self.opt.param_groups:
            g["lr"] = lr
        grad_phase = plan.grad_phase(t)
        if self.sync.anchor is not None and t == plan.switch_step and t > 0 and not grad_phase:
            self.sync.reset_anchor()  # post-local: global momentum starts from the model at the switch
        t0 = time.perf_counter()
        x, y = self.stream.batch_at(t, self.gen)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        self.opt.zero_grad(set_to_none=False)
        logits = self.model(x) if self.carry is None else self.carry.logits(self.model, x, self.stream.restarts(t))
        loss, correct, n = batch_metrics(logits, y)
        loss.backward()
        device_sync(self.device)
        dt = time.perf_counter() - t0
        if self.slow > 1.0:  # straggler emulation: this rank computes `slow` times slower
            time.sleep((self.slow - 1.0) * dt)
            self.straggle_s += (self.slow - 1.0) * dt
        level = plan.schedule.sync_after(t, T)
        compressed = cfg.compress != "none"  # compressed: the model change after the local step is synced instead
        if grad_phase:
            if level != "global":
                raise TrainError(f"internal: mini-batch step {t} has sync level {level!r}")
            if not compressed:
                self.sync.sync_grads()
        t1 = time.perf_counter()
        if cfg.clip_grad_norm is not None:  # after the gradient sync: mini-batch steps clip the global gradient
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad_norm)
        self.opt.step()
        device_sync(self.device)
        self.compute_s += dt + time.perf_counter() - t1
        if level is not None and (compressed or not grad_phase):
            self.sync.sync_models(level, lr)
            if cfg.log_objective and level == "global" and writer is not None:
                self.objective_writer.write(self._objective_record(t))
        loss_v = float(loss.detach())
        self.window[0] += loss_v * n
        self.window[1] += correct
        self.window[2] += n
        if writer is not None and (t % cfg.log_every == 0 or t == T - 1):
            writer.write(self._step_record(t, lr, h, level, loss_v, correct / n))
        last = t == T - 1
        if plan.crosses(t, cfg.eval_every) or last:
            rec = self._epoch_record(t, lr, h)
            if writer is not None and rec is not None:
                writer.write(rec)
        s = cfg.stop_at_epoch
        stop = "paused" if (s is not None and not last
                            and t / plan.steps_per_epoch + 1e-9 < s <= plan.epoch_after(t) + 1e-9) else None
        # the stop check: the same answer on every rank, at the same step
        due = False  # time-based checkpoints: rank 0's clock, agreed on at the same check as the signals
        if level == "global" and not last and self.stopper is not None:
            if self.rank == 0 and cfg.checkpoint_minutes > 0:
                self.stopper.request = time.perf_counter() - self._ckpt_t >= 60 * cfg.checkpoint_minutes
            if self.stopper.poll(t):
                stop, self.signal = "interrupted", self.stopper.agreed
            due = self.stopper.checkpoint_due
        if last or stop or due or (cfg.checkpoint_every > 0 and plan.crosses(t, cfg.checkpoint_every)):
            self.step = t  # the checkpoint records the last finished step
            failed = [w.failed for w in (writer, getattr(self, "objective_writer", None)) if w is not None and w.failed]
            save_checkpoint(self.run_dir, t, self._state(), self.world, pending=failed[0] if failed else None)
            self._ckpt_t = time.perf_counter()
        return stop

    def _lr_at(self, t: int) -> float:
        """gamma_t: the protocol's schedule (SPEC section 3), or the convex experiment's with c = cfg.lr."""
        cfg = self.cfg
        if cfg.lr_schedule == "protocol":
            return self.plan.lr.lr_at(t)
        return convex_lr(cfg.lr_schedule, cfg.lr, t, len(self.data.x_train), cfg.lr_cap)

    def _objective_record(self, t: int) -> dict[str, Any]:
        """f(w) of the synchronised model over the whole training set (rank 0; all ranks hold the same w)."""
        f = objective_value(self.model, self.data.x_train, self.data.y_train, weight_decay=self.cfg.weight_decay,
                            skip=self.no_decay)
        return {"kind": "objective", "step": t, "sync": self.sync.stats["global"]["syncs"], "f": f}

    def _summary(self, status: str) -> dict[str, Any]:
        last = self.last_epoch or {}
        totals = self._totals()
        summary: dict[str, Any] = {
            "status": status, "run_dir": str(self.run_dir), "algorithm": self.cfg.algorithm,
            "model": self.cfg.model, "dataset": self.data.name, "world_size": self.K,
            "steps_done": self.step, "total_steps": self.plan.total_steps,
            "epochs_done": self.plan.epoch_after(self.step - 1) if self.step else 0.0,
            "wall_s": self._wall(), "startup_s": getattr(self, "startup_s", None), "final": {k: last.get(k) for k in ("test_loss", "test_acc", "train_loss",
                                                                        "train_acc")},
            "best_test_acc": self.best["test_acc"], "target_acc": self.cfg.target_acc,
            "time_to_target": self.best["target"],
            "totals_rank0": totals,
            "totals_mean": {k: last.get(k) for k in totals}, "totals_max": {k: last.get(f"{k}_max") for k in totals},
            "expected_syncs": self.plan.schedule.counts(self.plan.total_steps),
            "syncs": {lvl: self.sync.stats[lvl]["syncs"] for lvl in LEVELS},
            "payload_bytes": self.sync.nbytes, "samples_per_s": None, "prediction": self.prediction,
            "compression": {"scheme": self.cfg.compress, "payload_bytes": self.sync.nbytes,
                            "uncompressed_bytes": int(self.sync.model_fb.nbytes),
                            "bytes_sent": {lvl: self.sync.stats[lvl]["bytes"] for lvl in LEVELS},
                            "bytes_recv": {lvl: self.sync.stats[lvl]["bytes_recv"] for lvl in LEVELS}},
        }
        if self.signal:
            summary["signal"] = signal.Signals(self.signal).name
        if summary["wall_s"] > 0:
            summary["samples_per_s"] = self.step * self.cfg.batch_size * self.K / summary["wall_s"]
        write_json_atomic(self.run_dir / "summary.json", summary)
        return summary
