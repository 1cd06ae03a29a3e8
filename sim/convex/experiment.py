"""The two experiments of SPEC section 6 (time-to-target grid, speedup over K) as JSON-ready records."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

from sim.convex.errors import ConvexError
from sim.convex.fstar import FSTAR_PAPER, FstarResult, fstar_cached, resolve_fstar
from sim.convex.libsvm import load_libsvm
from sim.convex.localsgd import Problem, Protocol
from sim.convex.objective import LogisticObjective
from sim.convex.search import ConfigResult, SearchSettings, next_start, search_config

__all__ = ["GRID_SCHEMA", "SPEEDUP_SCHEMA", "LoadedProblem", "load_problem", "run_grid", "run_speedup"]

GRID_SCHEMA = "localsgd.convex.grid/1"
SPEEDUP_SCHEMA = "localsgd.convex.speedup/1"

Progress = Callable[[ConfigResult], None]
Partial = Callable[[dict], None]


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


def _common(lp: LoadedProblem, protocol: Protocol, settings: SearchSettings, seeds: list[int]) -> dict:
    return {**lp.header(), "protocol": asdict(protocol), "seeds": seeds,
            "search": {"c_min_exp": settings.c_min_exp, "c_max_exp": settings.c_max_exp,
                       "radius": settings.radius, "schedules": list(settings.schedules)}}


def _seeds(protocol: Protocol, seeds: Sequence[int] | None) -> list[int]:
    if seeds is None:
        return [protocol.seed]
    if not seeds or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in seeds):
        raise ConvexError(f"seeds must be a non-empty list of integers >= 0, got {list(seeds)!r}")
    return list(dict.fromkeys(seeds))


def _search(lp: LoadedProblem, protocol: Protocol, seeds: list[int], settings: SearchSettings,
            prev: list[ConfigResult] | None, *, K: int, H: int, B: int) -> list[ConfigResult]:
    """One search per seed, each warm-started from the same seed's neighbouring configuration."""
    out = []
    for i, seed in enumerate(seeds):
        local = SearchSettings(c_min_exp=settings.c_min_exp, c_max_exp=settings.c_max_exp,
                               radius=settings.radius, schedules=settings.schedules,
                               start=next_start(prev[i], settings) if prev else dict(settings.start))
        out.append(search_config(lp.problem, replace(protocol, seed=seed), K=K, H=H, B=B, settings=local))
    return out


def _mean_time(results: list[ConfigResult]) -> float | None:
    times = [r.time for r in results]
    return None if any(t is None for t in times) else sum(times) / len(times)  # type: ignore[arg-type]


def _record(results: list[ConfigResult], seeds: list[int]) -> dict:
    """The first seed's full record, with `time` the mean over seeds and every seed's result listed."""
    rec = results[0].to_json()
    times = [r.time for r in results]
    reached = [t for t in times if t is not None]
    rec["time"] = _mean_time(results)
    rec["reached"] = rec["time"] is not None
    rec["time_min"] = min(reached) if reached else None
    rec["time_max"] = max(reached) if len(reached) == len(times) else None
    rec["per_seed"] = [{"seed": s, "time": r.time, "schedule": j["schedule"], "c_exp": j["c_exp"], "c": j["c"],
                        "iterate": j["iterate"], "optimal": j["optimal"]}
                       for s, r, j in ((s, r, r.to_json()) for s, r in zip(seeds, results))]
    rec["wall_seconds"] = round(sum(r.wall_seconds for r in results), 3)
    return rec


