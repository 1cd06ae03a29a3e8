"""What the simulator runs and what it reports: a run's configuration (RunConfig), its result and timeline."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim.collectives import ALL_ALGORITHMS, FLAT_ALGORITHMS
from sim.compute import ModelSpec
from sim.costs import auto_algorithm, eq6
from sim.cpushare import SharedCPU
from sim.errors import SimError
from sim.jitter import StepJitter
from sim.overlap import check_buckets, check_overlap_steps
from sim.schedule import SyncSchedule, total_steps
from sim.stragglers import Stragglers
from sim.topology import Topology

__all__ = ["ALLREDUCE_CHOICES", "COMPRESSIONS", "SCHEMA", "RunConfig", "RunResult", "Timeline", "resolve_allreduce"]

ALLREDUCE_CHOICES = ("auto", "paper") + ALL_ALGORITHMS
#: Sign compression (SPEC section 2): 1 bit per parameter, gathered with a recursive-doubling
#: all-gather; "ef-sign" also sends its float32 scale ||p||_1 / d.
COMPRESSIONS = ("none", "sign", "ef-sign")
SCHEMA = "sim.run/1"


def _nonneg(name: str, v: object) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise SimError(f"{name} must be a finite number >= 0, got {v!r}")


@dataclass(kw_only=True)
class RunConfig:
    """One simulated run: K workers of `topology`, training `model` for N samples with batch B per worker."""

    topology: Topology
    model: ModelSpec
    K: int
    B: int
    N: int
    schedule: SyncSchedule
    allreduce: str = "auto"
    delay_global_s: float = 0.0
    delay_block_s: float = 0.0
    stragglers: Stragglers = field(default_factory=Stragglers)
    jitter: StepJitter = field(default_factory=StepJitter)
    compression: str = "none"
    epochs: float | None = None  # for the record only; N is what counts
    cpu: SharedCPU | None = None  # ranks sharing one machine's cores; None: each worker has its own device
    leader_allreduce: str = "auto"  # the hierarchical all-reduce's leader algorithm ("auto": MPICH's rule)
    block_allreduce: str | None = None  # the block syncs' algorithm; None: as resolve_allreduce picks it
    # hiding communication (sim/overlap.py; fast engine only): gradient buckets of mini-batch steps as (bytes, ready
    # fraction of the step), and tau of overlapped local-SGD syncs (0: they block)
    buckets: tuple[tuple[float, float], ...] = ()
    overlap_steps: int = 0

    def __post_init__(self) -> None:
        self.nodes_used = self.topology.check_workers(self.K)
        for name in ("B", "N"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise SimError(f"{name} must be an integer >= 1, got {v!r}")
        if self.allreduce not in ALLREDUCE_CHOICES:
            raise SimError(f"allreduce must be one of {', '.join(ALLREDUCE_CHOICES)}, got {self.allreduce!r}")
        if self.leader_allreduce not in ("auto",) + FLAT_ALGORITHMS:
            raise SimError(f"leader_allreduce must be one of auto, {', '.join(FLAT_ALGORITHMS)}, "
                           f"got {self.leader_allreduce!r}")
        if self.block_allreduce is not None and self.block_allreduce not in FLAT_ALGORITHMS:
            raise SimError(f"block_allreduce must be one of {', '.join(FLAT_ALGORITHMS)}, got {self.block_allreduce!r}")
        _nonneg("delay_global_s", self.delay_global_s)
        _nonneg("delay_block_s", self.delay_block_s)
        self.stragglers.check_workers(self.K)
        if self.compression not in COMPRESSIONS:
            raise SimError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {self.compression!r}")
        if self.compression != "none" and self.allreduce == "paper":
            raise SimError(f"compression {self.compression!r} cannot be combined with allreduce 'paper' (eq. 6 mode)")
        self.buckets = check_buckets(self.buckets)
        check_overlap_steps(self.overlap_steps)
        if (self.buckets or self.overlap_steps) and (self.compression != "none" or self.allreduce == "paper"):
            raise SimError("buckets and overlap_steps model our all-reduces: they cannot go with compression or "
                           "allreduce 'paper'")
        if self.overlap_steps > self.schedule.H:
            raise SimError(f"overlap_steps must be <= H = {self.schedule.H}, got {self.overlap_steps}")

    @property
    def wire_bytes(self) -> int:
        """Bytes each worker contributes to a sync: the model, or its packed signs (+ a float32 scale)."""
        if self.compression == "none":
            return self.model.bytes
        return -(-self.model.params // 8) + (4 if self.compression == "ef-sign" else 0)

    def algorithms(self) -> tuple[str, str]:
        """(global, block) collective: all-reduces of the model, or all-gathers of compressed changes."""
        if self.compression != "none":
            return "allgather", "allgather"
        glob, block = resolve_allreduce(self.allreduce, self.nodes_used, self.topology.gpus_per_node, self.model.bytes)
        return glob, block if self.block_allreduce is None or block == "paper" else self.block_allreduce

    @property
    def total_steps(self) -> int:
        return total_steps(self.N, self.K, self.B)


def resolve_allreduce(choice: str, nodes: int, b: int, nbytes: float) -> tuple[str, str]:
    """(global algorithm over all K ranks, block algorithm over one node's b ranks)."""
    if choice == "paper":
        return "paper", "paper"
    block = auto_algorithm(nbytes) if choice in ("auto", "hierarchical") else choice
    if choice in ("auto", "hierarchical"):
        glob = "hierarchical" if nodes > 1 and b > 1 else auto_algorithm(nbytes)
        return glob, block
    if choice not in FLAT_ALGORITHMS + ("rail",):
        raise SimError(f"allreduce must be one of {', '.join(ALLREDUCE_CHOICES)}, got {choice!r}")
    return choice, block


@dataclass(kw_only=True, frozen=True)
class Timeline:
    """The run's clock at every sync: after step ``steps[i]`` the last worker finished computing at ``ready_s[i]``
    and the sync (with its delay and overhead) ended at ``end_s[i]`` for the last worker of it (seconds from the
    start, increasing). ``levels[i]`` is "global" or "block". The last step of a run always syncs."""

    steps: np.ndarray
    levels: tuple[str, ...]
    ready_s: np.ndarray
    end_s: np.ndarray

    def time_after(self, steps: np.ndarray | list[int]) -> np.ndarray:
        """Seconds from the start until 0-based step ``steps`` (each) has finished, with its sync if it has one.
        Inside a round of local steps the compute time is shared out evenly over the round's steps."""
        t = np.asarray(steps, dtype=np.int64)
        if t.size and (t.min() < 0 or t.max() > self.steps[-1]):
            raise SimError(f"steps must be in 0..{int(self.steps[-1])}, got {int(t.min())}..{int(t.max())}")
        i = np.searchsorted(self.steps, t)               # the first sync at or after each step
        prev_step = np.where(i > 0, self.steps[np.maximum(i - 1, 0)], -1)
        prev_end = np.where(i > 0, self.end_s[np.maximum(i - 1, 0)], 0.0)
        frac = (t - prev_step) / (self.steps[i] - prev_step)
        inside = prev_end + frac * (self.ready_s[i] - prev_end)
        return np.where(self.steps[i] == t, self.end_s[i], inside)

    def syncs_through(self, step: int) -> dict[str, int]:
        """Syncs of each level after steps 0..``step``."""
        n = int(np.searchsorted(self.steps, step, side="right"))
        glob = sum(1 for lvl in self.levels[:n] if lvl == "global")
        return {"global": glob, "block": n - glob}


@dataclass(kw_only=True)
class RunResult:
    """Per-worker means of the time split, counts and the comparison figures of one run."""

    config: RunConfig
    engine: str
    algorithms: tuple[str, str]
    wall_s: float
    compute_s: float
    comm_intra_s: float
    comm_inter_s: float
    wait_s: float
    delay_s: float
    syncs_block: int
    syncs_global: int
    bytes_intra: float
    bytes_inter: float
    comm_accounted_s: float
    sim_seconds: float
    sim_events: int
    overhead_s: float = 0.0
    hidden_s: float = 0.0   # communication that ran beside computation (mean per worker; not in comm_*_s)
    #: (global, block): seconds of one sync's collective alone (the slowest rank), and of its fitted overhead
    collective_s: tuple[float, float] = (0.0, 0.0)
    overhead_per_sync_s: tuple[float, float] = (0.0, 0.0)
    timeline: Timeline | None = None  # the clock at every sync (not part of to_json: one entry per sync)

    def to_json(self) -> dict[str, Any]:
        c = self.config
        t, s = c.topology, c.schedule
        n = c.wire_bytes
        C1, C2 = t.intra.message_s(n), t.inter.message_s(n)
        e6 = eq6(K=c.K, servers=c.nodes_used, N=c.N, B=c.B, H=s.H, Hb=s.Hb, C1=C1, C2=C2)
        single = total_steps(c.N, 1, c.B) * t.compute.seconds(c.model, c.B)
        source, note = t.compute.provenance(c.model, c.B)
        return {
            "schema": SCHEMA, "topology": t.name, "nodes": c.nodes_used, "gpus_per_node": t.gpus_per_node,
            "K": c.K, "model": c.model.name, "model_bytes": c.model.bytes,
            "compression": c.compression, "wire_bytes": n, "B": c.B, "N": c.N, "epochs": c.epochs,
            "algorithm": s.algorithm, "H": s.H, "Hb": s.Hb, "switch_step": s.switch_step,
            "warmup": s.warmup, "warmup_steps": s.warmup_steps, "total_steps": c.total_steps,
            "allreduce": c.allreduce, "allreduce_global": self.algorithms[0],
            "allreduce_block": self.algorithms[1], "delay_global_s": c.delay_global_s,
            "delay_block_s": c.delay_block_s, "stragglers": c.stragglers.to_json(), "jitter": c.jitter.to_json(),
            "link_sharing": t.link_sharing, "sync_overhead_global_s": self.overhead_per_sync_s[0],
            "sync_overhead_block_s": self.overhead_per_sync_s[1],
            "sync_collective_factor_global": t.sync_collective_factor[0],
            "sync_collective_factor_block": t.sync_collective_factor[1],
            "sync_global_s": self.collective_s[0] + self.overhead_per_sync_s[0],
            "compute_source": source, "compute_note": note,
            "step_s": t.compute.seconds(c.model, c.B), "engine": self.engine,
            "wall_s": self.wall_s, "compute_s": self.compute_s, "comm_intra_s": self.comm_intra_s,
            "comm_inter_s": self.comm_inter_s, "wait_s": self.wait_s, "delay_s": self.delay_s,
            "overhead_s": self.overhead_s,
            "syncs_block": self.syncs_block, "syncs_global": self.syncs_global,
            "bytes_intra": self.bytes_intra, "bytes_inter": self.bytes_inter,
            "comm_accounted_s": self.comm_accounted_s, "eq6_s": e6, "eq6_C1_s": C1, "eq6_C2_s": C2,
            "single_worker_s": single, "speedup": single / self.wall_s if self.wall_s > 0 else None,
            "sim_seconds": self.sim_seconds, "sim_events": self.sim_events,
            "buckets": [list(b) for b in c.buckets], "overlap_steps": c.overlap_steps, "hidden_s": self.hidden_s,
        }
