"""`sim calibrate --steps`: a device's layer-model constants fitted to measured step times, written into a topology."""
# Input: step tables (CSV or a JSON list of rows with model, batch, seconds_per_iter, optional source) or the
# profile `python -m train calibrate --profile-only` writes (train.compute_profile/1). The fit is
# sim/layermodel.fit_device: with --device-spec (vendor peak TFLOP/s and memory GB/s) one efficiency scales both,
# else both rates are free; --efficiency holds it (e.g. taken from another device with --efficiency-from); --hold
# fixes any of step_s, sample_s, launch_s. The written topology is --base with a "layers" compute model whose
# `measured` keeps the measured models' own step times (used as they are for those models) and whose `fit` says
# how the constants were obtained.
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from sim.compute import ComputeModel
from sim.errors import SimError
from sim.layermodel import LINEAR_TERMS, DeviceFit, StepPoint, fit_device
from sim.layers import canonical_name, layer_table
from sim.topology import Topology, load_topology, save_topology

__all__ = ["read_steps", "fit_steps", "layers_compute", "cmd_calibrate_steps", "parse_hold", "parse_spec"]

PROFILE_SCHEMA = "train.compute_profile/1"


def _row(r: dict[str, Any], where: str) -> tuple[str, int, float]:
    for key in ("model", "batch", "seconds_per_iter"):
        if r.get(key) in (None, ""):
            raise SimError(f"{where}: missing column {key!r} (need model, batch, seconds_per_iter)")
    try:
        b, t = float(r["batch"]), float(r["seconds_per_iter"])
    except (TypeError, ValueError):
        raise SimError(f"{where}: batch and seconds_per_iter must be numbers, got {r['batch']!r} and "
                       f"{r['seconds_per_iter']!r}") from None
    if not (math.isfinite(b) and b == int(b) and b >= 1):
        raise SimError(f"{where}: batch must be an integer >= 1, got {r['batch']!r}")
    if not (math.isfinite(t) and t > 0):
        raise SimError(f"{where}: seconds_per_iter must be a number > 0, got {r['seconds_per_iter']!r}")
    name = canonical_name(str(r["model"]))
    layer_table(name)  # a model the layer model knows
    return name, int(b), t


def read_steps(paths: list[str]) -> list[tuple[str, int, float]]:
    """(model, batch, seconds) rows from CSV tables, JSON lists of rows or train compute profiles."""
    rows: list[tuple[str, int, float]] = []
    for spec in paths:
        path = Path(spec)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise SimError(f"cannot read step table {spec!r}: {e}") from None
        if path.suffix == ".csv":
            rows += [_row(r, f"{spec!r} row {i}") for i, r in enumerate(csv.DictReader(text.splitlines()), 1)]
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise SimError(f"step table {spec!r} is neither CSV (.csv) nor valid JSON: {e.msg}") from None
        if isinstance(obj, dict) and obj.get("schema") == PROFILE_SCHEMA:
            obj = [{"model": p.get("model"), "batch": p.get("batch"), "seconds_per_iter": p.get("seconds")}
                   for p in obj.get("points") or []]
        elif isinstance(obj, dict) and isinstance(obj.get("compute_profile"), dict):  # a machine file
            return read_steps_obj(obj["compute_profile"], spec)
        if not isinstance(obj, list) or not all(isinstance(r, dict) for r in obj):
            raise SimError(f"step table {spec!r} must be a CSV, a JSON list of rows or a {PROFILE_SCHEMA} profile")
        rows += [_row(r, f"{spec!r} row {i}") for i, r in enumerate(obj, 1)]
    if not rows:
        raise SimError(f"no measured steps in {', '.join(paths)}")
    return rows


def read_steps_obj(prof: dict[str, Any], where: str) -> list[tuple[str, int, float]]:
    """Rows of a profile object (as embedded in a machine file)."""
    pts = prof.get("points") or []
    return [_row({"model": p.get("model"), "batch": p.get("batch"), "seconds_per_iter": p.get("seconds")},
                 f"{where!r} point {i}") for i, p in enumerate(pts, 1)]


