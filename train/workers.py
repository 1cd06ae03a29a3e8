"""The workers a process runs for the trainer's loop: one MPI rank's worker, or K virtual ones (train/virtual.py)."""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

from train.averager import LocalSGD
from train.backend import MPIBackend
from train.evaluate import Evaluator, batch_metrics
from train.models import build_model, no_decay_names
from train.sync import SyncTimer, device_sync

if TYPE_CHECKING:
    from train.config import TrainConfig
    from train.lmstate import CarriedState
    from train.plan import RunPlan

__all__ = ["StepResult", "Workers", "RankWorker", "make_optimizer", "make_averager", "objective_args", "worker_seed"]


@dataclass(frozen=True, slots=True)
class StepResult:
    """One local step of every worker this process runs."""

    loss: float          # the first worker's mean loss on its batch (rank 0's in the step records)
    acc: float           # the first worker's accuracy on its batch
    loss_sum: float      # sum over this process's workers of mean loss x predictions
    correct: int         # correct predictions, summed over this process's workers
    n: int               # predictions (samples, or tokens for the LSTM), summed over this process's workers
    compute_s: float     # forward, backward and optimiser step (the straggler's sleep excluded)
    straggle_s: float    # emulated extra compute (--straggler)


class Workers(Protocol):
    """What differs between the engines; the loop, records, checkpoints and stop agreement stay in the Trainer.

    `averager` is the LocalSGD every sync goes through (its backend: comm over MPI, or means over the stacked
    workers of one process); `sync` its timer; `model` the module evaluation and the objective read.
    """

    averager: LocalSGD
    sync: SyncTimer
    model: torch.nn.Module
    opt: torch.optim.SGD
    evaluator: Evaluator
    no_decay: set[str]

    def step(self, t: int, lr: float) -> StepResult: ...
    def evaluate(self) -> tuple[float, float, float | None]: ...
    def synced_model(self) -> torch.nn.Module: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, st: dict[str, Any]) -> None: ...


def worker_seed(seed: int, k: int) -> int:
    """Worker k's seed of dropout and data augmentation (the same for rank k and virtual worker k)."""
    return seed * 100_003 + k + 1


def make_optimizer(cfg: TrainConfig, named: Sequence[tuple[str, torch.Tensor]], skip: set[str],
                   lr: float) -> torch.optim.SGD:
    """The protocol's SGD: Nesterov momentum without dampening, weight decay except on BatchNorm parameters."""
    groups = [{"params": [p for n, p in named if n not in skip], "weight_decay": cfg.weight_decay},
              {"params": [p for n, p in named if n in skip], "weight_decay": 0.0}]
    local_m = 0.0 if cfg.momentum_variant == "global" else cfg.momentum
    return torch.optim.SGD([g for g in groups if g["params"]], lr=lr, momentum=local_m, dampening=0.0,
                           nesterov=cfg.nesterov and local_m > 0)


def objective_args(cfg: TrainConfig, data: Any, named: Sequence[tuple[str, torch.Tensor]],
                   skip: set[str]) -> tuple[Any, Any, float, list[torch.Tensor]] | None:
    """What the Evaluator needs for f(w) at every evaluation (--target-loss or --log-objective): the training set,
    the weight decay and the decayed parameters; None otherwise."""
    if cfg.target_loss is None and not cfg.log_objective:
        return None
    return data.x_train, data.y_train, cfg.weight_decay, [p for n, p in named if n not in skip]


def make_averager(cfg: TrainConfig, plan: RunPlan, params: list[torch.Tensor], backend: Any,
                  opt: torch.optim.Optimizer, hooks: SyncTimer, *, buckets: bool = True) -> LocalSGD:
    """The run's LocalSGD (collective: worker 0's model is broadcast, then the anchors are taken). `buckets`: the
    mini-batch gradients go through GradientBuckets (engine mpi; engine virtual averages its rows in memory)."""
    return LocalSGD(params, schedule=plan.schedule, total_steps=plan.total_steps, backend=backend,
                    momentum_variant=cfg.momentum_variant, global_momentum=cfg.global_momentum,
                    slow_lr=cfg.slow_lr, slow_momentum=cfg.slow_momentum, buffers=cfg.slow_buffers, optimizer=opt,
                    compress=cfg.compress, sign_scale=cfg.sign_scale, hooks=hooks,
                    bucket_bytes=(cfg.bucket_size or None) if buckets else None,
                    first_bucket_bytes=cfg.first_bucket_size, overlap=cfg.overlap, overlap_steps=cfg.overlap_steps,
                    outer_optimizer=None if cfg.outer_optimizer == "none" else cfg.outer_optimizer,
                    outer_lr=cfg.outer_lr, outer_momentum=cfg.outer_momentum)


