"""Check a `train calibrate` machine file before it is used: types and ranges (one line naming file and key)."""
from __future__ import annotations

import math
from typing import Any

from sim.plausible import level_warnings, step_warnings, warn_once
from train.errors import TrainError

__all__ = ["REQUIRED", "check_machine"]

#: Keys every machine file has (train.machine/1); older files lacking one must be rewritten.
REQUIRED = ("background_load", "level", "level_share", "step", "cpu_count")
_FORMS = ("const", "sqrt", "linear")  # train.predict.WAIT_FORMS (kept here: predict imports this module)


def _bad(spec: str, key: str, v: Any, valid: str) -> TrainError:
    return TrainError(f"machine file {spec!r}: {key} must be {valid}, got {v!r}; rewrite it with "
                      f"python -m train calibrate")


def _number(spec: str, obj: dict[str, Any], key: str, where: str = "", *, positive: bool = False,
            optional: bool = False, none_ok: bool = False) -> None:
    name = f"{where}{key}"
    if key not in obj:
        if optional:
            return
        raise TrainError(f"machine file {spec!r} lacks key {name!r}; rewrite it with python -m train calibrate")
    v = obj[key]
    if v is None and none_ok:
        return
    ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and (v > 0 if positive
                                                                                          else v >= 0)
    if not ok:
        raise _bad(spec, name, v, "a finite number " + ("> 0" if positive else ">= 0"))


def check_machine(obj: dict[str, Any], spec: str) -> list[str]:
    """Raise TrainError on a missing or mistyped key; return (and log once) warnings on implausible values."""
    for key in REQUIRED:
        if key not in obj:
            raise TrainError(f"machine file {spec!r} lacks key {key!r}; rewrite it with python -m train calibrate")
    cores = obj["cpu_count"]
    if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
        raise _bad(spec, "cpu_count", cores, "an integer >= 1 (the machine's cores)")
    _number(spec, obj, "background_load")
    _number(spec, obj, "level_share", positive=True)
    _number(spec, obj, "oversubscribed_latency_s", optional=True)
    form = obj.get("oversubscribed_form", "const")
    if form not in _FORMS:
        raise _bad(spec, "oversubscribed_form", form, f"one of {', '.join(_FORMS)}")
    level, step = obj["level"], obj["step"]
    if not isinstance(level, dict):
        raise _bad(spec, "level", level, "a JSON object (latency_s, bandwidth_GBps, ...)")
    _number(spec, level, "latency_s", "level.")
    _number(spec, level, "bandwidth_GBps", "level.", positive=True, optional=True, none_ok=True)
    for key in ("overhead_s", "gamma_s_per_byte"):
        _number(spec, level, key, "level.", optional=True)
    if not isinstance(step, dict):
        raise _bad(spec, "step", step, "a JSON object (seconds_per_step, batch_size, ...)")
    for key in ("seconds_per_step", "gflops_per_sample"):
        _number(spec, step, key, "step.", positive=True)
    for key in ("eval_s_per_sample", "checkpoint_s_per_write", "cv"):
        _number(spec, step, key, "step.", optional=True)
    b = step.get("batch_size")
    if isinstance(b, bool) or not isinstance(b, int) or b < 1:
        raise _bad(spec, "step.batch_size", b, "an integer >= 1")
    samples = step.get("samples_s", [])
    if not isinstance(samples, list) or any(isinstance(s, bool) or not isinstance(s, (int, float)) or
                                            not math.isfinite(s) or s < 0 for s in samples):
        raise _bad(spec, "step.samples_s", samples if not isinstance(samples, list) else "[...]",
                   "a list of step times in seconds >= 0")
    where = f"machine file {spec!r}"
    warnings = level_warnings(where, "level", float(level["latency_s"]), level.get("bandwidth_GBps"))
    warnings += step_warnings(where, "step.seconds_per_step", [float(step["seconds_per_step"])])
    warn_once(warnings)
    return warnings
