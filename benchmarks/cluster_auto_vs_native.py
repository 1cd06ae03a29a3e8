"""Ours vs native MPI_Allreduce across emulated nodes (root only): pair by pair, per layout x link rate x size.

Run from the repo root, as root (it builds the nodes itself with `cluster`, once per layout and rate):
    .venv/bin/python benchmarks/cluster_auto_vs_native.py                       # auto, 4x2 and 4x1, 100/500 Mbit/s
    .venv/bin/python benchmarks/cluster_auto_vs_native.py --ours ring,rail,hierarchical,rabenseifner --out l.jsonl
    .venv/bin/python benchmarks/cluster_auto_vs_native.py --layouts 4x2 --rates 500mbit --sizes 16M,64M \
        --ours rail@LOCALSGD_RAIL_PIPELINE_SEGMENTS=1,rail      # the rail unpipelined and pipelined, side by side
An --ours entry ALG@NAME=VALUE[@NAME=VALUE...] runs ALG with those variables set on every rank; the variants of a
layout and rate run one after the other, each on a fresh cluster, each against native in its own pairs.
Each cell is the median of per-pair ratios ours/native (< 1.0: ours is faster), with the two calls of a pair timed
back to back in alternating order (benchmarks/allreduce_vs_native.py's worker). The link utilisation is what one
node's NIC would carry with a bandwidth-optimal algorithm, 2 (n-1)/n of the message, over the median time, as a
fraction of the link rate. Goal (issue 11): auto/native geometric mean <= 1.0 and worst cell <= 1.15 over 1-64 MiB.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cluster import Cluster, ClusterError, ClusterSpec, parse_rate, unavailable_reason  # noqa: E402
from cluster.netns import DEFAULT_MTU, MAX_MTU, MIN_MTU, check_mtu, format_rate  # noqa: E402


def fmt_size(n: int) -> str:
    return f"{n // 1024**2} MiB" if n >= 1024**2 else f"{n // 1024} KiB"


def run_cells(layout: str, rate: str, variant: str, args: argparse.Namespace) -> list[dict]:
    nodes, ppn = (int(x) for x in layout.lower().split("x"))
    algorithm, *settings = variant.split("@")
    env = dict(setting.split("=", 1) for setting in settings)
    spec = ClusterSpec(nodes=nodes, ranks_per_node=ppn, rate_bits=parse_rate(rate), mtu=args.mtu)
    with tempfile.TemporaryDirectory() as tmp, Cluster(spec) as cluster:
        wout = os.path.join(tmp, "cells.jsonl")
        cmd = [sys.executable, "-m", "mpi4py", str(REPO / "benchmarks" / "allreduce_vs_native.py"), "--worker",
               "--sizes", args.sizes, "--scale", str(args.scale), "--worker-out", wout, "--ours", algorithm]
        print(f"# {layout} at {rate}: {variant} vs native ...", file=sys.stderr, flush=True)
        res = cluster.run(cmd, timeout=args.timeout, capture=True, env={**env, "PYTHONPATH": str(REPO)})
        if res.returncode != 0:
            raise SystemExit(f"{layout} at {rate} ({variant}) failed with exit {res.returncode}:\n"
                             f"{res.stdout[-3000:]}")
        rows = [json.loads(line) for line in Path(wout).read_text().splitlines()]
    for row in rows:
        share = 2 * (nodes - 1) / nodes * row["bytes"] if nodes > 1 else 0.0
        row.update(variant=variant, layout=layout, nodes=nodes, ranks_per_node=ppn, rate_bits=spec.rate_bits,
                   mtu=spec.mtu, link_util_native=share / row["t_native_median_s"] / (spec.rate_bits / 8),
                   link_util_ours=share / row["t_ours_median_s"] / (spec.rate_bits / 8))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layouts", default="4x2,4x1", help="NODESxRANKS, comma-separated (default 4x2,4x1)")
    ap.add_argument("--rates", default="100mbit,500mbit", help="link rates (default 100mbit,500mbit)")
    ap.add_argument("--sizes", default="1M,4M,16M,64M", help="message sizes (default 1M,4M,16M,64M)")
    ap.add_argument("--mtu", type=int, default=DEFAULT_MTU,
                    help=f"link MTU in bytes, {MIN_MTU}-{MAX_MTU} (default {DEFAULT_MTU}, as `python -m cluster run`)")
    ap.add_argument("--ours", default="auto", help="our algorithm(s), comma-separated (default auto); ALG@NAME=VALUE "
                    "sets an environment variable on the ranks, e.g. rail@LOCALSGD_RAIL_PIPELINE_SEGMENTS=1")
    ap.add_argument("--scale", type=float, default=0.5, help="multiply the number of pairs per cell (default 0.5)")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds per cluster job")
    ap.add_argument("--out", default=None, help="write every cell as JSON lines")
    args = ap.parse_args(argv)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")  # unwinds through Cluster.__exit__: nothing is left behind

    signal.signal(signal.SIGTERM, stop)
    reason = unavailable_reason()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    try:
        check_mtu(args.mtu)
    except ClusterError as exc:
        print(f"error: --{exc}", file=sys.stderr)
        return 2
    load = os.getloadavg()[0]
    cells = []
    variants = args.ours.split(",")
    for layout in args.layouts.split(","):
        for rate in args.rates.split(","):
            for variant in variants:
                cells += run_cells(layout, rate, variant, args)
    width = max(13, *(len(v) for v in variants))
    print(f"ours / native MPI_Allreduce across emulated nodes, median of per-pair ratios (< 1.0: ours faster); "
          f"MTU {args.mtu}; load average {load:.1f} at start on {os.cpu_count()} cores")
    print(f"{'layout':>6} {'rate':>8} {'size':>7} {'ours':>{width}} {'chose':>10} {'ratio':>7} {'t native':>10} "
          f"{'t ours':>10} {'link use':>9}")
    for c in cells:
        print(f"{c['layout']:>6} {format_rate(c['rate_bits']):>8} {fmt_size(c['bytes']):>7} {c['variant']:>{width}} "
              f"{c.get('auto_choice') or '':>10} {c['ratio_median']:>7.3f} {c['t_native_median_s']:>9.3f}s "
              f"{c['t_ours_median_s']:>9.3f}s {c['link_util_ours']:>8.0%}{'' if c['correct'] else ' WRONG'}")
    for variant in variants:
        ratios = [c["ratio_median"] for c in cells if c["variant"] == variant]
        geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        big = [c["link_util_ours"] for c in cells if c["variant"] == variant and c["bytes"] >= 8 * 1024**2
               and c["nodes"] > 1]
        print(f"{variant}: geometric mean {geo:.3f} (goal <= 1.0), worst {max(ratios):.3f} (goal <= 1.15) over "
              f"{len(ratios)} cells" + (f"; link use at >= 8 MiB {min(big):.0%}-{max(big):.0%} (goal >= 85 %)"
                                        if big else ""))
    if args.out:
        from comm.bench import write_jsonl_atomic

        write_jsonl_atomic(args.out, cells)
    return 0 if all(c["correct"] for c in cells) else 1


if __name__ == "__main__":
    sys.exit(main())