def run_grid(lp: LoadedProblem, protocol: Protocol, *, K: int, H: Sequence[int], B: Sequence[int],
             settings: SearchSettings | None = None, progress: Progress | None = None,
             seeds: Sequence[int] | None = None, partial: Partial | None = None) -> dict:
    """Time to target for every (H, B_loc) at fixed K, with its best schedule and c, and relative times.

    With several seeds, each seed gets its own c search and `time` is the mean of their best times.
    `partial(doc)` receives the document so far (`"complete": false`) after every configuration.
    """
    settings = settings or SearchSettings()
    if isinstance(K, bool) or not isinstance(K, int) or K < 1:
        raise ConvexError(f"K must be an integer >= 1, got {K!r}")
    Hs, Bs = _check_list("H", H), _check_list("B", B)
    seed_list = _seeds(protocol, seeds)
    started = time.perf_counter()
    head = {"schema": GRID_SCHEMA, "kind": "grid", **_common(lp, protocol, settings, seed_list),
            "K": K, "H": Hs, "B": Bs}

    def document(records: list[dict], complete: bool) -> dict:
        times = [c["time"] for c in records if c["time"] is not None]
        configs = [{**c, "relative": None if c["time"] is None else c["time"] / min(times)} for c in records]
        best = min((c for c in configs if c["time"] is not None), key=lambda c: c["time"], default=None)
        return {**head, "configs": configs, "complete": complete,
                "best": None if best is None else {"H": best["H"], "B": best["B"], "time": best["time"]},
                "wall_seconds": round(time.perf_counter() - started, 3)}

    done: dict[tuple[int, int], list[ConfigResult]] = {}
    records: list[dict] = []
    for j, h in enumerate(Hs):
        for i, b in enumerate(Bs):
            prev = done.get((h, Bs[i - 1])) if i else (done.get((Hs[j - 1], b)) if j else None)
            res = _search(lp, protocol, seed_list, settings, prev, K=K, H=h, B=b)
            done[(h, b)] = res
            records.append(_record(res, seed_list))
            if progress is not None:
                progress(res[0])
            if partial is not None and len(records) < len(Hs) * len(Bs):
                partial(document(records, False))
    return document(records, True)


def run_speedup(lp: LoadedProblem, protocol: Protocol, *, B: int, H: Sequence[int], K: Sequence[int],
                settings: SearchSettings | None = None, progress: Progress | None = None,
                seeds: Sequence[int] | None = None, partial: Partial | None = None) -> dict:
    """Speedup T(1, H) / T(K, H) at fixed B_loc; K = 1 is always run as the baseline of each H line.

    `partial(doc)` receives the document so far (`"complete": false`) after every configuration.
    """
    settings = settings or SearchSettings()
    if isinstance(B, bool) or not isinstance(B, int) or B < 1:
        raise ConvexError(f"B must be an integer >= 1, got {B!r}")
    Hs = _check_list("H", H)
    Ks = sorted(set(_check_list("K", K)) | {1})
    seed_list = _seeds(protocol, seeds)
    started = time.perf_counter()
    head = {"schema": SPEEDUP_SCHEMA, "kind": "speedup", **_common(lp, protocol, settings, seed_list),
            "B": B, "H": Hs, "K": Ks, "K_requested": list(K), "baseline": "K=1 with the same H and B_loc"
            + ("" if protocol.k1_comm else ", no communication cost (nothing to average)")}
    configs: list[dict] = []
    for h in Hs:
        prev: list[ConfigResult] | None = None
        base: float | None = None
        for k in Ks:  # K = 1 comes first, so every later K of the line has its baseline
            prev = _search(lp, protocol, seed_list, settings, prev, K=k, H=h, B=B)
            rec = _record(prev, seed_list)
            if k == 1:
                base = rec["time"]
            sp = None if base is None or rec["time"] is None else base / rec["time"]
            configs.append({**rec, "speedup": sp, "efficiency": None if sp is None else sp / k})
            if progress is not None:
                progress(prev[0])
            if partial is not None and len(configs) < len(Hs) * len(Ks):
                partial({**head, "configs": list(configs), "complete": False,
                         "wall_seconds": round(time.perf_counter() - started, 3)})
    return {**head, "configs": configs, "complete": True, "wall_seconds": round(time.perf_counter() - started, 3)}
