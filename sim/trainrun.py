"""The simulator's model of one trainer run on a machine file or a topology: `train --predict` and `sim retime`."""
# Two kinds of source (docs/README-predict.md states every assumption):
#
# * a machine file (schema "train.machine/1", written by `python -m train calibrate`): this machine, measured. The
#   K busy ranks and L other runnable processes (sampled, or the calibration's mean) share the C cores fairly, so every
#   CPU-bound activity of a rank (its training step, every message of the all-reduce, the evaluation) runs
#   s(K) = max(C, K + L) / C times slower than alone (the CPU-share model). The step time alone is scaled by s(K);
#   the level fitted on the 2-rank bench by s(K) / s(2), and message rounds between oversubscribed ranks wait for
#   the partner to be scheduled: alpha(s) = alpha_bench * s / s(2) + lam (1 - 1/s) g(s) for s > 1, lam and g
#   (1, sqrt(s) or s) fitted by the calibration on local-SGD probes at rank counts that are not validated. The
#   barrier the trainer puts before each sync costs ceil(lg p) such messages; an evaluation costs the seconds per
#   test sample alone times the rank's share of the test set times s(K), plus its collectives (the model average
#   and four small ones).
#   Step times jitter: each rank's steps are drawn from the single-rank steps the calibration measured (resampled,
#   normalised to mean 1), so every sync waits for the slowest rank. The prediction warns (one line each) when the
#   machine file was written by other calibration code than this one, or when the background load now differs
#   from the one the prediction assumes by more than LOAD_WARN runnable processes.
# * a sim topology file or preset (a cluster this machine is not): the topology's links and compute model as
#   they are, the trainer's model given by its measured parameter count and forward GFLOPs per sample.
#
# Pure (no torch, no mpi4py): the trainer resolves its configuration into a TrainRun (train/predict.py), and
# `sim retime` reads the same fields from a run folder's config.json (sim/retime.py).
from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass
from typing import Any

from sim.compute import ComputeModel, ModelSpec
from sim.costs import allreduce_cost
from sim.cpushare import SharedCPU
from sim.engine import simulate_collective
from sim.errors import SimError
from sim.jitter import StepJitter
from sim.machinefile import (
    CODE_FILES,
    LOAD_WARN,
    MACHINE_SCHEMA,
    WAIT_FORMS,
    calibration_code_version,
    cpu_share,
    load_source,
    machine_jitter,
    machine_level,
    machine_warnings,
    network_level,
    scheduling_wait,
)
from sim.overlap import check_buckets, check_overlap_steps
from sim.run import RunConfig, RunResult, simulate
from sim.schedule import SyncSchedule
from sim.stragglers import Stragglers
from sim.topology import Level, Topology

# the machine file's readers moved to sim/machinefile.py; importing them from here still works
__all__ = ["MACHINE_SCHEMA", "PREDICTION_SCHEMA", "LOAD_WARN", "CODE_FILES", "WAIT_FORMS", "TrainRun",
           "calibration_code_version", "machine_warnings", "machine_jitter", "scheduling_wait", "comm_auto_algorithm",
           "load_source", "cpu_share", "predict_run", "format_prediction"]

log = logging.getLogger(__name__)

