"""The simulator at scale (issue 22): K = 1,024 to 65,536 workers, each sync algorithm, wall time and peak memory.

Every case is the whole command `python -m sim run ...` in a fresh process (imports included), timed by
/usr/bin/time -v (elapsed wall time and maximum resident set size), the median of --repeat runs. The workload is the
issue's: nodes of 8 GPUs (2 us and 100 GB/s inside, 5 us and 12.5 GB/s between), 0.1 s per step, ResNet-50 on 90
epochs of ImageNet (1,281,167 samples each) with a local batch of 32. Goals: <= 10 s and <= 2 GB at K = 65,536,
<= 2 s at K = 16,384. The load average is printed before and after, since the machine is shared.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["main", "CASES"]

#: (label, extra `sim run` flags): the sync algorithms, then the all-reduce choices and the symmetry breakers
CASES: list[tuple[str, list[str]]] = [
    ("minibatch", ["--algorithm", "minibatch"]),
    ("local H=1", ["--algorithm", "local", "--H", "1"]),
    ("local H=16", ["--algorithm", "local", "--H", "16"]),
    ("postlocal H=16", ["--algorithm", "postlocal", "--H", "16"]),
    ("hierarchical H=1 Hb=4", ["--algorithm", "hierarchical", "--H", "1", "--Hb", "4"]),
]
EXTRA: list[tuple[str, list[str]]] = [
    ("local H=1, rail all-reduce", ["--H", "1", "--allreduce", "rail"]),
    ("local H=1, flat ring", ["--H", "1", "--allreduce", "ring"]),
    ("local H=1, flat Rabenseifner", ["--H", "1", "--allreduce", "rabenseifner"]),
    ("local H=1, sign compression", ["--H", "1", "--compress", "sign"]),
    ("local H=1, jitter + random stragglers", ["--H", "1", "--jitter", "lognormal:0.1",
                                                 "--straggler", "random:0.01:2"]),
]


def _topology(path: Path, K: int) -> None:
    lvl = {"overhead_s": 0.0, "gamma_s_per_byte": 0.0}
    path.write_text(json.dumps({
        "name": f"scale-{K // 8}x8", "description": "issue 22's scale topology: 8 GPUs per node",
        "nodes": K // 8, "gpus_per_node": 8, "intra": {"latency_s": 2e-6, "bandwidth_GBps": 100.0, **lvl},
        "inter": {"latency_s": 5e-6, "bandwidth_GBps": 12.5, **lvl},
        "compute": {"kind": "fixed", "device": "0.1 s per step", "seconds_per_iter": [0.1]}}))


def _timed(cmd: list[str]) -> dict[str, Any]:
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, check=False,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[0]}
    el = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", proc.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    assert el and rss, proc.stderr[-500:]
    parts = [float(x) for x in el.group(1).split(":")]
    wall = parts[-1] + 60 * parts[-2] + (3600 * parts[-3] if len(parts) > 2 else 0)
    res = json.loads(proc.stdout)
    return {"wall_s": wall, "rss_MB": int(rss.group(1)) / 1024, "sim_seconds": res["sim_seconds"],
            "syncs": res["syncs_global"] + res["syncs_block"], "simulated_wall_s": res["wall_s"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--K", default="1024,4096,16384,65536", help="comma-separated worker counts (multiples of 8)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; the median is reported")
    ap.add_argument("--extra", action="store_true", help="also the all-reduce choices and jitter at the largest K")
    ap.add_argument("--json", action="store_true", help="one JSON object per case")
    a = ap.parse_args(argv)
    Ks = [int(k) for k in a.K.split(",")]
    load = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = [(K, label, flags) for K in Ks for label, flags in CASES]
        if a.extra:
            cases += [(max(Ks), label, flags) for label, flags in EXTRA]
        for K, label, flags in cases:
            topo = Path(tmp) / f"t{K}.json"
            _topology(topo, K)
            cmd = [sys.executable, "-m", "sim", "run", "--topology", str(topo), "--K", str(K), "--model", "resnet50",
                   "--epochs", "90", "--batch-size", "32", "--json", "--quiet", *flags]
            runs = [_timed(cmd) for _ in range(a.repeat)]
            if any("error" in r for r in runs):
                row = {"K": K, "case": label, "error": next(r["error"] for r in runs if "error" in r)}
            else:
                row = {"K": K, "case": label, "wall_s": statistics.median(r["wall_s"] for r in runs),
                       "rss_MB": max(r["rss_MB"] for r in runs),
                       "sim_seconds": statistics.median(r["sim_seconds"] for r in runs),
                       "syncs": runs[0]["syncs"], "simulated_wall_s": runs[0]["simulated_wall_s"]}
            rows.append(row)
            if a.json:
                print(json.dumps(row), flush=True)
    after = os.getloadavg()
    if a.json:
        return 0
    print(f"load average before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, after {after[0]:.2f} {after[1]:.2f} "
          f"{after[2]:.2f}; median of {a.repeat} runs of the whole command")
    print("| K | case | syncs | command wall s | of it simulating s | max RSS MB |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        if "error" in r:
            print(f"| {r['K']:,} | {r['case']} | - | error: {r['error']} | | |")
        else:
            print(f"| {r['K']:,} | {r['case']} | {r['syncs']} | {r['wall_s']:.2f} | {r['sim_seconds']:.3f} | "
                  f"{r['rss_MB']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
