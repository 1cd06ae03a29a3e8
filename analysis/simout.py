"""Records of `sim run --json` / `sim whatif --out` read into flat configurations and figures."""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.errors import InputError
from analysis.files import Record, opt, opt_num, read_json, read_jsonl

__all__ = ["SimPoint", "CONFIG_KEYS", "load_sim", "sim_point", "group_lines", "label_of"]

# Configuration keys identifying a simulated setup; each may sit at top level or under "config".
CONFIG_KEYS: dict[str, tuple[str, ...]] = {
    "topology": ("topology", "preset", "config.topology", "config.preset", "topology.name", "config.topology.name"),
    "algorithm": ("algorithm", "config.algorithm", "sync_algorithm", "config.sync_algorithm"),
    "allreduce": ("allreduce", "config.allreduce", "allreduce_algorithm", "config.allreduce_algorithm"),
    "model": ("model", "config.model", "model.name", "config.model.name"),
    "K": ("K", "config.K", "workers", "config.workers"),
    "H": ("H", "config.H"),
    "Hb": ("Hb", "config.Hb", "H_b", "config.H_b"),
}
_FIGURES: dict[str, tuple[str, ...]] = {
    "wall_s": ("wall_s", "total_s", "wall_time_s", "time.wall_s", "breakdown.wall_s"),
    "comm_intra_s": ("comm_intra_s", "time.comm_intra_s", "breakdown.comm_intra_s"),
    "comm_inter_s": ("comm_inter_s", "time.comm_inter_s", "breakdown.comm_inter_s"),
    "comm_s": ("comm_s", "time.comm_s", "breakdown.comm_s"),
    "eq6": ("eq6_s", "eq6", "eq6.cost_s", "eq6.eq6", "eq6.value", "eq6.eq6_s"),
    "speedup": ("speedup", "speedup_over_one", "speedup.value"),
}


@dataclass(kw_only=True, frozen=True)
class SimPoint:
    """One simulated configuration with the figures the plots use (seconds)."""

    config: tuple[tuple[str, Any], ...]
    wall_s: float | None
    comm_s: float | None
    eq6_s: float | None
    speedup: float | None
    source: str

    def get(self, key: str) -> Any:
        return dict(self.config).get(key)


def sim_point(rec: Record) -> SimPoint:
    """Flatten one record; communication = intra + inter (or comm_s); eq. (6) as given by the simulator."""
    config = []
    for key, names in CONFIG_KEYS.items():
        value = opt(rec, names)
        if isinstance(value, (dict, list)):
            value = opt(value, "name") if isinstance(value, dict) else None
        config.append((key, value))
    intra = opt_num(rec, _FIGURES["comm_intra_s"])
    inter = opt_num(rec, _FIGURES["comm_inter_s"])
    comm = opt_num(rec, _FIGURES["comm_s"])
    if comm is None and (intra is not None or inter is not None):
        comm = (intra or 0.0) + (inter or 0.0)
    eq6 = opt(rec, _FIGURES["eq6"])
    eq6 = float(eq6) if isinstance(eq6, (int, float)) and not isinstance(eq6, bool) else None
    return SimPoint(config=tuple(config), wall_s=opt_num(rec, _FIGURES["wall_s"]), comm_s=comm,
                    eq6_s=eq6, speedup=opt_num(rec, _FIGURES["speedup"]), source=rec.source)


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
                    raise InputError(f"{rec.source}: missing key {key!r} (or {CONFIG_KEYS[key][1]!r})")
            points.append(pt)
    if not points:
        raise InputError("no simulator records given (expected `sim run --json` or `sim whatif` output)")
    return points


def _order(value: Any) -> tuple[int, float, str]:
    """Sort numbers numerically, then everything else by text (None first)."""
    if value is None:
        return (0, 0.0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, float(value), "")
    return (2, 0.0, str(value))


def label_of(config: dict[str, Any], keys: Sequence[str]) -> str:
    """Legend text from the configuration keys that vary between lines."""
    sym = {"Hb": "Hᵇ"}
    parts = []
    for k in keys:
        v = config.get(k)
        if v is None:
            continue
        parts.append(str(v) if k in ("topology", "algorithm", "allreduce", "model") else f"{sym.get(k, k)}={v}")
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
    out = []
    for key in sorted(lines, key=lambda kk: tuple(_order(v) for _, v in kk)):
        xs = sorted(lines[key])
        out.append((label_of(dict(key), varying), xs, [getattr(lines[key][v], y) for v in xs],
                    [lines[key][v] for v in xs]))
    return out
