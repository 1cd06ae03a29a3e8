"""Predict a trainer run's wall time with the simulator, from a resolved configuration and a machine or topology."""
# The model of a run on a machine file or a topology is the simulator's (sim/trainrun.py, shared with `sim retime`,
# docs/README-predict.md states every assumption); this module resolves the trainer's configuration into its
# TrainRun: the plan (steps, schedule) and the model's parameters and forward FLOPs, counted with torch.
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from sim.compute import ModelSpec
from sim.errors import SimError
from sim.overlap import uniform_buckets
from sim.run import RunResult
from sim.topology import load_topology
from sim.trainrun import (
    CODE_FILES,
    COMM_AUTO_THRESHOLD_DEFAULT,
    COMM_MULTINODE_RING_MAX_DEFAULT,
    EVAL_SMALL_COLLECTIVES,
    LOAD_WARN,
    MACHINE_SCHEMA,
    PREDICTION_SCHEMA,
    WAIT_FORMS,
    TrainRun,
    calibration_code_version,
    comm_auto_algorithm,
    format_prediction,
    machine_jitter,
    predict_run,
)
from sim.trainrun import cpu_share as _cpu_share
from sim.trainrun import load_source as _load_source
from sim.trainrun import machine_warnings as _machine_warnings
from sim.trainrun import scheduling_wait as _scheduling_wait
from train.config import TrainConfig
from train.errors import TrainError
from train.models import is_sequence_model
from train.plan import RunPlan

__all__ = ["MACHINE_SCHEMA", "PREDICTION_SCHEMA", "LOAD_WARN", "CODE_FILES", "calibration_code_version",
           "machine_warnings", "machine_jitter", "WAIT_FORMS", "scheduling_wait", "ModelProfile", "profile_model",
           "comm_auto_algorithm", "count_checkpoints", "model_gflops", "train_run", "predict_with_run",
           "load_source", "cpu_share", "count_evals", "predict", "format_prediction",
           "COMM_AUTO_THRESHOLD_DEFAULT", "COMM_MULTINODE_RING_MAX_DEFAULT", "EVAL_SMALL_COLLECTIVES"]

log = logging.getLogger(__name__)

#: Sizes of datasets whose files may be absent where a prediction is made (n_train, n_test, input shape, classes).
KNOWN_DATASETS = {"cifar10": (50_000, 10_000, (3, 32, 32), 10), "cifar100": (50_000, 10_000, (3, 32, 32), 100)}


def scheduling_wait(s: float, lam: float, form: str) -> float:
    """sim.trainrun.scheduling_wait with the trainer's error type."""
    try:
        return _scheduling_wait(s, lam, form)
    except SimError as e:
        raise TrainError(str(e)) from None


def cpu_share(K: int, cores: int, load: float = 0.0) -> float:
    """sim.trainrun.cpu_share with the trainer's error type: max(cores, K + load) / cores."""
    try:
        return _cpu_share(K, cores, load)
    except SimError as e:
        raise TrainError(str(e)) from None


def load_source(spec: str) -> tuple[str, Any]:
    """("machine", dict) for a train.machine/1 file, checked key by key (train/machinefile.py), else
    ("topology", Topology) for a sim file or preset."""
    try:
        kind, src = _load_source(spec)
    except SimError as e:
        raise TrainError(str(e)) from None
    if kind == "machine":
        from train.machinefile import check_machine
        check_machine(src, spec)
    return kind, src


def machine_warnings(m: dict[str, Any], spec: str, load_used: float, load_now: float | None) -> list[str]:
    """One line per reason to distrust a machine file now: other calibration code, a fit that does not explain its
    own measurements (train/fitcheck.py), or another background load."""
    from train.fitcheck import quality_warning
    bad_fit = quality_warning(m, spec)
    return _machine_warnings(m, spec, load_used, load_now, extra=[bad_fit] if bad_fit else [])


@dataclass(kw_only=True, frozen=True)
class ModelProfile:
    """What the simulator needs to know of the trainer's model and data."""

    params: int
    gflops_per_sample: float     # forward multiply-accumulates per sample / 1e9 (the SPEC table's convention)
    n_train: int
    n_test: int
    bytes_per_param: int
    grads: tuple[tuple[int, float], ...] = ()   # (bytes, ready fraction) per gradient, train/gradprofile.py

    def spec(self, name: str) -> ModelSpec:
        # The sim charges 4 bytes per parameter; float64 runs send twice as many bytes (counted as twice the params).
        return ModelSpec(name=name, params=self.params * self.bytes_per_param // 4,
                         gflops_per_sample=self.gflops_per_sample, train_samples=self.n_train)


