"""sim: discrete-event simulator and closed-form cost models of local-SGD communication."""
from __future__ import annotations

from typing import Any

from sim.errors import SimError
from sim.schedule import ALGORITHMS, WARMUPS, SyncSchedule, total_steps

__all__ = ["ALGORITHMS", "WARMUPS", "SimError", "SyncSchedule", "total_steps", "simulate", "run_config",
           "RunConfig", "RunResult", "Stragglers", "load_topology", "preset_names", "get_model"]

# The simulation API is loaded on first use, so importing the pure schedule (as train/ does) stays cheap and
# needs neither simpy nor numpy.
_LAZY = {"simulate": "sim.api", "run_config": "sim.api", "RunConfig": "sim.run", "RunResult": "sim.run",
         "Stragglers": "sim.stragglers", "load_topology": "sim.topology", "preset_names": "sim.topology",
         "get_model": "sim.compute"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sim' has no attribute {name!r}")
