"""The training loop of every algorithm: local steps, syncs through comm, evaluation, metrics and checkpoints."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from mpi4py import MPI

import comm
from train.averager import LocalSGD
from train.backend import MPIBackend
from train.checkpoint import load_checkpoint, save_checkpoint
from train.config import TrainConfig
from train.convex import SamplerStream, cast_dataset, convex_lr
from train.data import WorkerStream, load_dataset
from train.errors import AgreedError, AgreedOutputError, TrainError
from train.evaluate import Evaluator, batch_metrics
from train.launch import process_age
from train.lmstate import CarriedState, ContiguousStream
from train.metrics import JsonlWriter, OutputError
from train.models import build_model, no_decay_names
from train.outputs import discard_outputs, open_outputs, rewind_records
from train.plan import RunPlan
from train.records import RecordsMixin
from train.signals import EARLY, interrupt_on_signal
from train.stop import StopAgreement
from train.sync import SyncTimer, device_sync

__all__ = ["Trainer", "pick_device"]

log = logging.getLogger(__name__)


def pick_device(choice: str, local_rank: int) -> torch.device:
    """cuda:(local_rank % device_count) when CUDA is present (or forced), else the CPU."""
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise TrainError("device 'cuda' was asked for but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(f"cuda:{local_rank % torch.cuda.device_count()}")


class Trainer(RecordsMixin):
    """One rank's share of a run. Construct on every rank (collective), then call run().

    The synchronisation is train.averager.LocalSGD (the public averager) with a SyncTimer as its hooks; the
    Trainer keeps the loop, evaluation, records (train/records.py) and checkpoints.
    """

    def __init__(self, cfg: TrainConfig, *, resume_dir: str | None = None, world: Any = None,
                 progress: bool = False, prediction: dict[str, Any] | None = None, from_scratch: bool = False) -> None:
        self.world = world if world is not None else MPI.COMM_WORLD
        self.rank, self.K = self.world.Get_rank(), self.world.Get_size()
        cfg.check_world(self.K)
        self.cfg = cfg
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
        # Data first: a missing file or a shard too small for the batch stops every rank alike, before training's
        # collectives (one agreement step: every rank learns of a problem found on any rank).
        problem, loaded = None, None
        try:
            loaded = self._load_data(cfg)
        except TrainError as e:
            problem = str(e)
        agreed = self.world.allgather((problem, EARLY.seen))  # a Ctrl-C during start-up is agreed on here too
        interrupt_on_signal(max(sig for _, sig in agreed))
        problems = [p for p, _ in agreed if p]
        if problems or loaded is None:
            raise AgreedError(problems[0] if problems else "internal: no data loaded")
        self.data, self.carry, self.stream, self.plan = loaded
        if self.rank == 0 and not resume_dir:
            for line in self.plan.warnings(cfg):
                print(f"warning: {line}", file=sys.stderr, flush=True)
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
        backend = MPIBackend(self.world, hierarchical=hier, topology=self.topology, algorithm=cfg.allreduce)
        self.sync = SyncTimer(backend, delays={"global": cfg.global_sync_delay, "block": cfg.block_sync_delay})
        # collective: rank 0's model is broadcast, then the anchors of momentum and compression are taken
        self.averager = LocalSGD([p for _, p in named], schedule=self.plan.schedule, total_steps=self.plan.total_steps,
                                 backend=backend, momentum_variant=cfg.momentum_variant,
                                 global_momentum=cfg.global_momentum, slow_lr=cfg.slow_lr,
                                 slow_momentum=cfg.slow_momentum, buffers=cfg.slow_buffers, optimizer=self.opt,
                                 compress=cfg.compress, sign_scale=cfg.sign_scale, hooks=self.sync)
        self.evaluator = Evaluator(self.model, self.averager.flat, world=self.world, bn_eval=cfg.bn_eval,
                                   x_test=self.data.x_test, y_test=self.data.y_test, device=self.device,
                                   contiguous=self.carry is not None)
        self.slow = dict(self.cfg.stragglers).get(self.rank, 1.0)
        self.progress = progress and self.rank == 0
        self.prediction = prediction  # the simulator's, made before the run (train/predict.py); summary.json keeps it
        self.signal = 0  # the signal the ranks agreed to stop on (0: none); not part of a checkpoint
        self.stopper: StopAgreement | None = None  # run() sets it: steps driven from outside never stop on signals
        self.objective_writer: JsonlWriter | None = None  # run() opens it on rank 0 with --log-objective
        self.startup_s: float | None = None  # seconds from process start to the first step (run() measures)
        self._t0: float | None = None  # perf_counter() when run() started training
        self._ckpt_t = 0.0  # perf_counter() of the last checkpoint (time-based checkpoints)
        self._startup_problem: tuple[str, bool] | None = None  # (message, is an output error) found before run()
        self.last_epoch: dict[str, Any] | None = None  # the latest epoch record (rank 0)
        # counters (all saved in checkpoints)
        self.step = 0
        self.compute_s = self.eval_s = self.straggle_s = self.checkpoint_s = 0.0
        self.checkpoints = 0
        self.wall_offset = 0.0
        self.window = [0.0, 0, 0]  # loss sum, correct, count since the last epoch record
        self.best: dict[str, Any] = {"test_acc": None, "target": None}
        self.resumed = bool(resume_dir)
        if resume_dir and not from_scratch:  # train/resume.py checked the folder before MPI started
            self._restore()
        elif resume_dir and self.rank == 0:  # a run without any checkpoint starts again: its records go
            self._rewind(-1)

    # -- set-up helpers ------------------------------------------------------------------------------
    def _load_data(self, cfg: TrainConfig) -> tuple[Any, CarriedState | None, Any, RunPlan]:
        """The dataset, this rank's stream of batches (or the LSTM's contiguous columns) and the run plan."""
        data = cast_dataset(load_dataset(cfg), getattr(torch, cfg.dtype))
        carry = CarriedState() if cfg.carries_state else None  # the LSTM's truncated BPTT (train/lmstate.py)
        stream: WorkerStream | SamplerStream | ContiguousStream
        if carry is not None:
            stream = ContiguousStream(data, rank=self.rank, size=self.K, batch=cfg.batch_size)
        elif cfg.sampler == "stream":
            stream = WorkerStream(data, rank=self.rank, size=self.K, batch=cfg.batch_size, seed=cfg.seed)
        else:  # the convex simulator's sampler: the same samples as its worker `rank`
            stream = SamplerStream(data, rank=self.rank, size=self.K, batch=cfg.batch_size, seed=cfg.seed,
                                   mode=cfg.sampler)
        return data, carry, stream, RunPlan.build(cfg, workers=self.K, n_train=len(data.x_train))

    def _default_dir(self) -> str:
        if self.cfg.out_dir:
            return self.cfg.out_dir
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        base = os.path.join("runs", f"train-{stamp}-{self.cfg.algorithm}-K{self.K}")
        path, n = base, 1
        while os.path.exists(path):  # two runs started in the same second
            n += 1
            path = f"{base}-{n}"
        return path

    def _state(self) -> dict[str, Any]:
        return {"step": self.step, "model": self.model.state_dict(), "opt": self.opt.state_dict(),
                "sync": {**self.sync.state_dict(), **self.averager.state_dict()},  # one dict: older checkpoints load
                "torch_rng": torch.get_rng_state(), "gen": self.gen.get_state(),
                "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
                "compute_s": self.compute_s, "eval_s": self.eval_s, "straggle_s": self.straggle_s,
                "checkpoint_s": self.checkpoint_s, "checkpoints": self.checkpoints, "wall_s": self._wall(),
                "window": list(self.window), "best": dict(self.best),
                "lm_state": self.carry.state_dict() if self.carry is not None else None}

    def _restore(self) -> None:
        st, used, skipped = load_checkpoint(self.run_dir, self.world)
        if skipped and self.rank == 0:
            print(f"warning: {skipped[0]}; resuming from the previous checkpoint instead: checkpoints/{used['dir']} "
                  f"(after step {used['step'] + 1})", file=sys.stderr, flush=True)
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["opt"])
        self.sync.load_state_dict(st["sync"])
        self.averager.load_state_dict({"steps": st["step"] + 1, **st["sync"]})  # older checkpoints lack "steps"
        torch.set_rng_state(st["torch_rng"])
        self.gen.set_state(st["gen"])
        if st["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(st["cuda_rng"], self.device)
        self.step = st["step"] + 1
        self.compute_s, self.eval_s, self.straggle_s = st["compute_s"], st["eval_s"], st["straggle_s"]
        self.checkpoint_s, self.checkpoints = st.get("checkpoint_s", 0.0), st.get("checkpoints", 0)  # older ones
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

    # -- the loop --------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any] | None:
        """Train to the end (or to stop_at_epoch); returns the summary on rank 0, None elsewhere."""
        cfg, plan, T = self.cfg, self.plan, self.plan.total_steps
        writer, problem = None, self._startup_problem
        if self.rank == 0 and problem is None:
            resolved = {"config": cfg.to_dict(), "plan": plan.to_dict(), "device": str(self.device),
                        "topology": self.topology.describe() if self.topology else None,
                        "model_params": sum(p.numel() for p in self.model.parameters()),
                        "payload_bytes": self.averager.nbytes, "run_dir": str(self.run_dir),
                        "dataset": {"name": self.data.name, "n_train": len(self.data.x_train),
                                    "n_test": len(self.data.x_test), "input_shape": list(self.data.input_shape),
                                    "num_classes": self.data.num_classes}}
            try:
                writer, self.objective_writer = open_outputs(self.run_dir, resolved, resumed=self.resumed,
                                                             objective=cfg.log_objective)
            except OutputError as e:
                problem = (str(e), True)
        agreed = self.world.allgather((problem, EARLY.seen))  # the last start-up agreement: outputs and Ctrl-C
        if max(sig for _, sig in agreed) and self.rank == 0 and writer is not None and not self.resumed:
            discard_outputs(self.run_dir, [writer, self.objective_writer])  # no step ran: the folder is free again
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
        status = "completed"
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
                with contextlib.suppress(OutputError):
                    self._summary("interrupted")
            raise
        finally:
            self.stopper.close(complete=not failed)
            self.stopper = None
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
            if self.objective_writer is not None:
                self.objective_writer.close()
                self.objective_writer = None
        summary, unwritten = None, None
        per_rank = self.world.gather(self._totals(), root=0)  # after the final checkpoint, which they count
        if self.rank == 0:
            try:
                summary = self._summary(status, per_rank)
            except OutputError as e:
                unwritten = str(e)
        unwritten = self.world.bcast(unwritten, root=0)
        if unwritten:
            raise AgreedOutputError(f"{unwritten}; the checkpoints and metrics.jsonl of {self.run_dir} are complete, "
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
        if self.averager.steps != t:
            raise TrainError(f"internal: the averager is at step {self.averager.steps}, the trainer at step {t}")
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
        self.averager.average_gradients()  # mini-batch steps only (and never under compression)
        t1 = time.perf_counter()
        if cfg.clip_grad_norm is not None:  # after the gradient sync: mini-batch steps clip the global gradient
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad_norm)
        self.opt.step()
        device_sync(self.device)
        self.compute_s += dt + time.perf_counter() - t1
        level = self.averager.step(lr)  # the schedule's sync after step t (models are averaged in local phases)
        if level == "global" and self.objective_writer is not None and (cfg.compress != "none"
                                                                        or not plan.grad_phase(t)):
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
            failed = [w.failed for w in (writer, self.objective_writer) if w is not None and w.failed]
            t0 = time.perf_counter()
            self.checkpoints += 1  # counted before the state is taken: a resumed run counts this one too
            save_checkpoint(self.run_dir, t, self._state(), self.world, pending=failed[0] if failed else None)
            self._ckpt_t = time.perf_counter()
            self.checkpoint_s += self._ckpt_t - t0
        return stop

    def _lr_at(self, t: int) -> float:
        """gamma_t: the protocol's schedule (SPEC section 3), or the convex experiment's with c = cfg.lr."""
        cfg = self.cfg
        if cfg.lr_schedule == "protocol":
            return self.plan.lr.lr_at(t)
        return convex_lr(cfg.lr_schedule, cfg.lr, t, len(self.data.x_train), cfg.lr_cap)
