"""Measured step times of the trainer's models on this machine: medians of repeats interleaved across (model, batch)."""
# One step is what the trainer times and then syncs around: zero_grad, forward, loss, backward, and the SGD step
# (Nesterov momentum 0.9, weight decay 1e-4 except on BatchNorm), on synthetic inputs of the dataset's shape, with
# torch on OMP_NUM_THREADS threads (1 per rank in the trainer). Every point is measured `repeats` times; a repeat
# visits all points in turn (reversed every other time) so that a burst of load from other jobs spreads over all
# points instead of spoiling one; the median of each point's repeats is its step time. A step is timed in CPU seconds
# of this process (time.process_time), which other jobs sharing the cores do not inflate, as they do the wall time
# (also recorded); on one thread that is the step's time on a core of its own. The background load (runnable
# processes) is sampled before and after.
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from train.errors import TrainError

__all__ = ["PROFILE_SCHEMA", "CPU_HOLD", "measure_steps", "parse_points", "fit_profile", "profile_section",
           "cmd_profile_only"]

log = logging.getLogger(__name__)

PROFILE_SCHEMA = "train.compute_profile/1"


def parse_points(models: Sequence[str], batches: Sequence[int]) -> list[tuple[str, int]]:
    """Every (model, batch) pair, the model names checked as the trainer checks them."""
    from train.models import check_model_name

    if not models or not batches:
        raise TrainError(f"profile needs at least one model and one batch size, got {list(models)} and "
                         f"{list(batches)}")
    for m in models:
        check_model_name(m)
    for b in batches:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise TrainError(f"profile batch sizes must be integers >= 1, got {b!r}")
    return [(m, b) for m in models for b in batches]