class RankWorker:
    """The worker of one MPI rank: its model, optimiser, stream of batches and generators (engine mpi)."""

    def __init__(self, cfg: TrainConfig, *, plan: RunPlan, data: Any, stream: Any, carry: CarriedState | None,
                 world: Any, rank: int, device: torch.device, topology: Any) -> None:
        self.cfg, self.data, self.stream, self.carry, self.device = cfg, data, stream, carry, device
        torch.manual_seed(cfg.seed)  # the same initial model on every rank (then broadcast to be sure)
        self.model = build_model(cfg.model, input_shape=data.input_shape, num_classes=data.num_classes,
                                 width=cfg.width, dropout=cfg.dropout).to(device, getattr(torch, cfg.dtype))
        torch.manual_seed(worker_seed(cfg.seed, rank))  # per-rank stream for dropout
        self.gen = torch.Generator().manual_seed(worker_seed(cfg.seed, rank))  # data augmentation
        self.no_decay = no_decay_names(self.model)
        named = list(self.model.named_parameters())
        self.opt = make_optimizer(cfg, named, self.no_decay, plan.lr.lr_at(0))
        hier = cfg.algorithm == "hierarchical"
        backend = MPIBackend(world, hierarchical=hier, topology=topology, algorithm=cfg.allreduce,
                             progress=cfg.progress)
        self.sync = SyncTimer(backend, delays={"global": cfg.global_sync_delay, "block": cfg.block_sync_delay})
        self.averager = make_averager(cfg, plan, [p for _, p in named], backend, self.opt, self.sync)
        self.averager.poll_in(self.model)  # progress "poll": the forward passes drive an overlapped sync too
        self.evaluator = Evaluator(self.model, self.averager.flat, world=world, bn_eval=cfg.bn_eval,
                                   x_test=data.x_test, y_test=data.y_test, device=device,
                                   contiguous=carry is not None, objective=objective_args(cfg, data, named,
                                                                                          self.no_decay),
                                   algorithm=cfg.allreduce)
        self.slow = dict(cfg.stragglers).get(rank, 1.0)

    def step(self, t: int, lr: float) -> StepResult:
        """Forward and backward on this rank's batch, the mini-batch gradient average, clipping, the SGD step."""
        for g in self.opt.param_groups:
            g["lr"] = lr
        t0 = time.perf_counter()
        x, y = self.stream.batch_at(t, self.gen)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        self.opt.zero_grad(set_to_none=False)
        logits = self.model(x) if self.carry is None else self.carry.logits(self.model, x, self.stream.restarts(t))
        loss, correct, n = batch_metrics(logits, y)
        loss.backward()
        device_sync(self.device)
        dt = time.perf_counter() - t0
        straggle = 0.0
        if self.slow > 1.0:  # straggler emulation: this rank computes `slow` times slower
            straggle = (self.slow - 1.0) * dt
            time.sleep(straggle)
        # mini-batch steps only (never under compression): with buckets, their all-reduces started during
        # backward from the gradients' hooks; this waits for what is left and writes the means into .grad
        self.averager.average_gradients()
        t1 = time.perf_counter()
        if self.cfg.clip_grad_norm is not None:  # after the gradient sync: mini-batch steps clip the global gradient
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad_norm)
        self.opt.step()
        device_sync(self.device)
        loss_v = float(loss.detach())
        return StepResult(loss=loss_v, acc=correct / n, loss_sum=loss_v * n, correct=correct, n=n,
                          compute_s=dt + time.perf_counter() - t1, straggle_s=straggle)

    def evaluate(self) -> tuple[float, float, float | None]:
        return self.evaluator.evaluate_all()

    def synced_model(self) -> torch.nn.Module:
        return self.model

    def state_dict(self) -> dict[str, Any]:
        dev = self.device
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "torch_rng": torch.get_rng_state(),
                "gen": self.gen.get_state(), "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
                "lm_state": self.carry.state_dict() if self.carry is not None else None}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["opt"])
        torch.set_rng_state(st["torch_rng"])
        self.gen.set_state(st["gen"])
        if st["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(st["cuda_rng"], self.device)
        if self.carry is not None:
            self.carry.load_state_dict(st.get("lm_state") or {"hidden": None}, self.device)
