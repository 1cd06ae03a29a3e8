"""Hiding communication on the emulated cluster: ours against torch DDP (gloo), overlapped local SGD against no comm."""
# Usage (as root, from the repository root; about 4 minutes per cell on the 2-core machine):
#   python benchmarks/overlap_cluster.py --cells 4x1@25mbit,4x1@100mbit,4x2@25mbit,4x2@100mbit \
#       --out docs/overlap-cluster.jsonl --markdown
# Every cell is one job on `python -m cluster run` (4 nodes x 1 or 2 ranks, links shaped to the rate). Inside it every
# rank builds ResNet-20 (width 16, 272,474 parameters) once per mode and times steps of batch 32 on fixed synthetic
# CIFAR-shaped data (3 x 32 x 32, 10 classes), the modes in alternating order (A B C ... then ... C B A), --pairs
# times; a pass is the slowest rank's steps per second over --steps steps after --warmup (local SGD: --steps is a
# multiple of H and the pass starts right after a sync was applied, so it holds as many syncs started as applied;
# the one left in flight at its end is drained untimed). A mode's figure is the
# median of its passes; a goal's ratio (ours / ddp, overlapped / nocomm) is the median over the passes of the ratio
# within each pass, whose two modes ran minutes apart at most (the other helpers' load moves by 3x within a cell).
# Modes (the same SGD, Nesterov momentum 0.9, lr 0.05):
#   ddp:              torch.nn.parallel.DistributedDataParallel over gloo (its defaults: 25 MiB buckets, 1 MiB first);
#   ours:             the trainer's mini-batch path: LocalSGD(minibatch) with gradient buckets (train/buckets.py) and
#                     the trainer's SyncTimer, progress "thread";
#   ours-poll:        the same, progress "poll";
#   ours-unbucketed:  the same with one all-reduce after backward (the path before gradient buckets);
#   nocomm:           the step alone, no communication at all;
#   local4:           local SGD, H = 4, blocking syncs (barrier + all-reduce, as the trainer);
#   local4-overlap:   local SGD, H = 4, overlapped syncs with tau = 1 (LocalSGD(overlap=True)), progress "thread";
#   local4-overlap4:  the same with tau = 4 (a sync overlaps the whole next round);
#   ours-64k, ours-1m: "ours" with 64 KiB buckets (16 KiB first) and with 1 MiB ones (the bucket-size sweep);
#   nocomm-barrier:   nocomm with a barrier every 4 steps: what coupling the ranks costs without any data.
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

MODES = ("ddp", "ours", "ours-poll", "ours-unbucketed", "nocomm", "local4", "local4-overlap", "local4-overlap4",
         "ours-64k", "ours-1m", "nocomm-barrier")
#: The default modes (the bucket-size variants are for the sweep: --modes ours,ours-64k,ours-1m).
DEFAULT_MODES = MODES[:8]
#: Bucket sizes (bytes, first bucket bytes) of the sweep's variants of "ours".
SWEEP = {"ours-64k": (64 * 1024, 16 * 1024), "ours-1m": (1 << 20, 1 << 20)}


def _eth0_address() -> str:
    out = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", "eth0"], capture_output=True, text=True,
                         check=False).stdout.split()
    return out[out.index("inet") + 1].split("/")[0] if "inet" in out else "127.0.0.1"


