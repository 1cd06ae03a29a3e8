"""The training loop of every algorithm: local steps, syncs through comm, evaluation, metrics and checkpoints."""
from __future__ import annotations

import contextlib
import logging
import os
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from mpi4py import MPI

import comm
from train.checkpoint import load_checkpoint, save_checkpoint
from train.config import TrainConfig
from train.convex import SamplerStream, cast_dataset, convex_lr
from train.data import WorkerStream, load_dataset
from train.errors import AgreedError, AgreedOutputError, TrainError
from train.launch import process_age
from train.lmstate import CarriedState, ContiguousStream
from train.memory import MemoryEstimate
from train.metrics import JsonlWriter, OutputError
from train.outputs import discard_outputs, open_outputs, rewind_records
from train.plan import RunPlan
from train.predict import model_gflops
from train.records import RecordsMixin
from train.signals import EARLY, interrupt_on_signal
from train.stop import StopAgreement
from train.targets import resolve_fstar
from train.workers import RankWorker, Workers

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

    The workers of this process (train/workers.py: one per MPI rank; train/virtual.py: K in one process) run the
    local steps, and sync through train.averager.LocalSGD (the public averager) with a SyncTimer as its hooks; the
    Trainer keeps the loop, evaluation schedule, records (train/records.py) and checkpoints.
    """

    def __init__(self, cfg: TrainConfig, *, resume_dir: str | None = None, world: Any = None,
                 progress: bool = False, prediction: dict[str, Any] | None = None, from_scratch: bool = False,
                 memory: MemoryEstimate | None = None) -> None:
        self.world = world if world is not None else MPI.COMM_WORLD
        self.rank, size = self.world.Get_rank(), self.world.Get_size()
        cfg.check_world(size)
        self.cfg = cfg
        self.K = cfg.workers_of(size)  # workers: the ranks (engine mpi), or all in this process (engine virtual)
        self.virtual = cfg.engine == "virtual"
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))  # engine virtual sets its own
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
        self.data, self.carry, streams, self.plan = loaded
        if self.rank == 0 and not resume_dir:
            for line in self.plan.warnings(cfg):
                print(f"warning: {line}", file=sys.stderr, flush=True)
        node = comm.Topology.from_comm(self.world)
        self.device = pick_device(cfg.device, node.node_rank)
        hier = cfg.algorithm == "hierarchical" and not self.virtual  # virtual blocks are the workers' own
        self.topology = comm.Topology.from_comm(self.world, cfg.gpus_per_node) if hier else None
        self.run_dir = Path(resume_dir or self.world.bcast(self._default_dir() if self.rank == 0 else None, root=0))
        # the workers of this process; collective: rank 0's model is broadcast, the averager's anchors are taken
        self.workers: Workers
        if self.virtual:
            from train.virtual import VirtualWorkers
            self.workers = VirtualWorkers(cfg, plan=self.plan, data=self.data, streams=streams, device=self.device)
        else:
            self.workers = RankWorker(cfg, plan=self.plan, data=self.data, stream=streams[0], carry=self.carry,
                                      world=self.world, rank=self.rank, device=self.device, topology=self.topology)
        self.model, self.opt, self.no_decay = self.workers.model, self.workers.opt, self.workers.no_decay
        self.evaluator = self.workers.evaluator
        self.fstar = resolve_fstar(cfg, self.data.x_train, self.data.y_train) if self.rank == 0 else None
        self.sync, self.averager = self.workers.sync, self.workers.averager
        self.progress = progress and self.rank == 0
        self.prediction = prediction  # the simulator's, made before the run (train/predict.py); summary.json keeps it
        self.memory = memory  # the estimate train/memory.py checked before the run; summary.json keeps it
        self.usage: list[tuple[int, float]] | None = None  # every rank's (peak resident bytes, loop CPU s) (rank 0)
        self._cpu0 = 0.0  # time.process_time() when run() started training
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
    def _load_data(self, cfg: TrainConfig) -> tuple[Any, CarriedState | None, list[Any], RunPlan]:
        """The dataset, the streams of batches of this process's workers (or the LSTM's contiguous columns) and
        the run plan."""
        data = cast_dataset(load_dataset(cfg), getattr(torch, cfg.dtype))
        plan = RunPlan.build(cfg, workers=self.K, n_train=len(data.x_train))
        carry = CarriedState() if cfg.carries_state else None  # the LSTM's truncated BPTT (train/lmstate.py)
        streams: list[WorkerStream | SamplerStream | ContiguousStream] = []
        for k in range(self.K) if self.virtual else [self.rank]:
            if carry is not None:
                streams.append(ContiguousStream(data, rank=k, size=self.K, batch=cfg.batch_size))
            elif cfg.sampler == "stream":
                streams.append(WorkerStream(data, rank=k, size=self.K, batch=cfg.batch_size, seed=cfg.seed))
            else:  # the convex simulator's sampler: the same samples as its worker `k`
                streams.append(SamplerStream(data, rank=k, size=self.K, batch=cfg.batch_size, seed=cfg.seed,
                                             mode=cfg.sampler))
        return data, carry, streams, plan

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
        return {"step": self.step, **self.workers.state_dict(),  # model, opt, torch_rng, gen, cuda_rng, lm_state
                "sync": {**self.sync.state_dict(), **self.averager.state_dict()},  # one dict: older checkpoints load
                "compute_s": self.compute_s, "eval_s": self.eval_s, "straggle_s": self.straggle_s,
                "checkpoint_s": self.checkpoint_s, "checkpoints": self.checkpoints, "wall_s": self._wall(),
                "window": list(self.window), "best": dict(self.best)}

    def _restore(self) -> None:
        st, used, skipped = load_checkpoint(self.run_dir, self.world)
        if skipped and self.rank == 0:
            print(f"warning: {skipped[0]}; resuming from the previous checkpoint instead: checkpoints/{used['dir']} "
                  f"(after step {used['step'] + 1})", file=sys.stderr, flush=True)
        self.workers.load_state_dict(st)
        self.sync.load_state_dict(st["sync"])
        self.averager.load_state_dict({"steps": st["step"] + 1, **st["sync"]})  # older checkpoints lack "steps"
        self.step = st["step"] + 1
        self.compute_s, self.eval_s, self.straggle_s = st["compute_s"], st["eval_s"], st["straggle_s"]
        self.checkpoint_s, self.checkpoints = st.get("checkpoint_s", 0.0), st.get("checkpoints", 0)  # older ones
        self.wall_offset = st["wall_s"]
        self.window = list(st["window"])
        self.best = dict(st["best"])
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
                        "gflops_per_sample": model_gflops(self.model, tuple(self.data.input_shape), cfg.model),
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
        self._cpu0 = time.process_time()
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
        self.usage = self.world.gather((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                                        time.process_time() - self._cpu0), root=0)
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
        if self.averager.steps != t:
            raise TrainError(f"internal: the averager is at step {self.averager.steps}, the trainer at step {t}")
        res = self.workers.step(t, lr)  # forward, backward, mini-batch gradient average, clipping, SGD step
        self.compute_s += res.compute_s
        self.straggle_s += res.straggle_s
        level = self.averager.step(lr)  # the schedule's sync after step t (models are averaged in local phases)
        if level == "global" and self.objective_writer is not None and (cfg.compress != "none"
                                                                        or not plan.grad_phase(t)):
            self.objective_writer.write(self._objective_record(t))
        self.window[0] += res.loss_sum
        self.window[1] += res.correct
        self.window[2] += res.n
        if writer is not None and (t % cfg.log_every == 0 or t == T - 1):
            writer.write(self._step_record(t, lr, h, level, res.loss, res.acc))
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
