"""The simulator's Python API: ``sim.simulate(...)`` from plain arguments or a RunConfig, returning a RunResult."""
from __future__ import annotations

import math
from typing import Any

from sim.compute import ModelSpec, get_model
from sim.errors import SimError
from sim.run import RunConfig, RunResult
from sim.run import simulate as _simulate
from sim.schedule import SyncSchedule, total_steps
from sim.stragglers import Stragglers
from sim.topology import Topology, load_topology

__all__ = ["MOMENTUM_VARIANTS", "run_config", "simulate"]

#: Accepted for symmetry with the trainer; none changes the communication (the same payload per sync): SlowMo,
#: global and hybrid momentum act on the averaged model locally, so the simulator charges them nothing extra.
MOMENTUM_VARIANTS = ("local", "global", "hybrid", "slowmo")


def run_config(*, topology: str | Topology, K: int, model: str | ModelSpec = "resnet20", B: int = 128,
               epochs: float | None = None, N: int | None = None, algorithm: str = "local", H: int = 1, Hb: int = 1,
               switch_step: int | None = None, warmup: str = "constant", warmup_steps: int = 0,
               schedule: SyncSchedule | None = None, momentum_variant: str = "local", allreduce: str = "auto",
               delay_global_s: float = 0.0, delay_block_s: float = 0.0, stragglers: Stragglers | None = None,
               compression: str = "none") -> RunConfig:
    """A RunConfig from plain values: a preset name or topology file, a model name, epochs (of the model's
    dataset; default 300) or N samples, and the schedule (or ``schedule=SyncSchedule(...)``). Post-local's
    switch defaults to the first learning-rate decay, step ceil(T / 2), as in the trainer."""
    topo = topology if isinstance(topology, Topology) else load_topology(topology)
    spec = model if isinstance(model, ModelSpec) else get_model(model)
    if momentum_variant not in MOMENTUM_VARIANTS:
        raise SimError(f"momentum_variant must be one of {', '.join(MOMENTUM_VARIANTS)}, got {momentum_variant!r}")
    if N is not None and epochs is not None:
        raise SimError(f"give at most one of epochs and N, got {epochs} and {N}")
    if N is None:
        epochs = 300.0 if epochs is None else epochs
        if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not (math.isfinite(epochs)
                                                                                   and epochs > 0):
            raise SimError(f"epochs must be a number > 0, got {epochs!r}")
        N = max(1, round(epochs * spec.train_samples))
    if schedule is None:
        if algorithm == "postlocal" and switch_step is None:
            switch_step = math.ceil(0.5 * total_steps(N, K, B))
        schedule = SyncSchedule(algorithm=algorithm, H=H, Hb=Hb, switch_step=switch_step or 0, warmup=warmup,
                                warmup_steps=warmup_steps)
    return RunConfig(topology=topo, model=spec, K=K, B=B, N=N, schedule=schedule, allreduce=allreduce,
                     delay_global_s=delay_global_s, delay_block_s=delay_block_s,
                     stragglers=stragglers if stragglers is not None else Stragglers(), compression=compression,
                     epochs=epochs)


def simulate(config: RunConfig | None = None, *, engine: str = "fast", **kwargs: Any) -> RunResult:
    """Simulate one run: ``simulate(run_config(...))``, or ``simulate(topology=..., K=..., ...)`` with
    run_config's arguments. ``engine``: "fast" (memoised collectives) or "event" (the SimPy reference)."""
    if config is None:
        config = run_config(**kwargs)
    elif kwargs:
        raise SimError(f"give a RunConfig or keyword arguments, not both (got {', '.join(sorted(kwargs))})")
    return _simulate(config, engine=engine)
