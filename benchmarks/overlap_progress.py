"""Which progress scheme lets a nonblocking all-reduce overlap computation here? Measured across emulated nodes."""
# Usage (as root, from the repository root; about 3 minutes):
#   python benchmarks/overlap_progress.py --nodes 4 --ranks-per-node 1 --rate 25mbit --out runs/overlap-progress.jsonl
# Each rank times, in alternating order and repeated --pairs times, for every scheme:
#   comm:  the request alone (start, then wait at once);
#   comp:  a block of computation alone (torch matmuls in chunks, sized to about the comm time);
#   both:  start the request, compute the block (polling test() between chunks where the scheme needs it), wait.
# overlap = (comm + comp - both) / min(comm, comp): 1 when the request is wholly hidden, 0 when nothing overlaps.
# Schemes (ALG is auto, our choice, or native, MPI_Iallreduce):
#   thread-ALG: comm's helper thread, napping between its tests (progress="thread", the default);
#   poll-ALG:   progress="poll", test() after every compute chunk (as backward hooks would);
#   wait-native: progress="poll" without a test() until wait(): what MPI does on its own;
#   spin-auto:  the helper thread spinning in MPI_Waitall (LOCALSGD_IALLREDUCE_NAP_S=0; a job of its own);
#   async-native: as wait-native, with MPIR_CVAR_ASYNC_PROGRESS=1 (MPICH's progress thread; a job of its own, since
#               MPICH reads the variable when MPI starts).
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCHEMES = ("thread-auto", "thread-native", "poll-auto", "poll-native", "wait-native")
#: The schemes that need a job of their own: (name, the scheme it runs as, environment).
JOBS = (("spin-auto", "thread-auto", {"LOCALSGD_IALLREDUCE_NAP_S": "0"}),
        ("async-native", "wait-native", {"MPIR_CVAR_ASYNC_PROGRESS": "1"}))


def _worker(ns: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from mpi4py import MPI

    import comm

    torch.set_num_threads(1)
    world = MPI.COMM_WORLD
    x = np.ones(ns.bytes // 4, dtype=np.float32)
    a = torch.randn(192, 192)

    def start(scheme: str) -> comm.Request:
        kind, alg = scheme.split("-")
        return comm.iallreduce(x, algorithm=alg, progress="thread" if kind == "thread" else "poll")

    def compute(chunks: int, req: comm.Request | None = None, poll: bool = False) -> None:
        for _ in range(chunks):
            for _ in range(8):
                torch.mm(a, a)
            if poll and req is not None:
                req.test()

    def timed(fn) -> float:  # the slowest rank's time, after a barrier
        world.Barrier()
        t0 = time.perf_counter()
        fn()
        return world.allreduce(time.perf_counter() - t0, op=MPI.MAX)

    as_ = {name: runs for name, runs, _ in JOBS}
    schemes = [ns.only] if ns.only else list(SCHEMES)
    for s in schemes:  # warm-up: the helper thread, the duplicate communicators, the node layout
        start(as_.get(s, s)).wait()
    t_chunk = timed(lambda: compute(20)) / 20
    t_comm0 = statistics.median(timed(lambda: start(as_.get(schemes[0], schemes[0])).wait()) for _ in range(3))
    chunks = max(1, round(ns.comp_ratio * t_comm0 / t_chunk))
    rows = []
    for pair in range(ns.pairs):
        order = schemes if pair % 2 == 0 else schemes[::-1]
        for s in order:
            scheme = as_.get(s, s)
            comm_s = timed(lambda sc=scheme: start(sc).wait())
            comp_s = timed(lambda: compute(chunks))

            def both(sc: str = scheme) -> None:
                req = start(sc)
                compute(chunks, req, poll=sc.startswith("poll"))
                req.wait()

            both_s = timed(both)
            rows.append({"scheme": s, "pair": pair, "comm_s": comm_s, "comp_s": comp_s, "both_s": both_s})
    if world.rank == 0:
        for r in rows:
            print("ROW " + json.dumps(r), flush=True)
    return 0


def _summary(rows: list[dict]) -> list[dict]:
    out = []
    for s in [*SCHEMES, *(name for name, _, _ in JOBS)]:
        mine = [r for r in rows if r["scheme"] == s]
        if not mine:
            continue
        comm_s = statistics.median(r["comm_s"] for r in mine)
        comp_s = statistics.median(r["comp_s"] for r in mine)
        both_s = statistics.median(r["both_s"] for r in mine)
        over = statistics.median((r["comm_s"] + r["comp_s"] - r["both_s"]) / min(r["comm_s"], r["comp_s"])
                                 for r in mine)
        out.append({"scheme": s, "comm_s": comm_s, "comp_s": comp_s, "both_s": both_s, "overlap": over,
                    "pairs": len(mine)})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--only", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--ranks-per-node", type=int, default=1)
    ap.add_argument("--rate", default="25mbit")
    ap.add_argument("--bytes", type=int, default=1 << 20, help="message size (default 1 MiB: about ResNet-20)")
    ap.add_argument("--comp-ratio", type=float, default=1.5, help="computation per request, in comm times")
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--out", default=None, help="JSONL file of the per-pair rows and the summary")
    ns = ap.parse_args(argv)
    if ns.worker:
        return _worker(ns)
    env = dict(os.environ, OMP_NUM_THREADS="1", MPIR_CVAR_ENABLE_HEAVY_YIELD="1")
    args = ["--bytes", str(ns.bytes), "--comp-ratio", str(ns.comp_ratio), "--pairs", str(ns.pairs)]
    rows: list[dict] = []
    load = [os.getloadavg()[0]]
    for extra, job_env in [([], {})] + [(["--only", name], env_) for name, _, env_ in JOBS]:
        cmd = [sys.executable, "-m", "cluster", "run", "--nodes", str(ns.nodes), "--ranks-per-node",
               str(ns.ranks_per_node), "--rate", ns.rate, "--", "env", *[f"{k}={v}" for k, v in job_env.items()],
               sys.executable, "-m", "mpi4py", str(Path(__file__).resolve()), "--worker", *args, *extra]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=900)
        if proc.returncode != 0:
            print(f"error: job {' '.join(extra) or 'main'} failed ({proc.returncode}): {proc.stdout[-2000:]}"
                  f"{proc.stderr[-2000:]}", file=sys.stderr)
            return 1
        rows += [json.loads(line[4:]) for line in proc.stdout.splitlines() if line.startswith("ROW ")]
    load.append(os.getloadavg()[0])
    summary = _summary(rows)
    print(f"# overlap of a {ns.bytes} B all-reduce with computation, {ns.nodes} x {ns.ranks_per_node} at {ns.rate}; "
          f"load average {load[0]:.2f} before, {load[1]:.2f} after; medians of {ns.pairs} alternating pairs")
    print(f"{'scheme':<16}{'comm (s)':>10}{'comp (s)':>10}{'both (s)':>10}{'overlap':>9}")
    for r in summary:
        print(f"{r['scheme']:<16}{r['comm_s']:>10.3f}{r['comp_s']:>10.3f}{r['both_s']:>10.3f}{r['overlap']:>9.2f}")
    if ns.out:
        from atomicio import write_jsonl_atomic
        meta = {"nodes": ns.nodes, "ranks_per_node": ns.ranks_per_node, "rate": ns.rate, "bytes": ns.bytes,
                "load_before": load[0], "load_after": load[1]}
        write_jsonl_atomic(Path(ns.out), [{**meta, "kind": "pair", **r} for r in rows]
                           + [{**meta, "kind": "summary", **r} for r in summary])
    return 0


if __name__ == "__main__":
    sys.exit(main())
