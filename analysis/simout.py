"""Records of `sim run --json` / `sim whatif --out` read into flat configurations and figures."""
from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.errors import InputError
from analysis.files import Record, opt, opt_num, read_json, read_jsonl

__all__ = ["SimPoint", "CONFIG_KEYS", "load_sim", "sim_point", "select", "group_lines", "label_of"]

# Configuration keys identifying a simulated setup (docs/schema-sim.md, "sim.run/1"), in legend order.
CONFIG_KEYS: dict[str, tuple[str, ...]] = {
    "topology": ("topology",),
    "algorithm": ("algorithm",),
    "allreduce": ("allreduce",),
    "model": ("model",),
    "K": ("K",),
    "gpus_per_node": ("gpus_per_node",),
    "B": ("B",),
    "N": ("N",),
    "H": ("H",),
    "Hb": ("Hb",),
    "switch_step": ("switch_step",),
    "warmup": ("warmup",),
    "warmup_steps": ("warmup_steps",),
    "delay_global_s": ("delay_global_s",),
    "delay_block_s": ("delay_block_s",),
    "stragglers": ("stragglers",),
}
_FIGURES: dict[str, tuple[str, ...]] = {
    "wall_s": ("wall_s",),
    "comm_intra_s": ("comm_intra_s",),
    "comm_inter_s": ("comm_inter_s",),
    "comm_accounted_s": ("comm_accounted_s",),
    "eq6": ("eq6_s", "eq6"),
    "speedup": ("speedup",),
    "single_worker_s": ("single_worker_s",),
}
_SYMBOLS = {"Hb": "Hᵇ", "gpus_per_node": "GPUs/node", "delay_global_s": "global delay s",
            "delay_block_s": "block delay s", "switch_step": "switch step", "warmup_steps": "warm-up steps"}


def _stragglers(value: Any) -> str | None:
    """A straggler setting as short text; None when there are none."""
    if not isinstance(value, dict):
        return None if value in (None, "none") else str(value)
    if value.get("kind", "none") == "none":
        return None
    return "stragglers " + " ".join(f"{k}={v}" for k, v in sorted(value.items()))


@dataclass(kw_only=True, frozen=True)
class SimPoint:
    """One simulated configuration with the figures the plots use (seconds)."""

    config: tuple[tuple[str, Any], ...]
    wall_s: float | None
    comm_s: float | None
    comm_accounted_s: float | None
    eq6_s: float | None
    speedup: float | None
    source: str

    def get(self, key: str) -> Any:
        return dict(self.config).get(key)


def sim_point(rec: Record) -> SimPoint:
    """Flatten one run object: communication = comm_intra_s + comm_inter_s (per-worker means, s).

    ``speedup`` is the simulator's own figure, else single_worker_s / wall_s when both are there.
    """
    config = []
    for key, names in CONFIG_KEYS.items():
        value = opt(rec, names)
        if key == "stragglers":
            value = _stragglers(value)
        elif isinstance(value, (dict, list)):
            value = json.dumps(value, sort_keys=True)
        config.append((key, value))
    intra = opt_num(rec, _FIGURES["comm_intra_s"])
    inter = opt_num(rec, _FIGURES["comm_inter_s"])
    comm = None if intra is None and inter is None else (intra or 0.0) + (inter or 0.0)
    wall = opt_num(rec, _FIGURES["wall_s"])
    speedup = opt_num(rec, _FIGURES["speedup"])
    single = opt_num(rec, _FIGURES["single_worker_s"])
    if speedup is None and single is not None and wall:
        speedup = single / wall
    return SimPoint(config=tuple(config), wall_s=wall, comm_s=comm,
                    comm_accounted_s=opt_num(rec, _FIGURES["comm_accounted_s"]),
                    eq6_s=opt_num(rec, _FIGURES["eq6"]), speedup=speedup, source=rec.source)


