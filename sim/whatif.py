"""What-if sweeps: topologies x K x algorithms x H x Hb, each simulated as one run."""
from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from atomicio import OutputError, describe_oserror
from sim.atomic import make_temp_beside, publish
from sim.errors import SimError
from sim.run import RunConfig, RunResult, simulate
from sim.schedule import SyncSchedule
from sim.topology import Topology

__all__ = ["SweepPoint", "sweep_points", "run_sweep", "JsonlWriter", "format_table", "TABLE_COLUMNS"]

log = logging.getLogger(__name__)


@dataclass(kw_only=True, frozen=True)
class SweepPoint:
    topology: Topology
    K: int
    algorithm: str
    H: int
    Hb: int


def sweep_points(topologies: list[Topology], Ks: list[int], algorithms: list[str], Hs: list[int],
                 Hbs: list[int]) -> tuple[list[SweepPoint], list[str]]:
    """The valid points of the sweep in order, and one note per skipped (topology, K) pair.

    Duplicates are removed: mini-batch SGD only at H = 1 and Hb = 1, non-hierarchical only at Hb = 1.
    """
    points, notes, seen = [], [], set()
    for topo, K in itertools.product(topologies, Ks):
        try:
            topo.check_workers(K)
        except SimError as e:
            notes.append(f"skipped: {e}")
            continue
        for alg, H, Hb in itertools.product(algorithms, Hs, Hbs):
            H_eff = 1 if alg == "minibatch" else H
            Hb_eff = Hb if alg == "hierarchical" else 1
            key = (topo.name, id(topo), K, alg, H_eff, Hb_eff)
            if key in seen:
                continue
            seen.add(key)
            points.append(SweepPoint(topology=topo, K=K, algorithm=alg, H=H_eff, Hb=Hb_eff))
    return points, notes


def run_sweep(points: list[SweepPoint], make_config: Callable[[SweepPoint, SyncSchedule], RunConfig],
              schedule_kwargs: Callable[[SweepPoint], dict[str, Any]], engine: str = "fast") -> Iterator[RunResult]:
    """Simulate every point; `make_config` fills in model, batch, N, delays and stragglers."""
    for pt in points:
        sched = SyncSchedule(algorithm=pt.algorithm, H=pt.H, Hb=pt.Hb, **schedule_kwargs(pt))
        yield simulate(make_config(pt, sched), engine)


class JsonlWriter:
    """JSON lines flushed per record into a temp file beside `path`, moved into place on close.

    A write that fails (full disk, read-only mount) removes the temp file and raises atomicio.OutputError naming
    `path`; nothing is left half-written.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        parent = self.path.parent
        if not parent.is_dir():
            raise SimError(f"output directory {str(parent)!r} does not exist")
        try:
            fd, self._tmp = make_temp_beside(self.path)
        except OSError as e:
            raise OutputError(f"cannot write {self.path}: {describe_oserror(e)}") from None
        self._f = os.fdopen(fd, "w")

    def _fail(self, e: OSError) -> OutputError:
        with contextlib.suppress(OSError):
            self._f.close()
        if os.path.exists(self._tmp):
            os.unlink(self._tmp)
        return OutputError(f"cannot write {self.path}: {describe_oserror(e)}")

    def write(self, obj: dict[str, Any]) -> None:
        try:
            self._f.write(json.dumps(obj) + "\n")
            self._f.flush()
        except OSError as e:
            raise self._fail(e) from None

    def close(self, keep: bool = True) -> None:
        if not os.path.exists(self._tmp):  # already cleaned up after a failed write
            return
        try:
            self._f.flush()
            if keep:
                os.fsync(self._f.fileno())
            self._f.close()
            if keep:
                publish(self._tmp, self.path)
            else:
                os.unlink(self._tmp)
        except OSError as e:
            raise self._fail(e) from None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(keep=exc_type is None)


TABLE_COLUMNS = (("topology", "{:<18}"), ("K", "{:>4}"), ("algorithm", "{:<12}"), ("H", "{:>3}"), ("Hb", "{:>3}"),
                 ("wall_s", "{:>10.2f}"), ("compute_s", "{:>10.2f}"), ("comm_intra_s", "{:>9.3f}"),
                 ("comm_inter_s", "{:>9.3f}"), ("wait_s", "{:>8.3f}"), ("delay_s", "{:>8.2f}"), ("speedup", "{:>7.2f}"),
                 ("eq6_s", "{:>9.3f}"))


def format_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width text table of run objects."""
    heads = [c for c, _ in TABLE_COLUMNS]
    widths = [len(fmt.format(rows[0][c])) if rows else len(c) for c, fmt in TABLE_COLUMNS]
    widths = [max(w, len(h)) for w, h in zip(widths, heads)]
    out = ["  ".join(h.rjust(w) if "<" not in fmt else h.ljust(w)
                     for h, w, (_, fmt) in zip(heads, widths, TABLE_COLUMNS))]
    for r in rows:
        cells = []
        for (c, fmt), w in zip(TABLE_COLUMNS, widths):
            v = r[c]
            s = "-" if v is None else fmt.format(v)
            cells.append(s.ljust(w) if "<" in fmt else s.rjust(w))
        out.append("  ".join(cells))
    return "\n".join(out)