def _stepper(name: str, batch: int, shape: tuple[int, ...], classes: int, seed: int) -> Callable[[], None]:
    import torch
    from torch.nn import functional as F

    from train.models import build_model, no_decay_names

    torch.manual_seed(seed)
    model = build_model(name, input_shape=shape, num_classes=classes)
    skip = no_decay_names(model)
    named = list(model.named_parameters())
    groups = [{"params": [p for n, p in named if n not in skip], "weight_decay": 1e-4},
              {"params": [p for n, p in named if n in skip], "weight_decay": 0.0}]
    opt = torch.optim.SGD([g for g in groups if g["params"]], lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(batch, *shape)
    y = torch.randint(0, classes, (batch,))

    def step() -> None:
        opt.zero_grad(set_to_none=False)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return step


def measure_steps(points: Sequence[tuple[str, int]], *, repeats: int = 5, warmup: int = 2,
                  input_shape: tuple[int, ...] = (3, 32, 32), classes: int = 10, seed: int = 0,
                  progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time one step of every (model, batch) `repeats` times, interleaved; returns the profile (PROFILE_SCHEMA)."""
    import torch

    from train.calibrate import background_load

    if repeats < 1 or warmup < 0:
        raise TrainError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    threads = int(os.environ.get("OMP_NUM_THREADS", "1") or 1)
    torch.set_num_threads(threads)
    load_before, avg_before = background_load(), os.getloadavg()
    t_start = time.time()
    steps = [_stepper(m, b, tuple(input_shape), classes, seed) for m, b in points]
    for fn in steps:
        for _ in range(warmup):
            fn()
    samples: list[list[float]] = [[] for _ in points]
    walls: list[list[float]] = [[] for _ in points]
    for r in range(repeats):
        order = range(len(points)) if r % 2 == 0 else range(len(points) - 1, -1, -1)
        for i in order:
            w0, c0 = time.perf_counter(), time.process_time()
            steps[i]()
            samples[i].append(time.process_time() - c0)
            walls[i].append(time.perf_counter() - w0)
        if progress:
            progress(f"repeat {r + 1}/{repeats} done")
    rows = [{"model": m, "batch": b, "seconds": statistics.median(s), "cpu_samples_s": s,
             "spread": (max(s) - min(s)) / statistics.median(s), "wall_median_s": statistics.median(w),
             "wall_samples_s": w} for (m, b), s, w in zip(points, samples, walls)]
    return {"schema": PROFILE_SCHEMA, "timing": "cpu seconds of this process per step (time.process_time)",
            "threads": threads, "input_shape": list(input_shape), "classes": classes,
            "repeats": repeats, "warmup": warmup, "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "background_load_before": load_before, "background_load_after": background_load(),
            "load_avg_before": list(avg_before), "load_avg_after": list(os.getloadavg()),
            "measure_s": time.time() - t_start, "points": rows}


#: The CPU fit holds the per-sample cost at 0: the profiled steps read in-memory inputs (no data pipeline to charge).
CPU_HOLD = {"sample_s": 0.0}


def fit_profile(prof: dict[str, Any], device: str = "cpu") -> dict[str, Any]:
    """The layer model fitted to a profile: free peak FLOP/s, memory bytes/s, per-kernel and per-step costs (the
    per-sample cost held at 0); returns {"constants", "rows", "notes", "compute"} with "compute" the sim topology's
    "layers" compute object (the measured steps kept for their models)."""
    import dataclasses

    from sim.errors import SimError
    from sim.stepfit import fit_steps, layers_compute, read_steps_obj

    try:
        rows = read_steps_obj(prof, "profile")
        if not rows:
            raise SimError("the profile has no measured steps")
        fit = fit_steps(rows, spec=None, efficiency=None, hold=dict(CPU_HOLD))
    except SimError as e:
        raise TrainError(f"the compute profile cannot be fitted: {e}") from None
    notes = list(fit.notes)
    if len({m for m, _, _ in rows}) < 2:
        notes.append("one model profiled: its FLOP and byte rates, and its per-kernel and per-step costs, are not "
                     "told apart; profile two models of different width (e.g. resnet20,wideresnet16-4) to predict "
                     "others")
    how = (f"`python -m train calibrate --profile-models {','.join(sorted({m for m, _, _ in rows}))}`: "
           f"{len(rows)} measured steps ({prof.get('timing', 'seconds per step')}); fitted {', '.join(fit.free)}; "
           f"held sample_s = 0 (no data pipeline in the profiled steps); median |error| on the fitted points "
           f"{100 * fit.median_abs_error:.2g} %")
    compute = layers_compute(fit, rows, device=device, spec=None, how=how)
    return {"constants": dataclasses.asdict(fit.constants), "rows": fit.rows, "notes": notes,
            "median_abs_error": fit.median_abs_error, "compute": compute.to_json()}


def profile_section(models: Sequence[str], batches: Sequence[int], repeats: int,
                    progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure the (model, batch) grid and fit the layer model to it: the machine file's "compute_profile"."""
    prof = measure_steps(parse_points(models, batches), repeats=repeats, progress=progress)
    prof["fit"] = fit_profile(prof)
    return prof


def cmd_profile_only(ns: argparse.Namespace) -> int:
    """--profile-only: measure and fit the compute profile alone, write it (train.compute_profile/1)."""
    from train.metrics import write_json_atomic
    from train.predict import calibration_code_version

    models = ns.profile_models or [ns.model or "resnet20"]
    prof = profile_section(models, ns.profile_batches, ns.profile_repeats,
                           None if ns.json else lambda s: log.info("profile: %s", s))
    prof.update(name=ns.name, code_version=calibration_code_version(),
                created_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    write_json_atomic(ns.out, prof)
    if ns.json:
        print(json.dumps(prof, indent=2))
        return 0
    c = prof["fit"]["constants"]
    print(f"compute profile: {len(prof['points'])} points, {prof['repeats']} repeats each, load average "
          f"{prof['load_avg_before'][0]:.2f} before, {prof['load_avg_after'][0]:.2f} after")
    print(f"layer model: {c['peak_flops'] / 1e9:.4g} GFLOP/s, {c['mem_bps'] / 1e9:.4g} GB/s, "
          f"{1e6 * c['launch_s']:.3g} us per kernel, {1e3 * c['step_s']:.3g} ms per step")
    for r in prof["fit"]["rows"]:
        print(f"  {r['model']} B={r['batch']}: measured {1e3 * r['seconds']:.2f} ms, fit {1e3 * r['fit_s']:.2f} ms "
              f"({100 * r['rel_error']:+.1f} %)")
    for n in prof["fit"]["notes"]:
        print(f"  note: {n}")
    print(f"wrote {ns.out}")
    return 0