PREDICTION_SCHEMA = "train.prediction/1"
#: comm's "auto" rule (comm/allreduce.py): recursive doubling up to this many bytes, Rabenseifner above. Repeated
#: here because importing comm starts MPI; tests/unit/test_predict_model.py checks both agree.
COMM_AUTO_THRESHOLD_DEFAULT = 512 * 1024
#: comm's multi-node rule (comm/nodes.py, multinode_choice): where several nodes hold more than one rank each, the
#: ring up to this many bytes and the rail all-reduce above (LOCALSGD_AUTO_MULTINODE_RING_MAX_BYTES overrides).
COMM_MULTINODE_RING_MAX_DEFAULT = 256 * 1024
#: Besides averaging the model, an evaluation runs small collectives: BN statistics, loss sums, the training
#: window and the gather of per-rank timings (train/evaluate.py, train/trainer.py).
EVAL_SMALL_COLLECTIVES = 4
@dataclass(kw_only=True, frozen=True)
class TrainRun:
    """One trainer run as the simulator sees it: the configuration resolved against K and the data (train's
    RunPlan), and the model's size and compute. Built by train/predict.py or read from a run folder."""

    K: int
    algorithm: str
    H: int
    Hb: int = 1
    gpus_per_node: int | None = None   # hierarchical: virtual blocks; None = the real nodes
    switch_step: int = 0
    local_warmup: str = "constant"
    local_warmup_steps: int = 0
    batch_size: int
    epochs: float
    total_steps: int
    samples_total: int
    steps_per_epoch: float
    eval_every: float
    checkpoint_every: float
    allreduce: str = "auto"
    compress: str = "none"
    global_sync_delay: float = 0.0
    block_sync_delay: float = 0.0
    stragglers: tuple[tuple[int, float], ...] = ()
    model: str
    width: int = 8
    dataset: str = "synthetic"
    params: int
    gflops_per_sample: float
    n_train: int
    n_test: int
    bytes_per_param: int = 4
    #: hiding communication (docs/README-overlap.md): mini-batch steps' gradient buckets as (bytes, fraction of the
    #: step's compute by which they are ready), and tau of overlapped local-SGD syncs (0: blocking)
    buckets: tuple[tuple[float, float], ...] = ()
    overlap_steps: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "buckets", check_buckets(self.buckets))
        check_overlap_steps(self.overlap_steps)
        for name in ("K", "H", "Hb", "batch_size", "total_steps", "samples_total", "params", "n_train"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise SimError(f"{name} must be an integer >= 1, got {v!r}")
        for name in ("steps_per_epoch", "eval_every", "gflops_per_sample"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise SimError(f"{name} must be a finite number > 0, got {v!r}")

    @property
    def schedule(self) -> SyncSchedule:
        return SyncSchedule(algorithm=self.algorithm, H=self.H, Hb=self.Hb, switch_step=self.switch_step,
                            warmup=self.local_warmup, warmup_steps=self.local_warmup_steps)

    def spec(self) -> ModelSpec:
        # The sim charges 4 bytes per parameter; float64 runs send twice as many bytes (counted as twice the params).
        return ModelSpec(name=self.model, params=self.params * self.bytes_per_param // 4,
                         gflops_per_sample=self.gflops_per_sample, train_samples=self.n_train)

    def crosses(self, step: int, every: float) -> bool:
        """Whether finishing `step` completes a multiple of `every` epochs (train/plan.py's rule)."""
        before = math.floor(step / self.steps_per_epoch / every + 1e-9)
        after = math.floor((step + 1) / self.steps_per_epoch / every + 1e-9)
        return after > before

    def eval_steps(self) -> list[int]:
        """Steps after which the trainer evaluates: every `eval_every` epochs and after the last step."""
        T = self.total_steps
        return [t for t in range(T) if self.crosses(t, self.eval_every) or t == T - 1]

    def checkpoint_steps(self) -> list[int]:
        """Steps after which the trainer writes a checkpoint (time-based ones aside), counted as evaluations are."""
        T = self.total_steps
        if self.checkpoint_every <= 0:
            return [T - 1]
        return [t for t in range(T) if self.crosses(t, self.checkpoint_every) or t == T - 1]


def _env_bytes(name: str, default: int) -> int:
    text = os.environ.get(name, "")
    return int(text) if text.isdigit() else default


def comm_auto_algorithm(nbytes: int, nodes: int = 1, per_node: int = 1) -> str:
    """The algorithm comm's "auto" picks for `nbytes` on `nodes` nodes of `per_node` ranks each: on nodes that share
    a NIC among several ranks the ring or the rail all-reduce, else recursive doubling or Rabenseifner (the
    LOCALSGD_AUTO_* variables override the thresholds as they do in comm)."""
    if nodes > 1 and per_node > 1:
        ring_max = _env_bytes("LOCALSGD_AUTO_MULTINODE_RING_MAX_BYTES", COMM_MULTINODE_RING_MAX_DEFAULT)
        return "ring" if nbytes <= ring_max else "rail"
    limit = _env_bytes("LOCALSGD_AUTO_THRESHOLD_BYTES", COMM_AUTO_THRESHOLD_DEFAULT)
    return "recursive_doubling" if nbytes <= limit else "rabenseifner"


def _barrier_s(p: int, level: Level) -> float:
    """MPICH's dissemination barrier: ceil(lg p) rounds of one empty message."""
    return 0.0 if p < 2 else math.ceil(math.log2(p)) * (level.latency_s + level.overhead_s)


def _profile_seconds(cp: dict[str, Any], model: str, batch: int) -> tuple[float, str] | None:
    """(seconds, source) of `model` at `batch` from a machine file's compute profile: its measured steps (at the
    batch, or interpolated), else its layer model; None for a model it cannot answer."""
    from sim.compute import get_model
    try:
        compute = ComputeModel.from_json(cp["fit"]["compute"], "compute_profile")
        spec = get_model(model)
        return compute.seconds(spec, batch), compute.provenance(spec, batch)[0]
    except (SimError, KeyError, TypeError):
        return None


def _machine_step_s(m: dict[str, Any], run: TrainRun, notes: list[str]) -> tuple[float, str]:
    """Single-rank seconds per step for the run's model and batch, and where it comes from (sim.compute's sources):
    the calibrated step; else the calibrated step times the ratio of the compute profile's times for this model and
    for the calibrated one (measured profile points, or its layer model); else scaled by FLOPs."""
    st = m["step"]
    same = all(st.get(k) == getattr(run, k) for k in ("model", "width", "dataset", "batch_size"))
    if same:
        return float(st["seconds_per_step"]), "measured"
    cp = m.get("compute_profile")
    if isinstance(cp, dict) and run.width == st.get("width") and run.dataset == st.get("dataset"):
        mine = _profile_seconds(cp, run.model, run.batch_size)
        ref = _profile_seconds(cp, st["model"], st["batch_size"])
        if mine is not None and ref is not None and ref[0] > 0:
            ratio = mine[0] / ref[0]
            src = "measured" if mine[1] == "measured" and ref[1] == "measured" else \
                "measured-interpolated" if mine[1].startswith("measured") else mine[1]
            notes.append(f"compute: the calibrated {st['model']} step at batch {st['batch_size']} x{ratio:.3g}, the "
                         f"ratio of {run.model} at batch {run.batch_size} to it in the machine's compute profile "
                         f"({mine[1]} / {ref[1]})")
            return float(st["seconds_per_step"]) * ratio, src
    ratio = (run.gflops_per_sample * run.batch_size) / (st["gflops_per_sample"] * st["batch_size"])
    notes.append(f"compute scaled by FLOPs from the calibrated {st['model']} at batch {st['batch_size']} "
                 f"(x{ratio:.3g}); calibrate with this model for a measured step time, or add --profile-models")
    return float(st["seconds_per_step"]) * ratio, "extrapolated"


def _stragglers(run: TrainRun, notes: list[str]) -> Stragglers:
    if not run.stragglers:
        return Stragglers()
    rank, factor = max(run.stragglers, key=lambda s: s[1])
    if len(run.stragglers) > 1:
        notes.append(f"the simulator models one straggler: only rank {rank} (x{factor}) is simulated")
    return Stragglers(kind="fixed", rank=rank, slowdown=factor)


def _alone(topo: Topology) -> Topology:
    """One worker alone on a device of `topo`: no links to use, no per-sync overhead (a one-GPU run)."""
    return dataclasses.replace(topo, name=f"{topo.name} (one worker)", nodes=1, gpus_per_node=1,
                               sync_overhead_s=(0.0, 0.0))


def predict_run(run: TrainRun, source: tuple[str, Any, str], *, engine: str = "fast", load: float | None = None,
                load_now: float | None = None, nodes: int | None = None, launcher_nodes: int | None = None,
                network: str | None = None, extra_warnings: list[str] | tuple[str, ...] = ()
                ) -> tuple[dict[str, Any], RunResult]:
    """The simulator's prediction of `run` on `source` = (kind, content, spec) of load_source, and the simulated
    run itself (its timeline gives the clock at every sync).

    `load`: other runnable processes on this machine (machine files only; default: the calibration's mean).
    `load_now`: the load right now, for the staleness warning (None: no load warning).
    `nodes` (machine files): the K ranks sit on this many nodes, K / nodes each (default 1), all on this machine's
    cores; `network` is a sim topology whose inter level is the links between them (default: this machine's level).
    `launcher_nodes`: the nodes the launcher reports for this job, used for machine files when `nodes` is None.
    `extra_warnings`: the caller's own lines about the machine file (the trainer's fit-quality check).
    """
    K = run.K
    if load is not None and not (math.isfinite(load) and load >= 0):
        raise SimError(f"background load must be a finite number >= 0, got {load!r}")
    kind, src, spec_name = source
    if kind != "machine" and (nodes is not None or network is not None):
        raise SimError(f"nodes and network apply to machine files; {spec_name!r} is a topology and has its own "
                       f"nodes and links")
    n_nodes = nodes if nodes is not None else launcher_nodes if launcher_nodes is not None and kind == "machine" else 1
    if isinstance(n_nodes, bool) or not isinstance(n_nodes, int) or n_nodes < 1 or K % n_nodes:
        raise SimError(f"nodes must be an integer >= 1 that divides the {K} workers, got {n_nodes!r}")
    L = 0.0
    hier = run.algorithm == "hierarchical"
    notes: list[str] = []
    warnings: list[str] = []
    jitter = StepJitter()
    spec = run.spec()
    payload = spec.bytes
    if run.allreduce == "native":
        notes.append("native MPI_Allreduce is simulated as MPICH's choice (recursive doubling / Rabenseifner)")
    per_node = K // n_nodes if kind == "machine" else 1
    flat = comm_auto_algorithm(payload, n_nodes, per_node) if run.allreduce in ("auto", "native") else run.allreduce
    small: Level | None = None      # the links' level for rounds of empty messages, when it differs
    if kind == "machine":
        L = float(src["background_load"]) if load is None else load
        s = cpu_share(K, int(src["cpu_count"]), L)
        if n_nodes > 1:
            if hier and run.gpus_per_node not in (None, per_node):
                raise SimError(f"gpus_per_node must be the {per_node} ranks of each of the {n_nodes} nodes or be "
                               f"left out when predicting across nodes, got {run.gpus_per_node}")
            g = per_node
        else:
            g = (run.gpus_per_node or K) if hier else K
        level = machine_level(src, s)
        inter, o_inter = Level(name="inter", **level.to_json()), 0.0
        if network is not None:
            inter, o_inter, net_name = network_level(network)
            notes.append(f"links between the {n_nodes} nodes: the inter level of {net_name!r}")
            # the barrier's rounds of empty messages, which ranks reach from computing, are all waiting for the
            # partner to be scheduled, across the links as in shared memory
            wait = scheduling_wait(s, float(src.get("oversubscribed_latency_s", 0.0)),
                                   src.get("oversubscribed_form", "const"))
            small = dataclasses.replace(inter, latency_s=inter.latency_s + wait)
        elif n_nodes > 1:
            notes.append(f"no network file: the links between the {n_nodes} nodes are modelled as this machine's "
                         f"shared memory")
        alone, compute_source = _machine_step_s(src, run, notes)
        step_s = alone * s
        cpu = SharedCPU(cores=int(src["cpu_count"]), background=L)
        where = f"{n_nodes} nodes x {per_node}" if n_nodes > 1 else f"{K} ranks"
        topo = Topology(name=f"{src.get('name', 'machine')} ({where}, CPU share x{s:.3g})", nodes=K // g,
                        gpus_per_node=g, intra=level, inter=inter, sync_overhead_s=(o_inter, 0.0),
                        compute=ComputeModel(kind="fixed", device="cpu", seconds_per_iter=(alone,)))
        eval_per_sample = float(src["step"]["eval_s_per_sample"]) * s
        # every rank writes its checkpoint file at once, each at its CPU share (0 in older machine files)
        ckpt_per_write = float(src["step"].get("checkpoint_s_per_write", 0.0)) * s
        warnings = machine_warnings(src, spec_name, L, load_now, extra_warnings)
        for w in warnings:
            log.warning("%s", w)
        jitter = machine_jitter(src, notes)
    else:
        topo = src if K > 1 else _alone(src)
        s = 1.0
        cpu = None
        if hier and run.gpus_per_node not in (None, topo.gpus_per_node):
            raise SimError(f"gpus_per_node must match topology {topo.name!r} ({topo.gpus_per_node} per node) "
                           f"or be left out, got {run.gpus_per_node}")
        step_s = topo.compute.seconds(spec, run.batch_size)
        eval_per_sample = step_s / run.batch_size / 3.0  # forward only: a third of forward + backward
        ckpt_per_write = 0.0
        notes.append("checkpoint writing not modelled on a topology (calibrate a machine file to measure it)")
        notes.append("evaluation estimated as the forward third of the step time per sample")
        compute_source, compute_note = topo.compute.provenance(spec, run.batch_size)
        if compute_source not in ("measured", "table"):
            notes.append(f"compute {compute_note}")
    g_eff = topo.gpus_per_node
    lvl = small or (topo.inter if g_eff < K else topo.intra)  # the level of rounds of empty messages
    bar_global = _barrier_s(K, lvl)
    bar_block = _barrier_s(g_eff, topo.intra)
    if run.buckets or run.overlap_steps:  # syncs beside computation have no barrier (the few blocking ones' are
        bar_global = bar_block = 0.0      # left out too)
    allreduce = "hierarchical" if hier else flat
    # comm's hierarchical all-reduce runs "auto" on the leaders (one rank per node) and inside a node: both are the
    # flat rule (recursive doubling up to 512 KiB), and so are the block syncs
    one_node = comm_auto_algorithm(payload)
    rc = RunConfig(topology=topo, model=spec, K=K, B=run.batch_size, N=run.samples_total,
                   schedule=run.schedule, allreduce=allreduce, buckets=run.buckets,
                   overlap_steps=run.overlap_steps,
                   delay_global_s=run.global_sync_delay + bar_global,
                   delay_block_s=run.block_sync_delay + bar_block, stragglers=_stragglers(run, notes),
                   compression=run.compress if run.compress in ("sign", "ef-sign") else "none", epochs=run.epochs,
                   jitter=jitter, cpu=cpu, leader_allreduce=one_node, block_allreduce=one_node)
    res = simulate(rc, engine=engine)
    n_eval = len(run.eval_steps())
    eval_sync = 0.0
    if K >= 2 and n_nodes > 1:  # the model average as the run's own sync all-reduce, simulated on the nodes;
        # the small collectives follow it back to back, with no rank computing: no scheduling wait on the links
        alg = comm_auto_algorithm(payload, n_nodes, per_node)
        eval_sync = (simulate_collective(topo, tuple(range(K)), alg, float(payload), "inter", one_node).duration_s
                     + EVAL_SMALL_COLLECTIVES * allreduce_cost(comm_auto_algorithm(64, n_nodes, per_node), K, 64,
                                                               topo.inter.cost))
    elif K >= 2:
        eval_sync = (allreduce_cost(comm_auto_algorithm(payload), K, payload, lvl.cost)
                     + EVAL_SMALL_COLLECTIVES * allreduce_cost("recursive_doubling", K, 64, lvl.cost))
    eval_s = n_eval * (math.ceil(run.n_test / K) * eval_per_sample + eval_sync)
    n_ckpt = len(run.checkpoint_steps())
    ckpt_s = n_ckpt * ckpt_per_write
    barrier_s = res.syncs_global * bar_global + res.syncs_block * bar_block
    out = res.to_json()
    pred = {
        "schema": PREDICTION_SCHEMA, "source": kind, "source_spec": spec_name, "topology": topo.name,
        "workers": K, "nodes": out["nodes"], "real_nodes": n_nodes, "gpus_per_node": out["gpus_per_node"],
        "cpu_share": s,
        "background_load": L if kind == "machine" else None,
        "algorithm": run.algorithm, "H": run.H, "Hb": run.Hb, "batch_size": run.batch_size,
        "total_steps": run.total_steps, "model": run.model, "model_params": run.params,
        "gflops_per_sample": run.gflops_per_sample, "payload_bytes": payload, "wire_bytes": out["wire_bytes"],
        "allreduce_global": out["allreduce_global"], "allreduce_block": out["allreduce_block"],
        "step_s": step_s, "wall_s": res.wall_s + eval_s + ckpt_s, "train_s": res.wall_s, "compute_s": res.compute_s,
        "comm_intra_s": res.comm_intra_s, "comm_inter_s": res.comm_inter_s, "wait_s": res.wait_s,
        "barrier_s": barrier_s, "delay_s": max(0.0, res.delay_s - barrier_s), "eval_s": eval_s, "evals": n_eval,
        "checkpoint_s": ckpt_s, "checkpoints": n_ckpt, "hidden_s": res.hidden_s,
        "overlap_steps": run.overlap_steps, "buckets": [list(b) for b in run.buckets],
        "syncs_global": res.syncs_global, "syncs_block": res.syncs_block, "notes": notes, "warnings": warnings,
        "compute_source": compute_source, "jitter": out["jitter"],
    }
    return pred, res


def format_prediction(p: dict[str, Any]) -> str:
    """The human table `python -m train --predict` prints."""
    wall = p["wall_s"] or 1.0

    def row(name: str, v: float) -> str:
        return f"  {name:<16}{v:>12.3f} s  ({100 * v / wall:5.1f} %)"

    alg = p["algorithm"] + ("" if p["algorithm"] == "minibatch" else f" H={p['H']}") + \
        (f" Hb={p['Hb']}" if p["algorithm"] == "hierarchical" else "")
    head = (f"prediction for {alg} | {p['model']} ({p['model_params']:,} params, "
            f"{p['gflops_per_sample']:.3g} GFLOPs/sample) | K={p['workers']} on {p['topology']}")
    lines = [head,
             (f"  {'steps':<16}{p['total_steps']:>12d} per worker, {p['step_s'] * 1e3:.3f} ms each "
             f"({p.get('compute_source', '?')}); syncs "
             f"{p['syncs_global']} global / {p['syncs_block']} block ({p['allreduce_global']} / "
             f"{p['allreduce_block']}, {p['wire_bytes']:,} B)"),
             f"  {'wall time':<16}{p['wall_s']:>12.3f} s",
             row("compute", p["compute_s"]), row("comm intra", p["comm_intra_s"]), row("comm inter", p["comm_inter_s"]),
             row("waiting", p["wait_s"]), row("barriers", p["barrier_s"]), row("delays", p["delay_s"]),
             row(f"evaluation x{p['evals']}", p["eval_s"]),
             row(f"checkpoints x{p.get('checkpoints', 0)}", p.get("checkpoint_s", 0.0))]
    if p.get("hidden_s"):  # overlapped syncs and gradient buckets: communication beside computation, not in the wall
        how = [f"overlapped, tau={p['overlap_steps']}"] if p.get("overlap_steps") else []
        how += [f"{len(p['buckets'])} gradient buckets"] if p.get("buckets") else []
        lines.append(f"  {'comm hidden':<16}{p['hidden_s']:>12.3f} s  (beside the compute: {', '.join(how)})")
    lines += [f"  note: {n}" for n in p["notes"]]
    return "\n".join(lines)
