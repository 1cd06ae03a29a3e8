"""Grid search over c = 2**i for each configuration (K, H, B_loc), with the optimality rule of SPEC section 6."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from sim.convex.errors import ConvexError
from sim.convex.localsgd import SCHEDULES, Problem, Protocol, Run, RunResult, simulate

__all__ = ["ConfigResult", "ScheduleResult", "SearchSettings", "next_start", "relative_times", "search_config"]


@dataclass(kw_only=True)
class SearchSettings:
    """Where the c search may go: exponents in [c_min_exp, c_max_exp], starting around `start`.

    A c counts as optimal when the runs at 2**-2 c, 2**-1 c, 2 c and 2**2 c (`radius` = 2 exponents on
    each side) are all worse; the window grows until that holds or it meets the exponent range.
    """

    c_min_exp: int = -20
    c_max_exp: int = 10
    radius: int = 2
    start: dict[str, int] = field(default_factory=lambda: {"decay": -3, "const": -2})
    schedules: tuple[str, ...] = SCHEDULES

    def __post_init__(self) -> None:
        for name in ("c_min_exp", "c_max_exp", "radius"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConvexError(f"{name} must be an integer, got {v!r}")
        if not -60 <= self.c_min_exp <= self.c_max_exp <= 60:
            raise ConvexError(f"need -60 <= c_min_exp <= c_max_exp <= 60, got {self.c_min_exp}, {self.c_max_exp}")
        if self.radius < 1:
            raise ConvexError(f"radius must be an integer >= 1, got {self.radius}")
        if not self.schedules or any(s not in SCHEDULES for s in self.schedules):
            raise ConvexError(f"schedules must be a non-empty subset of {', '.join(SCHEDULES)}, got {self.schedules!r}")
        self.schedules = tuple(dict.fromkeys(self.schedules))


@dataclass(kw_only=True)
class ScheduleResult:
    """The best c of one schedule; `tried` maps each exponent run to its time (None: worse than stopped_at)."""

    schedule: str
    c_exp: int | None
    time: float | None
    iterate: str | None
    optimal: bool
    tried: dict[int, RunResult]
    closest_exp: int | None = None

    def to_json(self) -> dict:
        return {"schedule": self.schedule, "c_exp": self.c_exp,
                "c": None if self.c_exp is None else 2.0 ** self.c_exp,
                "time": self.time, "iterate": self.iterate, "optimal": self.optimal,
                "tried": [{"c_exp": e, "c": r.c, "time": r.time, "stopped_at": r.stopped_at,
                           "gap_at_stop": r.gap if math.isfinite(r.gap) else None, "diverged": r.diverged}
                          for e, r in sorted(self.tried.items())]}


@dataclass(kw_only=True)
class ConfigResult:
    """The better schedule with its best c for one (K, H, B_loc), and time to target in units."""

    K: int
    H: int
    B: int
    round_time: float
    schedules: dict[str, ScheduleResult]
    wall_seconds: float

    @property
    def best(self) -> ScheduleResult | None:
        reached = [s for s in self.schedules.values() if s.time is not None]
        return min(reached, key=lambda s: (s.time, s.schedule)) if reached else None

    @property
    def time(self) -> float | None:
        best = self.best
        return None if best is None else best.time

    def to_json(self) -> dict:
        best = self.best
        return {"K": self.K, "H": self.H, "B": self.B, "round_time": self.round_time,
                "reached": best is not None, "time": self.time,
                "schedule": None if best is None else best.schedule,
                "c_exp": None if best is None else best.c_exp,
                "c": None if best is None or best.c_exp is None else 2.0 ** best.c_exp,
                "iterate": None if best is None else best.iterate,
                "optimal": False if best is None else best.optimal,
                "schedules": {k: v.to_json() for k, v in self.schedules.items()},
                "wall_seconds": self.wall_seconds}


def _best_exp(tried: dict[int, RunResult]) -> int | None:
    hits = [(r.time, e) for e, r in tried.items() if r.time is not None]
    return min(hits)[1] if hits else None


def _slower(run: RunResult, t: float) -> bool:
    """Whether `run` is known to need more time than t (a stopped run only past its stop)."""
    return run.time > t if run.time is not None else run.stopped_at >= t


def _missing(tried: dict[int, RunResult], centre: int, settings: SearchSettings) -> list[int]:
    lo = max(settings.c_min_exp, centre - settings.radius)
    hi = min(settings.c_max_exp, centre + settings.radius)
    return [e for e in range(lo, hi + 1) if e not in tried]


def _closest_exp(tried: dict[int, RunResult]) -> int | None:
    """The exponent whose run ended nearest the target (smallest final gap), for runs that missed it."""
    finite = [(r.gap, e) for e, r in tried.items() if not r.diverged and math.isfinite(r.gap)]
    return min(finite)[1] if finite else None


def search_config(problem: Problem, protocol: Protocol, *, K: int, H: int, B: int,
                  settings: SearchSettings | None = None) -> ConfigResult:
    """Find the schedule and c = 2**i with the least time to target for one configuration.

    All pending exponents of both schedules run together in one vectorised batch that stops at the first
    sync where any run meets the target (the others can only be slower). The winner's window then grows
    until its best c has `radius` worse neighbours on each side; a schedule with no hit moves its window
    towards the c that ended nearest the target until that c is interior. Later batches stop at the best
    time found so far. If nothing reaches the target before protocol.max_time, the configuration is unreached.
    """
    settings = settings or SearchSettings()
    started = time.perf_counter()
    tried: dict[str, dict[int, RunResult]] = {s: {} for s in settings.schedules}
    centre = {s: min(max(settings.start.get(s, -3), settings.c_min_exp), settings.c_max_exp)
              for s in settings.schedules}
    t_best: float | None = None
    while True:
        pending: list[Run] = []
        for s in settings.schedules:
            best = _best_exp(tried[s])
            if best is None and tried[s]:
                closest = _closest_exp(tried[s])
                exps = [] if closest is None else _missing(tried[s], closest, settings)
            else:
                exps = _missing(tried[s], centre[s] if best is None else best, settings)
            pending += [Run(schedule=s, c_exp=e) for e in exps]
        if not pending:
            break
        stops = None if t_best is None else {0: t_best}
        for res in simulate(problem, protocol, K=K, H=H, B=B, runs=pending, stop_times=stops):
            tried[res.schedule][res.c_exp] = res
            if res.time is not None and (t_best is None or res.time < t_best):
                t_best = res.time
        if t_best is None:
            break  # nothing reached the target before max_time: the configuration is unreached
    out: dict[str, ScheduleResult] = {}
    for s in settings.schedules:
        best = _best_exp(tried[s])
        if best is None:
            out[s] = ScheduleResult(schedule=s, c_exp=None, time=None, iterate=None, optimal=False,
                                    tried=tried[s], closest_exp=_closest_exp(tried[s]))
            continue
        t_s = tried[s][best].time
        assert t_s is not None
        neighbours = [best + i for i in range(-settings.radius, settings.radius + 1) if i]
        optimal = all(e in tried[s] and _slower(tried[s][e], t_s) for e in neighbours)
        out[s] = ScheduleResult(schedule=s, c_exp=best, time=t_s, iterate=tried[s][best].iterate,
                                optimal=optimal, tried=tried[s], closest_exp=best)
    return ConfigResult(K=K, H=H, B=B, round_time=protocol.round_time(K, H, B), schedules=out,
                        wall_seconds=round(time.perf_counter() - started, 3))


def relative_times(results: list[ConfigResult]) -> list[float | None]:
    """Time to target of each configuration divided by the best (smallest) one; None where unreached."""
    times = [r.time for r in results if r.time is not None]
    if not times:
        return [None] * len(results)
    best = min(times)
    return [None if r.time is None else r.time / best for r in results]


def next_start(result: ConfigResult, settings: SearchSettings) -> dict[str, int]:
    """Warm start for the neighbouring configuration: each schedule's best exponent, else its old start."""
    start = dict(settings.start)
    for s, sr in result.schedules.items():
        if sr.closest_exp is not None:
            start[s] = sr.closest_exp
    return start

