"""Cluster topology: nodes x GPUs per node, a link model per level, and the device compute model (JSON files)."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.atomic import atomic_open
from sim.compute import ComputeModel
from sim.costs import LevelCost
from sim.errors import SimError
from sim.plausible import level_warnings, step_warnings, warn_once

__all__ = ["Level", "Topology", "LINK_SHARING", "PRESET_DIR", "preset_names", "load_topology", "save_topology",
           "topology_from_json", "topology_warnings"]

PRESET_DIR = Path(__file__).resolve().parent / "presets"
LEVEL_NAMES = ("intra", "inter")
#: How concurrent messages share a port or NIC direction: max-min fair flows (default) or a FIFO queue.
LINK_SHARING = ("fair", "fifo")


def _num(where: str, name: str, v: object, *, strict: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 \
            or (strict and v == 0):
        op = "> 0" if strict else ">= 0"
        raise SimError(f"{where}{name} must be a finite number {op}, got {v!r}")
    return float(v)


@dataclass(kw_only=True, frozen=True)
class Level:
    """One network level (inside a node, or between nodes).

    A message of n bytes spends ``overhead_s`` and moves its n bytes through the sender's and
    receiver's ports (shared fairly with concurrent messages, or held one at a time under FIFO
    sharing: see Topology.link_sharing) and arrives ``latency_s`` later; the receiver reduces it in
    ``n * gamma_s_per_byte``. So in the alpha-beta-gamma model alpha = latency_s + overhead_s,
    beta = 1 / bandwidth, gamma = gamma_s_per_byte.
    ``bandwidth_GBps`` is in 1e9 bytes per second; None means unlimited (no bandwidth term, paper mode).
    """

    latency_s: float
    bandwidth_GBps: float | None
    overhead_s: float = 0.0
    gamma_s_per_byte: float = 0.0
    name: str = ""

    def __post_init__(self) -> None:
        where = f"{self.name} level " if self.name else ""
        _num(where, "latency_s", self.latency_s)
        _num(where, "overhead_s", self.overhead_s)
        _num(where, "gamma_s_per_byte", self.gamma_s_per_byte)
        if self.bandwidth_GBps is not None:
            _num(where, "bandwidth_GBps", self.bandwidth_GBps, strict=True)

    @property
    def beta(self) -> float:
        """Seconds per byte on the wire."""
        return 0.0 if self.bandwidth_GBps is None else 1.0 / (self.bandwidth_GBps * 1e9)

    @property
    def cost(self) -> LevelCost:
        """The alpha-beta-gamma view of this level."""
        return LevelCost(alpha=self.latency_s + self.overhead_s, beta=self.beta, gamma=self.gamma_s_per_byte)

    def message_s(self, nbytes: float) -> float:
        """Contention-free time of one message: latency + overhead + transfer (the paper's C)."""
        return self.latency_s + self.overhead_s + nbytes * self.beta

    def to_json(self) -> dict[str, Any]:
        return {"latency_s": self.latency_s, "bandwidth_GBps": self.bandwidth_GBps,
                "overhead_s": self.overhead_s, "gamma_s_per_byte": self.gamma_s_per_byte}


@dataclass(kw_only=True, frozen=True)
class Topology:
    """An a x b cluster: `nodes` nodes with `gpus_per_node` GPUs each, sharing their node's NIC.

    Rank r lives on node r // gpus_per_node (consecutive ranks share a node, as MPI places them).
    ``link_sharing``: "fair" (concurrent messages share a port or NIC direction max-min fairly, each
    keeping its own latency) or "fifo" (one message at a time). ``sync_overhead_s``: seconds added to
    every (global, block) sync on top of its collective, the per-sync software cost that
    `sim calibrate --runs` fits (0 for link-spec presets). ``sync_collective_factor``: besides, every sync costs
    this many times its own collective on the links (the fitted cost's part that grows with the bytes: the software
    ran the collective 1 + factor times slower than the links allow); 0 for link-spec presets.
    """

    name: str
    nodes: int
    gpus_per_node: int
    intra: Level
    inter: Level
    compute: ComputeModel
    description: str = ""
    link_sharing: str = "fair"
    sync_overhead_s: tuple[float, float] = (0.0, 0.0)  # (global, block): fitted software cost per sync
    sync_collective_factor: tuple[float, float] = (0.0, 0.0)  # (global, block): fitted cost per sync / collective

    def __post_init__(self) -> None:
        for key in ("nodes", "gpus_per_node"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise SimError(f"{key} must be an integer >= 1, got {v!r}")
        if self.link_sharing not in LINK_SHARING:
            raise SimError(f"link_sharing must be one of {', '.join(LINK_SHARING)}, got {self.link_sharing!r}")
        over = tuple(self.sync_overhead_s)
        if len(over) != 2:
            raise SimError(f"sync_overhead_s must be (global, block) seconds, got {self.sync_overhead_s!r}")
        for name, v in zip(("global", "block"), over):
            _num("sync_overhead_s ", name, v)
        object.__setattr__(self, "sync_overhead_s", tuple(float(v) for v in over))
        fac = tuple(self.sync_collective_factor)
        if len(fac) != 2:
            raise SimError(f"sync_collective_factor must be (global, block) factors, got "
                           f"{self.sync_collective_factor!r}")
        for name, v in zip(("global", "block"), fac):
            _num("sync_collective_factor ", name, v)
        object.__setattr__(self, "sync_collective_factor", tuple(float(v) for v in fac))

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    def check_workers(self, K: int) -> int:
        """Validate K against the layout; returns the number of nodes K workers occupy."""
        b = self.gpus_per_node
        if isinstance(K, bool) or not isinstance(K, int) or K < 1:
            raise SimError(f"K must be an integer >= 1, got {K!r}")
        if K % b:
            raise SimError(f"K must be a multiple of gpus_per_node={b} on topology {self.name!r}, got {K}")
        if self.gpus < K:
            raise SimError(f"K must be at most {self.gpus} ({self.nodes} x {b}) on topology {self.name!r}, got {K}")
        return K // b

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "nodes": self.nodes,
                "gpus_per_node": self.gpus_per_node, "intra": self.intra.to_json(),
                "inter": self.inter.to_json(), "compute": self.compute.to_json(), "link_sharing": self.link_sharing,
                "sync_overhead_s": {"global": self.sync_overhead_s[0], "block": self.sync_overhead_s[1]},
                **({"sync_collective_factor": {"global": self.sync_collective_factor[0],
                                               "block": self.sync_collective_factor[1]}}
                   if any(self.sync_collective_factor) else {})}


TOP_KEYS = {"name", "description", "nodes", "gpus_per_node", "intra", "inter", "compute", "link_sharing",
            "sync_overhead_s", "sync_collective_factor"}
OVERHEAD_KEYS = ("global", "block")
LEVEL_KEYS = {"latency_s", "bandwidth_GBps", "overhead_s", "gamma_s_per_byte"}


def _level(obj: object, name: str, where: str) -> Level:
    if not isinstance(obj, dict):
        raise SimError(f"{where}: '{name}' must be a JSON object with keys {', '.join(sorted(LEVEL_KEYS))}")
    extra = sorted(set(obj) - LEVEL_KEYS)
    if extra:
        raise SimError(f"{where}: unknown key {extra[0]!r} in '{name}'; valid keys: {', '.join(sorted(LEVEL_KEYS))}")
    for key in ("latency_s", "bandwidth_GBps"):
        if key not in obj:
            raise SimError(f"{where}: missing key {key!r} in '{name}' (bandwidth_GBps may be null = unlimited)")
    try:
        return Level(name=name, **obj)
    except SimError as e:
        raise SimError(f"{where}: {e}") from None
    except TypeError as e:
        raise SimError(f"{where}: bad '{name}' level: {e}") from None


def topology_from_json(obj: object, where: str = "topology") -> Topology:
    """Build a Topology from its parsed JSON; errors name the file and the bad key or value."""
    if not isinstance(obj, dict):
        raise SimError(f"{where}: must be a JSON object, got {type(obj).__name__}")
    extra = sorted(set(obj) - TOP_KEYS)
    if extra:
        raise SimError(f"{where}: unknown key {extra[0]!r}; valid keys: {', '.join(sorted(TOP_KEYS))}")
    missing = [k for k in ("name", "nodes", "gpus_per_node", "intra", "inter", "compute") if k not in obj]
    if missing:
        raise SimError(f"{where}: missing key {missing[0]!r}")
    over = obj.get("sync_overhead_s", {})
    if not isinstance(over, dict) or set(over) - set(OVERHEAD_KEYS):
        raise SimError(f"{where}: 'sync_overhead_s' must be a JSON object with keys global and block "
                       f"(seconds per sync), got {over!r}")
    fac = obj.get("sync_collective_factor", {})
    if not isinstance(fac, dict) or set(fac) - set(OVERHEAD_KEYS):
        raise SimError(f"{where}: 'sync_collective_factor' must be a JSON object with keys global and block "
                       f"(times the sync's collective), got {fac!r}")
    try:
        compute = ComputeModel.from_json(obj["compute"], "compute")
        return Topology(name=str(obj["name"]), description=str(obj.get("description", "")),
                        nodes=obj["nodes"], gpus_per_node=obj["gpus_per_node"],
                        intra=_level(obj["intra"], "intra", where), inter=_level(obj["inter"], "inter", where),
                        compute=compute, link_sharing=obj.get("link_sharing", "fair"),
                        sync_overhead_s=(over.get("global", 0.0), over.get("block", 0.0)),
                        sync_collective_factor=(fac.get("global", 0.0), fac.get("block", 0.0)))
    except SimError as e:
        msg = str(e)
        raise SimError(msg if msg.startswith(where) else f"{where}: {msg}") from None
    except TypeError as e:
        raise SimError(f"{where}: {e}") from None


def topology_warnings(topo: Topology, where: str) -> list[str]:
    """One line per physically implausible value of `topo` (sim/plausible.py)."""
    out = []
    for lv in (topo.intra, topo.inter):
        out += level_warnings(where, lv.name or "level", lv.latency_s, lv.bandwidth_GBps)
    c = topo.compute
    if c.kind in ("table", "fixed"):
        out += step_warnings(where, "compute seconds_per_iter", c.seconds_per_iter)
    elif c.kind == "layers":
        for model, _, seconds in c.measured:
            out += step_warnings(where, f"compute measured[{model!r}] seconds_per_iter", seconds)
    return out


def preset_names() -> list[str]:
    """Names of the bundled presets (sim/presets/*.json)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_topology(spec: str | os.PathLike[str]) -> Topology:
    """A preset name (see preset_names()) or a path to a topology JSON file."""
    spec_s = os.fspath(spec)
    path = PRESET_DIR / f"{spec_s}.json"
    if not path.is_file():
        path = Path(spec_s)
        if not path.is_file():
            raise SimError(f"unknown preset or missing topology file {spec_s!r}; valid presets: "
                           f"{', '.join(preset_names())}, or a path to a topology JSON file")
    try:
        obj = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SimError(f"topology file {str(path)!r} is not valid JSON: {e.msg} at line {e.lineno} "
                       f"column {e.colno}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SimError(f"cannot read topology file {str(path)!r}: {e}") from None
    where = f"topology file {str(path)!r}"
    topo = topology_from_json(obj, where)
    warn_once(topology_warnings(topo, where))
    return topo


def save_topology(topo: Topology, path: str | os.PathLike[str]) -> None:
    """Write the topology JSON atomically (temp file in the same directory, then os.replace)."""
    path = Path(path)
    with atomic_open(path) as f:
        json.dump(topo.to_json(), f, indent=2)
        f.write("\n")