def _dataset_shape(cfg: TrainConfig) -> tuple[int, int, tuple[int, ...], int]:
    from train.data import load_dataset
    try:
        d = load_dataset(cfg)
        return len(d.x_train), len(d.x_test), tuple(d.input_shape), d.num_classes
    except (TrainError, OSError) as e:
        if cfg.dataset in KNOWN_DATASETS:
            log.info("%s not readable (%s): using its known sizes", cfg.dataset, e)
            return KNOWN_DATASETS[cfg.dataset]
        raise


def model_gflops(model: Any, shape: tuple[int, ...], name: str) -> float:
    """Forward multiply-accumulates of one sample / 1e9 (the SPEC table's convention), by torch's FLOP counter.
    The model is run in eval mode without gradients and left as it was (no random number is drawn)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros((1, *shape), dtype=torch.long if is_sequence_model(name) else next(model.parameters()).dtype)
    was = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            model(x.to(next(model.parameters()).device))
    finally:
        model.train(was)
    flops = counter.get_total_flops()
    # torch's counter skips the fused LSTM kernel: each LSTM weight is one multiply-add per token of the sample
    flops += 2 * shape[-1] * sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.LSTM)
                                 for n, p in m.named_parameters() if n.startswith("weight"))
    if flops <= 0:  # an op the counter does not know: 2 FLOPs per parameter and sample
        flops = 2 * sum(p.numel() for p in model.parameters())
    return float(flops) / 2 / 1e9


def profile_model(cfg: TrainConfig) -> ModelProfile:
    """Build the trainer's model on the CPU; count parameters and forward FLOPs of one sample (torch's counter)."""
    from train.models import build_model
    n_train, n_test, shape, classes = _dataset_shape(cfg)
    model = build_model(cfg.model, input_shape=shape, num_classes=classes, width=cfg.width, dropout=cfg.dropout)
    params = sum(p.numel() for p in model.parameters())
    dtype = getattr(cfg, "dtype", "float32")
    import torch

    from train.gradprofile import grad_readiness
    x = torch.zeros((1, *shape), dtype=torch.long if is_sequence_model(cfg.model) else torch.float32)
    grads = grad_readiness(model, x)  # when backward produces each gradient, for the gradient buckets
    if dtype == "float64":
        grads = tuple((2 * n, f) for n, f in grads)
    return ModelProfile(params=params, gflops_per_sample=model_gflops(model, tuple(shape), cfg.model),
                        n_train=n_train, n_test=n_test, bytes_per_param=8 if dtype == "float64" else 4, grads=grads)


def count_evals(plan: RunPlan, eval_every: float) -> int:
    """Evaluations the trainer runs: every `eval_every` epochs and after the last step (once when they coincide)."""
    T = plan.total_steps
    return sum(1 for t in range(T) if plan.crosses(t, eval_every) or t == T - 1)


def count_checkpoints(plan: RunPlan, every: float) -> int:
    """Checkpoints the trainer writes: every `every` epochs (0: none) and after the last step (timed ones aside),
    counted as the evaluations are."""
    return count_evals(plan, every) if every > 0 else 1


def train_run(cfg: TrainConfig, K: int, prof: ModelProfile) -> TrainRun:
    """The simulator's view of the run `cfg` on K ranks (sim/trainrun.py)."""
    plan = RunPlan.build(cfg, workers=K, n_train=prof.n_train)
    s = plan.schedule
    return TrainRun(K=K, algorithm=cfg.algorithm, H=cfg.H, Hb=s.Hb, gpus_per_node=cfg.gpus_per_node,
                    switch_step=s.switch_step, local_warmup=s.warmup, local_warmup_steps=s.warmup_steps,
                    batch_size=cfg.batch_size, epochs=cfg.epochs, total_steps=plan.total_steps,
                    samples_total=plan.samples_total, steps_per_epoch=plan.steps_per_epoch,
                    eval_every=cfg.eval_every, checkpoint_every=cfg.checkpoint_every, allreduce=cfg.allreduce,
                    compress=getattr(cfg, "compress", "none"), global_sync_delay=cfg.global_sync_delay,
                    block_sync_delay=cfg.block_sync_delay, stragglers=tuple(cfg.stragglers), model=cfg.model,
                    width=cfg.width, dataset=cfg.dataset, params=prof.params,
                    gflops_per_sample=prof.gflops_per_sample, n_train=prof.n_train, n_test=prof.n_test,
                    bytes_per_param=prof.bytes_per_param, buckets=_buckets(cfg, prof),
                    overlap_steps=cfg.overlap_steps if cfg.overlap else 0)


