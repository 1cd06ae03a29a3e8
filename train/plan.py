"""The resolved plan of a run: steps, epochs, learning rates and the sync schedule, from config, K and the data."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sim.schedule import SyncSchedule, total_steps
from train.config import TrainConfig
from train.errors import TrainError
from train.lr import LRSchedule

__all__ = ["RunPlan"]


@dataclass(kw_only=True, frozen=True)
class RunPlan:
    """Everything derived from the configuration once K (workers) and n_train (training samples) are known."""

    workers: int
    n_local: int                 # samples per worker per epoch
    total_steps: int             # T = ceil(N / (K B)) with N = round(epochs n_local) K
    samples_total: int           # N
    steps_per_epoch: float       # n_local / B
    switch_step: int             # postlocal: first local step; 0 otherwise
    local_warmup_steps: int
    lr: LRSchedule
    schedule: SyncSchedule

    @classmethod
    def build(cls, cfg: TrainConfig, *, workers: int, n_train: int) -> RunPlan:
        n_local = n_train // workers
        if n_local < 1:
            raise TrainError(f"{n_train} training samples cannot be split over {workers} ranks; "
                             f"use at most {n_train} ranks or more data")
        per_worker = max(1, round(cfg.epochs * n_local))
        N = per_worker * workers
        T = total_steps(N, workers, cfg.batch_size)
        spe = n_local / cfg.batch_size
        lr = LRSchedule.from_protocol(lr=cfg.lr, ref_batch=cfg.lr_ref_batch, scaling=cfg.lr_scaling,
                                      workers=workers, batch=cfg.batch_size, warmup_epochs=cfg.lr_warmup_epochs,
                                      steps_per_epoch=spe, total_steps=T, decay_at=cfg.lr_decay_at,
                                      factor=cfg.lr_decay_factor)
        switch = 0
        if cfg.algorithm == "postlocal":
            if cfg.switch_step is not None:
                switch = cfg.switch_step
                if switch >= T:
                    raise TrainError(f"switch_step {switch} is not before the run's {T} steps (epochs "
                                     f"{cfg.epochs:g}): post-local SGD would never start; lower one or raise the other")
            elif cfg.switch_epoch is not None:
                switch = math.ceil(cfg.switch_epoch * spe)
            else:
                switch = lr.first_decay if lr.first_decay is not None else 0
        if cfg.local_warmup_steps is not None:
            warm = cfg.local_warmup_steps
        elif cfg.local_warmup_epochs is not None:
            warm = math.ceil(cfg.local_warmup_epochs * spe)
        else:
            warm = 0
        schedule = SyncSchedule(algorithm=cfg.algorithm, H=cfg.H, Hb=cfg.Hb, switch_step=switch,
                                warmup=cfg.local_warmup, warmup_steps=warm)
        return cls(workers=workers, n_local=n_local, total_steps=T, samples_total=N, steps_per_epoch=spe,
                   switch_step=switch, local_warmup_steps=warm, lr=lr, schedule=schedule)

    def warnings(self, cfg: TrainConfig) -> list[str]:
        """One line per setting the plan had to bend: a batch larger than a worker's data, a run whose step count
        rounds its epochs noticeably, an H (or H x H^b) that leaves no sync before the end."""
        out, T, B, K = [], self.total_steps, cfg.batch_size, self.workers
        done = T * B / self.n_local  # epochs the T steps really access
        if self.n_local < B:
            out.append(f"--batch-size {B} is larger than the {self.n_local} samples each of the {K} workers holds: "
                       f"every batch repeats samples and one step is {B / self.n_local:.2f} epochs; use at most "
                       f"--batch-size {self.n_local} (or more data)")
        if abs(done - cfg.epochs) > 0.01 * cfg.epochs:
            out.append(f"--epochs {cfg.epochs:g} becomes {T} steps of batch {B} per worker, which access "
                       f"{done:.2f} epochs (steps are whole); choose --epochs as a multiple of "
                       f"{B / self.n_local:.4g} to get exactly what you ask")
        alg, per_global = cfg.algorithm, cfg.H * (cfg.Hb if cfg.algorithm == "hierarchical" else 1)
        if alg in ("local", "hierarchical") and per_global >= T:
            what = "--H" if alg == "local" else "--H x --Hb"
            out.append(f"{what} {per_global} is not below the run's {T} steps per worker: the workers average only "
                       f"once, after the last step (local SGD becomes one-shot averaging); use {what} < {T}")
        elif alg == "postlocal" and cfg.H >= T - self.switch_step > 0:
            out.append(f"--H {cfg.H} is not below the {T - self.switch_step} local steps after the post-local switch "
                       f"(step {self.switch_step}): the workers average only once more, after the last step")
        return out

    def grad_phase(self, step: int) -> bool:
        """Whether `step` is a mini-batch step (gradients averaged before the update)."""
        alg = self.schedule.algorithm
        return alg == "minibatch" or (alg == "postlocal" and step < self.switch_step)

    def epoch_after(self, step: int) -> float:
        """Epochs completed once 0-based `step` has finished."""
        return (step + 1) / self.steps_per_epoch

    def crosses(self, step: int, every: float) -> bool:
        """Whether finishing `step` completes a multiple of `every` epochs."""
        before = math.floor(step / self.steps_per_epoch / every + 1e-9)
        after = math.floor((step + 1) / self.steps_per_epoch / every + 1e-9)
        return after > before

    def to_dict(self) -> dict[str, Any]:
        return {"world_size": self.workers, "n_local": self.n_local, "total_steps": self.total_steps,
                "samples_total": self.samples_total, "steps_per_epoch": self.steps_per_epoch,
                "switch_step": self.switch_step, "local_warmup_steps": self.local_warmup_steps,
                "lr_base": self.lr.base, "lr_peak": self.lr.peak, "lr_warmup_steps": self.lr.warmup_steps,
                "lr_decay_steps": list(self.lr.decay_steps),
                "expected_syncs": self.schedule.counts(self.total_steps)}
