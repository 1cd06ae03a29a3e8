"""The two experiments of SPEC section 6 (time-to-target grid, speedup over K) as JSON-ready records."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

from sim.convex.errors import ConvexError
from sim.convex.fstar import FSTAR_PAPER, FstarResult, fstar_cached, resolve_fstar
from sim.convex.libsvm import load_libsvm
from sim.convex.localsgd import Problem, Protocol
from sim.convex.objective import LogisticObjective
from sim.convex.search import ConfigResult, SearchSettings, next_start, relative_times, search_config

__all__ = ["GRID_SCHEMA", "SPEEDUP_SCHEMA", "LoadedProblem", "load_problem", "run_grid", "run_speedup"]

GRID_SCHEMA = "localsgd.convex.grid/1"
SPEEDUP_SCHEMA = "localsgd.convex.speedup/1"

Progress = Callable[[ConfigResult], None]


@dataclass(kw_only=True)
class LoadedProblem:
    """A data file turned into a Problem, with the f* it uses and where that value came from."""

    problem: Problem
    path: str
    sha256: str
    fstar: FstarResult
    fstar_used: float
    fstar_source: str

    def header(self) -> dict:
        return {"data": {"path": self.path, "sha256": self.sha256, "n": self.problem.n, "d": self.problem.d,
                         "lam": self.problem.lam},
                "fstar": {"used": self.fstar_used, "source": self.fstar_source,
                          "computed": self.fstar.fstar, "paper": FSTAR_PAPER,
                          "gap_bound": self.fstar.gap_bound}}


def load_problem(path: str, *, fstar: str = "computed", cache_dir: str | None = None,
                 n_features: int | None = None) -> LoadedProblem:
    """Read a LIBSVM file, solve (or fetch from cache) f*, and choose the f* to measure against."""
    data = load_libsvm(path, n_features=n_features)
    obj = LogisticObjective(data.X, data.y)
    assert data.sha256 is not None
    solved = fstar_cached(obj, sha256=data.sha256, cache_dir=cache_dir)
    used, source = resolve_fstar(fstar, computed=solved.fstar)
    return LoadedProblem(problem=Problem(obj, fstar=used), path=path, sha256=data.sha256, fstar=solved,
                         fstar_used=used, fstar_source=source)


def _check_list(name: str, values: Sequence[int]) -> list[int]:
    if not values:
        raise ConvexError(f"{name} must list at least one integer >= 1, got an empty list")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConvexError(f"{name} values must be integers >= 1, got {v!r}")
    return list(dict.fromkeys(values))


def _common(lp: LoadedProblem, protocol: Protocol, settings: SearchSettings) -> dict:
    return {**lp.header(), "protocol": asdict(protocol),
            "search": {"c_min_exp": settings.c_min_exp, "c_max_exp": settings.c_max_exp,
                       "radius": settings.radius, "schedules": list(settings.schedules)}}


def run_grid(lp: LoadedProblem, protocol: Protocol, *, K: int, H: Sequence[int], B: Sequence[int],
             settings: SearchSettings | None = None, progress: Progress | None = None) -> dict:
    """Time to target for every (H, B_loc) at fixed K, with its best schedule and c, and relative times."""
    settings = settings or SearchSettings()
    if isinstance(K, bool) or not isinstance(K, int) or K < 1:
        raise ConvexError(f"K must be an integer >= 1, got {K!r}")
    Hs, Bs = _check_list("H", H), _check_list("B", B)
    started = time.perf_counter()
    done: dict[tuple[int, int], ConfigResult] = {}
    order: list[ConfigResult] = []
    for h in Hs:
        for i, b in enumerate(Bs):
            prev = done.get((h, Bs[i - 1])) if i else None
            if prev is None and order:
                prev = done.get((Hs[Hs.index(h) - 1], b)) if Hs.index(h) else None
            local = SearchSettings(c_min_exp=settings.c_min_exp, c_max_exp=settings.c_max_exp,
                                   radius=settings.radius, schedules=settings.schedules,
                                   start=next_start(prev, settings) if prev else dict(settings.start))
            res = search_config(lp.problem, protocol, K=K, H=h, B=b, settings=local)
            done[(h, b)] = res
            order.append(res)
            if progress is not None:
                progress(res)
    rel = relative_times(order)
    configs = [{**r.to_json(), "relative": q} for r, q in zip(order, rel)]
    reached = [c for c in configs if c["time"] is not None]
    best = min(reached, key=lambda c: c["time"]) if reached else None
    return {"schema": GRID_SCHEMA, "kind": "grid", **_common(lp, protocol, settings),
            "K": K, "H": Hs, "B": Bs, "configs": configs,
            "best": None if best is None else {"H": best["H"], "B": best["B"], "time": best["time"]},
            "wall_seconds": round(time.perf_counter() - started, 3)}


def run_speedup(lp: LoadedProblem, protocol: Protocol, *, B: int, H: Sequence[int], K: Sequence[int],
                settings: SearchSettings | None = None, progress: Progress | None = None) -> dict:
    """Speedup T(1, H) / T(K, H) at fixed B_loc; K = 1 is always run as the baseline of each H line."""
    settings = settings or SearchSettings()
    if isinstance(B, bool) or not isinstance(B, int) or B < 1:
        raise ConvexError(f"B must be an integer >= 1, got {B!r}")
    Hs = _check_list("H", H)
    Ks = sorted(set(_check_list("K", K)) | {1})
    started = time.perf_counter()
    configs: list[dict] = []
    for h in Hs:
        prev: ConfigResult | None = None
        line: list[ConfigResult] = []
        for k in Ks:
            local = SearchSettings(c_min_exp=settings.c_min_exp, c_max_exp=settings.c_max_exp,
                                   radius=settings.radius, schedules=settings.schedules,
                                   start=next_start(prev, settings) if prev else dict(settings.start))
            res = search_config(lp.problem, protocol, K=k, H=h, B=B, settings=local)
            prev = res
            line.append(res)
            if progress is not None:
                progress(res)
        base = line[0].time
        for res in line:
            sp = None if base is None or res.time is None else base / res.time
            configs.append({**res.to_json(), "speedup": sp,
                            "efficiency": None if sp is None else sp / res.K})
    return {"schema": SPEEDUP_SCHEMA, "kind": "speedup", **_common(lp, protocol, settings),
            "B": B, "H": Hs, "K": Ks, "K_requested": list(K), "baseline": "K=1 with the same H and B_loc"
            + ("" if protocol.k1_comm else ", no communication cost (nothing to average)"),
            "configs": configs, "wall_seconds": round(time.perf_counter() - started, 3)}