def _buckets(cfg: TrainConfig, prof: ModelProfile) -> tuple[tuple[float, float], ...]:
    """The gradient buckets of mini-batch steps as the trainer cuts them: (bytes, fraction of the step's compute
    by which backward has produced all of them), from the model's per-layer backward FLOPs (train/gradprofile.py)."""
    if not cfg.bucket_size or cfg.algorithm not in ("minibatch", "postlocal") or cfg.compress != "none":
        return ()
    if not prof.grads:  # a profile made without them: gradients taken as ready evenly over backward
        return uniform_buckets(prof.params * prof.bytes_per_param, cfg.bucket_size, cfg.first_bucket_size)
    from train.gradprofile import predicted_buckets
    return predicted_buckets(prof.grads, cfg.bucket_size, cfg.first_bucket_size)


def predict_with_run(cfg: TrainConfig, K: int, source: str, *, profile: ModelProfile | None = None,
                     engine: str = "fast", load: float | None = None, load_now: float | None = None,
                     sample_load: bool = True, nodes: int | None = None, launcher_nodes: int | None = None,
                     network: str | None = None) -> tuple[dict[str, Any], RunResult]:
    """predict()'s prediction and the simulated run behind it (its timeline is the clock at every sync)."""
    if isinstance(K, bool) or not isinstance(K, int) or K < 1:
        raise TrainError(f"workers must be an integer >= 1, got {K!r}")
    if load is not None and not (math.isfinite(load) and load >= 0):
        raise TrainError(f"background load must be a finite number >= 0, got {load!r}")
    cfg.check_world(K)
    kind, src = load_source(source)
    if kind != "machine" and (nodes is not None or network is not None):
        raise TrainError(f"--predict-nodes and --predict-network apply to machine files; {source!r} is a topology "
                         f"and has its own nodes and links")
    if network is not None:
        try:
            load_topology(network)
        except SimError as e:
            raise TrainError(f"--predict-network: {e}") from None
    prof = profile or profile_model(cfg)
    extra: list[str] = []
    if kind == "machine":
        if load_now is None and sample_load:
            from train.calibrate import background_load
            load_now = background_load(0.5, 10)
        from train.fitcheck import quality_warning
        bad_fit = quality_warning(src, source)
        extra = [bad_fit] if bad_fit else []
    try:
        return predict_run(train_run(cfg, K, prof), (kind, src, source), engine=engine, load=load,
                           load_now=load_now, nodes=nodes, launcher_nodes=launcher_nodes, network=network,
                           extra_warnings=extra)
    except SimError as e:
        raise TrainError(str(e)) from None


def predict(cfg: TrainConfig, K: int, source: str, *, profile: ModelProfile | None = None,
            engine: str = "fast", load: float | None = None, load_now: float | None = None,
            sample_load: bool = True, nodes: int | None = None, launcher_nodes: int | None = None,
            network: str | None = None) -> dict[str, Any]:
    """The simulator's prediction of the run `cfg` on K ranks, on a machine file, a topology file or a preset.

    `load`: other runnable processes on this machine (machine files only; default: the calibration's mean).
    `load_now`: the load right now, for the staleness warning (default: sampled for half a second when
    `sample_load`).
    `nodes` (machine files): the K ranks sit on this many nodes, K / nodes each (default 1), all on this machine's
    cores; `network` is a sim topology whose inter level is the links between them (default: this machine's level).
    `launcher_nodes`: the nodes the launcher reports for this job, used for machine files when `nodes` is None.
    """
    return predict_with_run(cfg, K, source, profile=profile, engine=engine, load=load, load_now=load_now,
                            sample_load=sample_load, nodes=nodes, launcher_nodes=launcher_nodes, network=network)[0]
