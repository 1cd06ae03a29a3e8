"""A machine file (train.machine/1) as the predictor reads it: its source, staleness, CPU share, links, jitter."""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from sim.errors import SimError
from sim.jitter import StepJitter
from sim.topology import Level, load_topology

__all__ = ["MACHINE_SCHEMA", "WAIT_FORMS", "LOAD_WARN", "CODE_FILES", "calibration_code_version", "machine_warnings",
           "machine_jitter", "scheduling_wait", "load_source", "cpu_share", "machine_level", "network_level"]

MACHINE_SCHEMA = "train.machine/1"
#: Shapes g(s) of the scheduling wait per message round once ranks outnumber the cores: lam * (1 - 1/s) * g(s).
WAIT_FORMS = ("const", "sqrt", "linear")
#: --predict warns when the background load now and the one the prediction assumes differ by more than this many
#: runnable processes (on a 2-core machine one extra process already slows every rank by up to 1.5x).
LOAD_WARN = 1.0
#: The code that measures a machine file and reads it: a machine file written by other versions of these is stale.
CODE_FILES = ("train/calibrate.py", "train/predict.py", "sim/calibrate.py", "sim/run.py", "sim/runconfig.py",
              "sim/trainrun.py", "sim/machinefile.py")


def calibration_code_version() -> str:
    """A short hash of CODE_FILES as they are now; `train calibrate` stores it in the machine file."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for rel in CODE_FILES:
        h.update(rel.encode())
        h.update((root / rel).read_bytes())
    return h.hexdigest()[:16]


def machine_warnings(m: dict[str, Any], spec: str, load_used: float, load_now: float | None,
                     extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """One line per reason to distrust a machine file now: other calibration code, the `extra` lines of the caller
    (the trainer adds its fit-quality check, train/fitcheck.py), or another background load."""
    out = []
    version, now = m.get("code_version"), calibration_code_version()
    if version != now:
        was = f"code {version}" if version else "code older than code versions (no code_version)"
        out.append(f"machine file {spec!r} was written by {was}, this is {now}: its figures may mean something else "
                   f"now; rerun python -m train calibrate")
    out += list(extra)
    if load_now is not None and abs(load_now - load_used) > LOAD_WARN:
        out.append(f"background load now {load_now:.2f} runnable processes, the prediction assumes {load_used:.2f} "
                   f"(differs by more than {LOAD_WARN:g}): pass --predict-load {load_now:.1f} or recalibrate")
    return out


def machine_jitter(m: dict[str, Any], notes: list[str]) -> StepJitter:
    """Step-time jitter from the machine file's measured single-rank steps (none in files that lack them)."""
    st = m.get("step", {})
    samples = [v for v in st.get("samples_s") or [] if isinstance(v, (int, float)) and v > 0]
    if len(samples) >= 2:
        jit = StepJitter(kind="empirical", samples=tuple(samples))
        notes.append(f"step times resampled from {len(samples)} measured single-rank steps (CV {jit.cv:.3g}): every "
                     f"sync waits for the slowest rank")
        return jit
    if st.get("cv"):
        return StepJitter(kind="lognormal", cv=float(st["cv"]))
    return StepJitter()


def scheduling_wait(s: float, lam: float, form: str) -> float:
    """Extra seconds per message round at CPU share s: lam * (1 - 1/s) * g(s), g = 1, sqrt(s) or s by `form`.

    1 - 1/s is the share of runnable processes that are off a core at any moment (0 while s <= 1): the chance
    that a message's partner must first be scheduled again.
    """
    if form not in WAIT_FORMS:
        raise SimError(f"scheduling wait form must be one of {', '.join(WAIT_FORMS)}, got {form!r}")
    if s <= 1.0:
        return 0.0
    return lam * (1.0 - 1.0 / s) * (1.0 if form == "const" else math.sqrt(s) if form == "sqrt" else s)


def load_source(spec: str) -> tuple[str, Any]:
    """("machine", dict) for a train.machine/1 file, else ("topology", Topology) for a sim file or preset."""
    path = Path(spec)
    if path.is_file():
        try:
            obj = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SimError(f"cannot read topology or machine file {spec!r}: {e}") from None
        if isinstance(obj, dict) and obj.get("schema") == MACHINE_SCHEMA:
            for key in ("background_load", "level", "level_share", "step", "cpu_count"):
                if key not in obj:
                    raise SimError(f"machine file {spec!r} lacks key {key!r}; "
                                   f"rewrite it with python -m train calibrate")
            return "machine", obj
    return "topology", load_topology(spec)


def cpu_share(K: int, cores: int, load: float = 0.0) -> float:
    """How many times slower each of K busy ranks runs than alone, on `cores` cores with `load` other runnable
    processes: max(cores, K + load) / cores."""
    if cores < 1 or load < 0:
        raise SimError(f"cores must be >= 1 and background load >= 0, got {cores} and {load}")
    return max(cores, K + load) / cores


def machine_level(m: dict[str, Any], s: float) -> Level:
    """The bench's level at CPU share s: alpha = alpha_bench s / s_2 + the scheduling wait; beta and gamma times
    s / s_2."""
    lv, r = m["level"], s / float(m["level_share"])
    bw = lv.get("bandwidth_GBps")
    lat = lv["latency_s"] * r + scheduling_wait(s, float(m.get("oversubscribed_latency_s", 0.0)),
                                                m.get("oversubscribed_form", "const"))
    return Level(name="intra", latency_s=lat, overhead_s=lv.get("overhead_s", 0.0) * r,
                 bandwidth_GBps=None if bw is None else bw / r, gamma_s_per_byte=lv.get("gamma_s_per_byte", 0.0) * r)


def network_level(spec: str) -> tuple[Level, float, str]:
    """The links between nodes: the inter level of the sim topology `spec` (a `sim calibrate --bench` fit of
    `comm bench --level inter` across the nodes) as it is, and its per-call overhead (the global sync's minus the
    block's). No scheduling wait is added: TCP moves a message into the receiver's socket buffer whether or not the
    receiving rank is on a core, unlike shared memory, where both ranks copy through a small buffer together."""
    try:
        net = load_topology(spec)
    except SimError as e:
        raise SimError(f"network: {e}") from None
    return net.inter, max(0.0, net.sync_overhead_s[0] - net.sync_overhead_s[1]), net.name