def parse_hold(text: str | None) -> dict[str, float]:
    """--hold NAME=VALUE[,NAME=VALUE]: constants of the layer model held at a value."""
    out: dict[str, float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, _, val = part.partition("=")
        name = name.strip()
        if name not in LINEAR_TERMS:
            raise SimError(f"hold must name {', '.join(LINEAR_TERMS)} as NAME=VALUE, got {part!r}")
        try:
            v = float(val)
        except ValueError:
            v = -1.0
        if not (math.isfinite(v) and v >= 0):
            raise SimError(f"hold {name} must be a number >= 0, got {val!r}")
        out[name] = v
    return out


def parse_spec(text: str | None) -> tuple[float, float] | None:
    """--device-spec TFLOPS,GBPS: the vendor's peak FP32 TFLOP/s and memory bandwidth in GB/s."""
    if not text:
        return None
    parts = text.split(",")
    try:
        vals = [float(x) for x in parts]
    except ValueError:
        vals = []
    if len(vals) != 2 or not all(math.isfinite(v) and v > 0 for v in vals):
        raise SimError(f"device-spec must be TFLOPS,GBPS (two numbers > 0, e.g. 15.7,900), got {text!r}")
    return vals[0], vals[1]


def fit_steps(rows: list[tuple[str, int, float]], *, spec: tuple[float, float] | None, efficiency: float | None,
              hold: dict[str, float]) -> DeviceFit:
    """The device fit of the rows (spec in TFLOP/s and GB/s)."""
    points = [StepPoint(layer_table(m), b, t) for m, b, t in rows]
    if efficiency is not None:
        if spec is None:
            raise SimError("efficiency needs --device-spec (the rates it scales)")
        if not (math.isfinite(efficiency) and efficiency > 0):
            raise SimError(f"efficiency must be a number > 0, got {efficiency!r}")
        return fit_device(points, rates=(spec[0] * 1e12 * efficiency, spec[1] * 1e9 * efficiency), fixed=hold)
    return fit_device(points, spec=(spec[0] * 1e12, spec[1] * 1e9) if spec else None, fixed=hold)


def layers_compute(fit: DeviceFit, rows: list[tuple[str, int, float]], *, device: str,
                   spec: tuple[float, float] | None, how: str) -> ComputeModel:
    """The "layers" compute model of a fit, keeping the measured models' own step times."""
    c = fit.constants
    tflops, gbps = spec if spec else (c.peak_flops / 1e12, c.mem_bps / 1e9)
    eff = c.peak_flops / (tflops * 1e12)
    measured: dict[str, dict[int, float]] = {}
    for m, b, t in rows:
        measured.setdefault(m, {})[b] = t
    meas = {m: {"batch": sorted(d), "seconds_per_iter": [d[b] for b in sorted(d)]} for m, d in measured.items()}
    return ComputeModel(kind="layers", device=device, tflops=tflops, mem_GBps=gbps, efficiency=eff,
                        launch_s=c.launch_s, sample_s=c.sample_s, step_s=c.step_s, measured=meas, fit=how)


def _report(fit: DeviceFit, topo: Topology, out: str | None, as_json: bool) -> int:
    c = fit.constants
    if as_json:
        print(json.dumps({"steps_fit": {"constants": dataclasses.asdict(c), "free": list(fit.free),
                                        "rows": fit.rows, "notes": fit.notes,
                                        "median_abs_error": fit.median_abs_error},
                          "compute": topo.compute.to_json(), "out": out}))
        return 0
    print(f"{topo.compute.device}: peak {c.peak_flops / 1e12:.4g} TFLOP/s, memory {c.mem_bps / 1e9:.4g} GB/s "
          f"(efficiency {topo.compute.efficiency:.4g} of {topo.compute.tflops:g} TFLOP/s, "
          f"{topo.compute.mem_GBps:g} GB/s), {1e6 * c.launch_s:.4g} us per kernel, {1e6 * c.sample_s:.4g} us per "
          f"sample, {1e3 * c.step_s:.4g} ms per step; fitted: {', '.join(fit.free) or 'nothing'}")
    for r in fit.rows:
        print(f"  {r['model']} B={r['batch']}: measured {r['seconds']:.4g} s, fit {r['fit_s']:.4g} s "
              f"({100 * r['rel_error']:+.1f} %)")
    for note in fit.notes:
        print(f"  note: {note}")
    if out:
        print(f"wrote topology {out}")
    return 0


def cmd_calibrate_steps(a: argparse.Namespace) -> int:
    """`sim calibrate --steps FILE...`: fit the device's layer-model constants; write --base with that compute."""
    rows = read_steps(a.steps)
    spec = parse_spec(a.device_spec)
    eff = a.efficiency
    src = ""
    if a.efficiency_from:
        other = load_topology(a.efficiency_from).compute
        if other.kind != "layers":
            raise SimError(f"efficiency-from {a.efficiency_from!r} has a {other.kind!r} compute model, not a layer "
                           f"model with an efficiency")
        eff, src = other.efficiency, f" (held: {other.device}'s, from {a.efficiency_from})"
    hold = parse_hold(a.hold)
    fit = fit_steps(rows, spec=spec, efficiency=eff, hold=hold)
    base = load_topology(a.base)
    device = a.device or base.compute.device
    held = ", ".join(f"{k} = {v:g}" for k, v in hold.items())
    how = (f"`sim calibrate --steps {' '.join(a.steps)}`: {len(rows)} measured steps; "
           + (f"vendor spec {spec[0]:g} TFLOP/s, {spec[1]:g} GB/s " if spec else "rates fitted freely ")
           + (f"x efficiency {eff:.4g}{src}" if eff is not None else "x a fitted efficiency" if spec else "")
           + f"; fitted {', '.join(fit.free) or 'nothing'}" + (f"; held {held}" if held else "")
           + f"; median |error| on the fitted points {100 * fit.median_abs_error:.2g} %")
    compute = layers_compute(fit, rows, device=device, spec=spec, how=how)
    head = base.description.split(" Compute: layer model of ")[0]
    topo = dataclasses.replace(base, name=a.name, compute=compute,
                               description=(f"{head} Compute: layer model of {device} ({how}); "
                                            f"measured for {', '.join(sorted({m for m, _, _ in rows}))}, "
                                            f"MODELLED for other models."))
    if a.out:
        save_topology(topo, a.out)
    return _report(fit, topo, a.out, a.json)
