"""Two-level calibration on the emulated cluster: `comm bench --level both` across nodes, `sim calibrate --bench`;
the inter-node level measures the shaped link (its fitted bandwidth is the link's, not shared memory's)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cluster import Cluster, ClusterSpec
from tests.parallel.harness import REPO, mpi_env

RATE = 1e8  # 100 Mbit/s: 12.5 MB/s on the wire


def test_two_level_fit_sees_the_link(cluster_available, state_dir, tmp_path: Path) -> None:
    bench = tmp_path / "bench.jsonl"
    with Cluster(ClusterSpec(nodes=2, ranks_per_node=2, rate_bits=RATE)) as cluster:
        res = cluster.run([sys.executable, "-m", "mpi4py", "-m", "comm", "bench", "--level", "both",
                           "--allreduce", "recursive_doubling,rabenseifner,ring", "--sizes", "256K,512K,1M",
                           "--iters", "3", "--warmup", "1", "--out", str(bench)], timeout=180, capture=True)
    assert res.returncode == 0, res.stdout[-4000:]
    rows = [json.loads(line) for line in bench.read_text().splitlines()]
    assert {r["level"] for r in rows} == {"intra", "inter"} and all(r["correct"] for r in rows)
    fit = subprocess.run([sys.executable, "-m", "sim", "calibrate", "--bench", str(bench), "--nodes", "2",
                          "--gpus-per-node", "2", "--json"], cwd=REPO, env=mpi_env(), capture_output=True,
                         text=True, timeout=60, check=False)
    assert fit.returncode == 0, fit.stderr
    levels = json.loads(fit.stdout)["levels"]
    wire = RATE / 8 / 1e9  # GB/s
    # Sizes well above the token bucket's 32 KiB burst (which lets shorter messages through at veth speed); TCP
    # and a shared CPU can only slow the link down.
    assert 0.25 * wire < levels["inter"]["bandwidth_GBps"] < 1.5 * wire, levels["inter"]
    # Shared memory is not the link: far faster, or so fast next to the per-call costs that the fit puts no time
    # on the bytes at all (bandwidth None, "unlimited": seen on a cold first run of a fresh clone).
    intra = levels["intra"]["bandwidth_GBps"]
    assert intra is None or intra > 5 * wire, levels["intra"]
