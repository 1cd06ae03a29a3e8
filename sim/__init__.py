"""sim: discrete-event simulator and closed-form cost models of local-SGD communication."""
from __future__ import annotations

from sim.errors import SimError
from sim.schedule import ALGORITHMS, WARMUPS, SyncSchedule, total_steps

__all__ = ["ALGORITHMS", "WARMUPS", "SimError", "SyncSchedule", "total_steps"]