def _worker(ns: argparse.Namespace) -> int:
    import socket

    import torch
    import torch.distributed as dist
    from mpi4py import MPI

    from sim.schedule import SyncSchedule
    from train.averager import LocalSGD
    from train.backend import MPIBackend
    from train.models import build_model
    from train.sync import SyncTimer

    torch.set_num_threads(1)
    world = MPI.COMM_WORLD
    rank, size = world.Get_rank(), world.Get_size()
    addr = None
    if rank == 0:
        host = _eth0_address()
        with socket.socket() as s:
            s.bind((host, 0))
            addr = f"tcp://{host}:{s.getsockname()[1]}"
    addr = world.bcast(addr, root=0)
    if addr.startswith("tcp://127."):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    else:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "eth0")
    dist.init_process_group("gloo", init_method=addr, rank=rank, world_size=size)
    gen = torch.Generator().manual_seed(1234 + rank)
    x = torch.randn(ns.batch, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (ns.batch,), generator=gen)
    loss_fn = torch.nn.CrossEntropyLoss()
    modes = [m for m in ns.modes.split(",") if m]

    def make(mode: str) -> dict:
        torch.manual_seed(0)
        model = build_model("resnet20", input_shape=(3, 32, 32), num_classes=10, width=16)
        run = {"model": model}
        net = model
        if mode == "ddp":
            net = torch.nn.parallel.DistributedDataParallel(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
        if mode.startswith(("ours", "local4")):
            progress = "poll" if mode == "ours-poll" else "thread"
            backend = MPIBackend(world, progress=progress)
            timer = SyncTimer(backend)
            if mode.startswith("ours"):
                sched = SyncSchedule(algorithm="minibatch")
                size, first = SWEEP.get(mode, (ns.bucket_bytes, ns.first_bucket))
                kw = {"bucket_bytes": None} if mode == "ours-unbucketed" else {"bucket_bytes": size,
                                                                               "first_bucket_bytes": first}
            else:
                sched = SyncSchedule(algorithm="local", H=4)
                kw = {"overlap": mode != "local4", "overlap_steps": 4 if mode.endswith("overlap4") else 1}
            run["avg"] = LocalSGD(list(model.parameters()), schedule=sched, backend=backend, hooks=timer, **kw)
            run["avg"].poll_in(model)
        run.update(net=net, opt=opt)
        if mode == "nocomm-barrier":
            run["barrier"] = 0
        return run

    runs = {m: make(m) for m in modes}

    def step(run: dict) -> None:
        opt, avg = run["opt"], run.get("avg")
        if "barrier" in run:
            run["barrier"] += 1
            if run["barrier"] % 4 == 0:
                world.Barrier()
        opt.zero_grad()
        loss_fn(run["net"](x), y).backward()
        if avg is not None:
            avg.average_gradients()
        opt.step()
        if avg is not None:
            avg.step(0.05)

    def aligned(run: dict) -> bool:
        """Local SGD: the pass starts right after a sync was applied (blocking: done; overlapped: its tau steps
        later), so that a pass of whole rounds holds as many syncs started as applied."""
        avg = run.get("avg")
        if avg is None or avg.schedule.algorithm != "local":
            return True
        tau = avg.overlap.tau if avg.overlap is not None else 0
        return avg.steps > tau and (avg.steps - tau) % avg.schedule.H == 0

    def timed(mode: str) -> float:
        run = runs[mode]
        done = 0
        while done < ns.warmup or not aligned(run):
            step(run)
            done += 1
        world.Barrier()
        t0 = time.perf_counter()
        for _ in range(ns.steps):
            step(run)
        dt = time.perf_counter() - t0
        if run.get("avg") is not None:
            run["avg"].drain()  # the sync started in the pass's last round belongs to the next round: untimed
        return ns.steps / world.allreduce(dt, op=MPI.MAX)

    rows = []
    for pair in range(ns.pairs):
        for mode in (modes if pair % 2 == 0 else modes[::-1]):
            rows.append({"mode": mode, "pair": pair, "steps_per_s": timed(mode)})
    if rank == 0:
        for r in rows:
            print("ROW " + json.dumps(r), flush=True)
    dist.destroy_process_group()
    return 0


#: The goals' ratios: (name, numerator mode, denominator mode).
RATIOS = (("ours/ddp", "ours", "ddp"), ("ours-poll/ddp", "ours-poll", "ddp"),
          ("unbucketed/ddp", "ours-unbucketed", "ddp"), ("overlap/nocomm", "local4-overlap", "nocomm"),
          ("overlap4/nocomm", "local4-overlap4", "nocomm"), ("local4/nocomm", "local4", "nocomm"))


def _summary(rows: list[dict]) -> dict[str, float]:
    return {m: statistics.median(r["steps_per_s"] for r in rows if r["mode"] == m)
            for m in MODES if any(r["mode"] == m for r in rows)}


def _ratios(rows: list[dict]) -> dict[str, float]:
    """Median over the passes of each goal's ratio within a pass."""
    out = {}
    for name, a, b in RATIOS:
        per = [r["steps_per_s"] / q["steps_per_s"] for r in rows for q in rows
               if r["mode"] == a and q["mode"] == b and r["pair"] == q["pair"]]
        if per:
            out[name] = statistics.median(per)
    return out


def markdown(cells: list[dict]) -> str:
    """The docs' table: steps/s per mode and the goals' ratios, one row per cell."""
    out = [("| cell | load | DDP (gloo) | ours (buckets) | ours/DDP | ours, poll | unbucketed | no comm | local H=4 "
            "| overlapped tau=1 | overlapped/no comm | overlapped tau=4 | tau=4/no comm |"),
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in cells:
        s = c["summary"]

        def f(m: str, s: dict = s) -> str:
            return f"{s[m]:.3f}" if m in s else "-"

        q = c["ratios"]
        ratio = f"{q['ours/ddp']:.3f}" if "ours/ddp" in q else "-"
        hide = f"{q['overlap/nocomm']:.3f}" if "overlap/nocomm" in q else "-"
        out.append(f"| {c['cell']} | {c['load_before']:.1f}-{c['load_after']:.1f} | {f('ddp')} | {f('ours')} | "
                   f"{ratio} | {f('ours-poll')} | {f('ours-unbucketed')} | {f('nocomm')} | {f('local4')} | "
                   f"{f('local4-overlap')} | {hide} | {f('local4-overlap4')} | "
                   f"{q.get('overlap4/nocomm', float('nan')):.3f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cells", default="4x1@25mbit,4x1@100mbit,4x2@25mbit,4x2@100mbit",
                    help="comma-separated NODESxRANKS@RATE")
    ap.add_argument("--modes", default=",".join(DEFAULT_MODES), help=f"comma-separated, of {', '.join(MODES)}")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per pass")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps before each pass")
    ap.add_argument("--pairs", type=int, default=4, help="passes over the modes (alternating order)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--bucket-bytes", type=int, default=256 * 1024)
    ap.add_argument("--first-bucket", type=int, default=64 * 1024)
    ap.add_argument("--out", default=None, help="JSONL file: one line per cell (its passes and medians)")
    ap.add_argument("--markdown", action="store_true", help="print the docs' markdown table")
    ns = ap.parse_args(argv)
    if ns.worker:
        return _worker(ns)
    bad = [m for m in ns.modes.split(",") if m not in MODES]
    if bad:
        print(f"error: --modes: unknown {bad[0]!r}; valid: {', '.join(MODES)}", file=sys.stderr)
        return 2
    if ns.steps % 4:
        print(f"error: --steps must be a multiple of local SGD's H = 4, got {ns.steps}", file=sys.stderr)
        return 2
    env = dict(os.environ, OMP_NUM_THREADS="1", MPIR_CVAR_ENABLE_HEAVY_YIELD="1")
    cells = []
    for cell in ns.cells.split(","):
        layout, _, rate = cell.partition("@")
        nodes, _, ppn = layout.partition("x")
        load0 = os.getloadavg()[0]
        t0 = time.time()
        cmd = [sys.executable, "-m", "cluster", "run", "--nodes", nodes, "--ranks-per-node", ppn, "--rate", rate,
               "--", "env", f"LOCALSGD_IALLREDUCE_NAP_S={os.environ.get('LOCALSGD_IALLREDUCE_NAP_S', '')}",
               sys.executable, "-m", "mpi4py", str(Path(__file__).resolve()), "--worker", "--modes", ns.modes,
               "--steps", str(ns.steps), "--warmup", str(ns.warmup), "--pairs", str(ns.pairs), "--batch",
               str(ns.batch), "--bucket-bytes", str(ns.bucket_bytes), "--first-bucket", str(ns.first_bucket)]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=3600)
        if proc.returncode != 0:
            print(f"error: cell {cell} failed ({proc.returncode}): {proc.stdout[-3000:]}{proc.stderr[-3000:]}",
                  file=sys.stderr)
            return 1
        rows = [json.loads(line[4:]) for line in proc.stdout.splitlines() if line.startswith("ROW ")]
        c = {"cell": cell, "load_before": load0, "load_after": os.getloadavg()[0], "seconds": time.time() - t0,
             "steps": ns.steps, "warmup": ns.warmup, "pairs": ns.pairs, "batch": ns.batch,
             "bucket_bytes": ns.bucket_bytes, "first_bucket_bytes": ns.first_bucket, "rows": rows,
             "summary": _summary(rows), "ratios": _ratios(rows)}
        cells.append(c)
        print(f"{cell}: load {c['load_before']:.1f} -> {c['load_after']:.1f}, {c['seconds']:.0f} s: "
              + ", ".join(f"{m} {v:.3f}" for m, v in c["summary"].items()) + "; "
              + ", ".join(f"{m} {v:.3f}" for m, v in c["ratios"].items()), flush=True)
        if ns.out:
            from atomicio import write_jsonl_atomic
            write_jsonl_atomic(Path(ns.out), cells)
    if ns.markdown:
        print(markdown(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