def load_sim(paths: Iterable[str | Path]) -> list[SimPoint]:
    """Points from `sim run --json` files (one object) and `sim whatif` JSONL files (one per line)."""
    points: list[SimPoint] = []
    for path in paths:
        try:
            records = read_jsonl(path)
        except InputError as first:
            try:  # a pretty-printed `sim run --json` object spans several lines
                records = [read_json(path)]
            except InputError:
                raise first from None
        for rec in records:
            pt = sim_point(rec)
            for key in ("K", "H"):
                if pt.get(key) is None:
                    raise InputError(f"{rec.source}: missing key {key!r} (not a `sim run` object?)")
            points.append(pt)
    if not points:
        raise InputError("no simulator records given (expected `sim run --json` or `sim whatif` output)")
    return points


def select(points: Sequence[SimPoint], *, dedupe_local: bool = True, **where: Any) -> list[SimPoint]:
    """The points whose configuration matches every given key (None values are ignored).

    Hierarchical runs at H^b = 1 are plain local SGD (SPEC section 2); when the input also holds
    "local" runs they would draw the same line twice, so with ``dedupe_local`` they are dropped.
    """
    want = {k: v for k, v in where.items() if v is not None}
    for key, value in want.items():
        if key not in CONFIG_KEYS:
            raise InputError(f"cannot select on {key!r}; known keys: {', '.join(CONFIG_KEYS)}")
        if not any(str(p.get(key)) == str(value) for p in points):
            seen = sorted({str(p.get(key)) for p in points})
            raise InputError(f"{key} must be one of {', '.join(seen)} (the simulated values), got {value!r}")
    out = [p for p in points if all(str(p.get(k)) == str(v) for k, v in want.items())]
    if dedupe_local and any(p.get("algorithm") == "local" for p in out):
        out = [p for p in out if not (p.get("algorithm") == "hierarchical" and p.get("Hb") == 1)]
    return out


def _order(value: Any) -> tuple[int, float, str]:
    """Sort numbers numerically, then everything else by text (None first)."""
    if value is None:
        return (0, 0.0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, float(value), "")
    return (2, 0.0, str(value))


def label_of(config: dict[str, Any], keys: Sequence[str]) -> str:
    """Legend text from the configuration keys that vary between lines."""
    parts = []
    for k in keys:
        v = config.get(k)
        if v is None:
            continue
        text = k in ("topology", "algorithm", "allreduce", "model", "warmup", "stragglers")
        parts.append(str(v) if text else f"{_SYMBOLS.get(k, k)}={v}")
    return ", ".join(parts) or "simulated"


def group_lines(points: Sequence[SimPoint], x: str, y: str, *,
                where: dict[str, Any] | None = None) -> list[tuple[str, list[float], list[float], list[SimPoint]]]:
    """Group points into lines along ``x``: one line per combination of the other configuration keys.

    Points not matching ``where`` are dropped; points whose ``y`` is missing are dropped. A repeated x
    within one line is an error (the input mixes runs that differ in a key we do not know).
    Returns (label, xs, ys, points) sorted by x, labelled with only the keys that vary between lines.
    """
    where = where or {}
    lines: dict[tuple, dict[float, SimPoint]] = defaultdict(dict)
    for pt in points:
        cfg = dict(pt.config)
        if any(cfg.get(k) != v for k, v in where.items()):
            continue
        yv = getattr(pt, y)
        if cfg.get(x) is None or yv is None or not math.isfinite(yv):
            continue
        key = tuple((k, v) for k, v in pt.config if k != x)
        xv = float(cfg[x])
        if xv in lines[key]:
            raise InputError(f"{pt.source}: two simulator records for the same configuration at {x}={cfg[x]} "
                             f"(also {lines[key][xv].source})")
        lines[key][xv] = pt
    varying = [k for k in CONFIG_KEYS if k != x and len({dict(key).get(k) for key in lines}) > 1]
    if "topology" in varying and "gpus_per_node" in varying:
        varying.remove("gpus_per_node")  # a topology fixes its GPUs per node
    out = []
    for key in sorted(lines, key=lambda kk: tuple(_order(v) for _, v in kk)):
        xs = sorted(lines[key])
        out.append((label_of(dict(key), varying), xs, [getattr(lines[key][v], y) for v in xs],
                    [lines[key][v] for v in xs]))
    return out
