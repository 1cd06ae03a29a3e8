"""Speed of the simulator: the issue's two targets and the event rate of both engines (prints the figures)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.compute import MODELS
from sim.engine import simulate_collective
from sim.run import RunConfig, simulate
from sim.schedule import SyncSchedule
from sim.topology import load_topology

__all__ = ["main"]


def _case(name: str, cfg: RunConfig, engine: str, budget_s: float | None, repeat: int) -> dict[str, Any]:
    times, res = [], None
    for _ in range(repeat):
        simulate_collective.cache_clear()  # cold: the memoised collectives are simulated again each time
        t0 = time.perf_counter()
        res = simulate(cfg, engine)
        times.append(time.perf_counter() - t0)
    assert res is not None
    med = statistics.median(times)
    return {"case": name, "engine": engine, "K": cfg.K, "H": cfg.schedule.H, "total_steps": cfg.total_steps,
            "syncs": res.syncs_global + res.syncs_block, "seconds_median": med, "seconds_all": times,
            "simpy_events": res.sim_events, "simpy_events_per_s": res.sim_events / med,
            "worker_steps_per_s": cfg.K * cfg.total_steps / med, "budget_s": budget_s,
            "within_budget": None if budget_s is None else med <= budget_s, "simulated_wall_s": res.wall_s}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; the median is reported")
    ap.add_argument("--json", action="store_true", help="one JSON object per case")
    a = ap.parse_args(argv)
    resnet = MODELS["resnet20"]
    N = 300 * resnet.train_samples
    paper = load_topology("paper-8x2-10gbps")
    big = dataclasses.replace(load_topology("v100-2x8-10gbps"), name="v100-128x8-10gbps", nodes=128)
    cases = [
        ("resnet20 300 ep, 16 workers (8x2), H=1", RunConfig(topology=paper, model=resnet, K=16, B=128, N=N,
                                                          schedule=SyncSchedule(algorithm="local", H=1)), "fast", 2.0),
        ("resnet20 300 ep, 1024 workers (128x8), H=16", RunConfig(topology=big, model=resnet, K=1024, B=128, N=N,
                                                               schedule=SyncSchedule(algorithm="local", H=16)),
         "fast", 30.0),
        ("same, flat Rabenseifner over 1024 ranks", RunConfig(topology=big, model=resnet, K=1024, B=128, N=N,
                                                             allreduce="rabenseifner",
                                                             schedule=SyncSchedule(algorithm="local", H=16)),
         "fast", 30.0),
        ("reference: 16 workers (8x2), H=1, 10 epochs", RunConfig(topology=paper, model=resnet, K=16, B=128,
                                                                 N=10 * resnet.train_samples,
                                                                 schedule=SyncSchedule(algorithm="local", H=1)),
         "event", None),
    ]
    rows = [_case(name, cfg, engine, budget, a.repeat) for name, cfg, engine, budget in cases]
    if a.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    print(f"{'case':<46} {'engine':<6} {'syncs':>6} {'time s':>8} {'budget':>7} {'SimPy ev/s':>11} "
          f"{'worker-steps/s':>15}")
    for r in rows:
        budget = "-" if r["budget_s"] is None else f"{r['budget_s']:g}"
        print(f"{r['case']:<46} {r['engine']:<6} {r['syncs']:>6} {r['seconds_median']:>8.3f} {budget:>7} "
              f"{r['simpy_events_per_s']:>11.3g} {r['worker_steps_per_s']:>15.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
