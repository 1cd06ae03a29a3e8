"""Predictions on the emulated cluster: calibrate, then run a matrix of real trainer runs across 4 nodes, each
predicted before it starts; write the JSONL table and the `analysis predict` figure. As root (python -m cluster)."""
# Usage (from the repository root, as root; about 25 minutes on the 2-core machine):
#   python benchmarks/validate_cluster_predictions.py --work-dir runs/cluster-validate \
#       --table docs/predict-cluster-table.jsonl --figure-dir docs/img/cluster
# 1. Calibration, nothing of it in the matrix:
#    * this machine (`python -m train calibrate` with the matrix's model): its step time alone, the 2-rank shared-
#      memory bench, and timed trainer probes at 3, 6 and 12 ranks on one node (the matrix runs 4 and 8 ranks);
#    * the links, at each rate of the matrix: `comm bench --level inter` on 4 nodes x 1 rank at message sizes that
#      are not the model's (192 KiB to 3 MiB: well above tbf's 32 KiB bucket, which lets a few KiB pass at veth
#      speed and would make the fitted bandwidth faster than the link), fitted by `python -m sim calibrate --bench`
#      (alpha, beta, gamma and a per-call overhead).
# 2. The matrix: each run is `python -m cluster run ... -- python -m train ... --predict-topology MACHINE
#    --predict-network NET`, so rank 0 predicts it before it starts (the nodes come from the launcher) and
#    summary.json records the prediction next to the measured wall time. The background load is sampled for two
#    seconds before each run and passed as --predict-load, as the calibration did for its probes.
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from validate_predictions import print_table, render_figure, row, select_rows  # noqa: E402

from atomicio import write_jsonl_atomic  # noqa: E402
from train.calibrate import background_load  # noqa: E402

__all__ = ["MODEL", "MATRIX", "BENCH_SIZES", "main", "run_matrix", "calibrate_links"]

#: A network-bound model: multinomial logistic regression on 3 x 64 x 64 synthetic images, 122,890 parameters
#: (491,560 bytes per sync) and 0.12 MFLOPs per sample: at 100-400 Mbit/s a sync costs 10-60 times a step.
MODEL = ["--model", "logreg", "--synthetic-size", "64", "--synthetic-train", "4096", "--eval-every", "4"]
#: Message sizes of the link bench: none is the model's 491,560 bytes, all are well above tbf's 32 KiB bucket.
BENCH_SIZES = "192K,384K,768K,1536K,3M"
#: (name, nodes, ranks per node, rate, trainer flags). 4 x 1 and 4 x 2 at 100-400 Mbit/s: mini-batch, local
#: H = 4 and 16, post-local, hierarchical H = 2, Hb = 4 on the real nodes, one with --global-sync-delay, one with a
#: straggler.
MATRIX: list[tuple[str, int, int, str, list[str]]] = [
    ("4x1 100mbit minibatch", 4, 1, "100mbit", ["--algorithm", "minibatch", "--epochs", "6"]),
    ("4x1 100mbit local H=4", 4, 1, "100mbit", ["--algorithm", "local", "--H", "4", "--epochs", "12"]),
    ("4x1 200mbit local H=16", 4, 1, "200mbit", ["--algorithm", "local", "--H", "16", "--epochs", "24"]),
    ("4x1 400mbit postlocal H=8", 4, 1, "400mbit", ["--algorithm", "postlocal", "--H", "8", "--switch-epoch", "4",
                                                    "--epochs", "16"]),
    ("4x1 400mbit minibatch", 4, 1, "400mbit", ["--algorithm", "minibatch", "--epochs", "12"]),
    ("4x2 100mbit minibatch", 4, 2, "100mbit", ["--algorithm", "minibatch", "--epochs", "8"]),
    ("4x2 100mbit local H=4", 4, 2, "100mbit", ["--algorithm", "local", "--H", "4", "--epochs", "16"]),
    ("4x2 200mbit local H=16", 4, 2, "200mbit", ["--algorithm", "local", "--H", "16", "--epochs", "32"]),
    ("4x2 200mbit postlocal H=8", 4, 2, "200mbit", ["--algorithm", "postlocal", "--H", "8", "--switch-epoch", "4",
                                                    "--epochs", "16"]),
    ("4x2 100mbit hierarchical H=2 Hb=4", 4, 2, "100mbit", ["--algorithm", "hierarchical", "--H", "2", "--Hb", "4",
                                                            "--epochs", "16"]),
    ("4x2 400mbit hierarchical H=2 Hb=4 delay 0.05 s", 4, 2, "400mbit",
     ["--algorithm", "hierarchical", "--H", "2", "--Hb", "4", "--global-sync-delay", "0.05", "--epochs", "16"]),
    ("4x2 200mbit local H=4 straggler 3:2", 4, 2, "200mbit", ["--algorithm", "local", "--H", "4", "--straggler",
                                                              "3:2", "--epochs", "16"]),
    ("4x2 400mbit minibatch", 4, 2, "400mbit", ["--algorithm", "minibatch", "--epochs", "12"]),
]


def _run(cmd: list[str], what: str, env: dict[str, str], ok: tuple[int, ...] = (0,)) -> None:
    """Run `cmd`; an exit status outside `ok` ends the script with the command's last lines, one in `ok` but not
    0 is a warning line."""
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, check=False)
    if proc.returncode in ok and proc.returncode != 0:
        print(f"warning: {what} exited {proc.returncode}: {(proc.stderr or proc.stdout).strip().splitlines()[-1]}",
              flush=True)
    elif proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:] or ["(no output)"]
        raise SystemExit(f"error: {what} failed with exit status {proc.returncode}: {' | '.join(tail)}")


def _cluster(nodes: int, per_node: int, rate: str) -> list[str]:
    return [sys.executable, "-m", "cluster", "run", "--nodes", str(nodes), "--ranks-per-node", str(per_node),
            "--rate", rate, "--"]


def calibrate(work: Path, rates: list[str], env: dict[str, str], machine: Path | None) -> tuple[Path, dict[str, Path]]:
    """The machine file (unless given) and one inter-level fit per link rate."""
    if machine is None:
        machine = work / "machine.json"
        print(f"calibrating this machine with the matrix's model -> {machine}", flush=True)
        mflags = [f for f in MODEL if f not in ("--eval-every", "4")]
        _run([sys.executable, "-m", "train", "calibrate", "--out", str(machine), "--name",
              "2-core box (emulated cluster)", *mflags], "train calibrate", env)
    return machine, calibrate_links(work, rates, env, iters=7, warmup=2, reuse=False)


def calibrate_links(work: Path, rates: list[str], env: dict[str, str], *, iters: int, warmup: int,
                    reuse: bool) -> dict[str, Path]:
    """One inter-level fit per link rate: `comm bench --level inter` on 4 nodes x 1 at BENCH_SIZES, fitted by
    `sim calibrate --bench` into work/net-RATE.json (`reuse`: a fit already there is kept)."""
    nets: dict[str, Path] = {}
    for rate in rates:
        bench, net = work / f"bench-inter-{rate}.jsonl", work / f"net-{rate}.json"
        if not (reuse and net.is_file()):
            print(f"calibrating the links at {rate}: comm bench --level inter on 4 nodes x 1 -> {net}", flush=True)
            _run([*_cluster(4, 1, rate), "python", "-m", "mpi4py", "-m", "comm", "bench", "--level", "inter",
                  "--sizes", BENCH_SIZES, "--allreduce", "recursive_doubling,rabenseifner,ring", "--iters",
                  str(iters), "--warmup", str(warmup), "--out", str(bench)], f"link bench at {rate}", env)
            _run([sys.executable, "-m", "sim", "calibrate", "--bench", str(bench), "--name", f"links {rate}",
                  "--out", str(net)], f"sim calibrate --bench at {rate}", env)
        nets[rate] = net
    return nets


def markdown(rows: list[dict]) -> str:
    """The README's table: predicted and measured wall time and their compute / comm + waiting + delay /
    evaluation / checkpoints (the trainer counts --global-sync-delay in its comm_s)."""
    out = ["| run | K | load | predicted (s) | measured (s) | error | predicted breakdown | measured breakdown |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        p, m = r["predicted"], r["measured"]
        pc = p["comm_intra_s"] + p["comm_inter_s"] + p["wait_s"] + p["barrier_s"] + p["delay_s"]
        mc = (m["comm_s"] or 0.0) + (m["wait_s"] or 0.0)
        out.append(f"| {r['name']} | {r['K']} | {r['sampled_load']:.2f} | {r['predicted_s']:.2f} | "
                   f"{r['measured_s']:.2f} | {100 * r['rel_error']:+.1f} % | {p['compute_s']:.2f} / {pc:.2f} / "
                   f"{p['eval_s']:.2f} / {p.get('checkpoint_s') or 0.0:.2f} | {m['compute_s']:.2f} / {mc:.2f} / "
                   f"{m['eval_s']:.2f} / {m.get('checkpoint_s') or 0.0:.2f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work-dir", default=None, help="folder for the calibration files and the run folders "
                    "(default: a new one under runs/)")
    ap.add_argument("--machine", default=None, help="an existing machine file (made with the matrix's model) "
                    "instead of calibrating this machine again")
    ap.add_argument("--table", default="runs/predict-cluster-table.jsonl", help="JSONL table to write")
    ap.add_argument("--figure-dir", default=None, help="write the `analysis predict` figure here (predict.png)")
    ap.add_argument("--only", default=None, help="comma-separated row numbers (0-based) of the matrix to run")
    ap.add_argument("--markdown", action="store_true", help="also print the table as markdown (the README's)")
    ns = ap.parse_args(argv)
    matrix = select_rows(MATRIX, ns.only)
    if matrix is None:
        return 2
    return run_matrix(ns, matrix, MODEL, calibrate, "cluster-validate")


def run_matrix(ns: argparse.Namespace, matrix: list[tuple[str, int, int, str, list[str]]], model: list[str],
               calibrate_fn: Callable[..., tuple[Path, dict[str, Path]]], prefix: str,
               extra: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> int:
    """Calibrate (or take --machine), then run every row of `matrix` on the emulated cluster, each predicted by the
    trainer before it starts, and write the table. A row whose run folder already has a summary.json is read, not
    run again (an interrupted matrix goes on where it stopped). `extra(summary)`: more fields of a row."""
    if ns.machine and not Path(ns.machine).is_file():
        print(f"error: machine file {ns.machine!r} does not exist; leave --machine out to calibrate", file=sys.stderr)
        return 2
    work = Path(ns.work_dir or f"runs/{prefix}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    t0 = time.time()
    machine, nets = calibrate_fn(work, sorted({m[3] for m in matrix}), env, Path(ns.machine) if ns.machine else None)
    print(f"calibration took {time.time() - t0:.0f} s", flush=True)
    rows = []
    t1 = time.time()
    for i, (name, nodes, per_node, rate, flags) in enumerate(matrix):
        load = background_load(seconds=2.0, samples=40)
        slug = name.replace(" ", "_").replace("=", "").replace(":", "-").replace(",", "")
        out = work / f"{i:02d}-{slug}"
        print(f"[{i + 1}/{len(matrix)}] {name} (load {load:.2f}) -> {out}", flush=True)
        if not (out / "summary.json").is_file():
            _run([*_cluster(nodes, per_node, rate), "python", "-m", "train", "--quiet", "--out-dir", str(out),
                  "--predict-topology", str(machine), "--predict-network", str(nets[rate]), "--predict-load",
                  f"{load:.3f}", *model, *flags], f"run {name!r}", env)
        summary = json.loads((out / "summary.json").read_text())
        r = row(name, nodes * per_node, flags, summary, load)
        r.update(nodes=nodes, ranks_per_node=per_node, rate=rate, model_flags=" ".join(model))
        if extra is not None:
            r.update(extra(summary))
        rows.append(r)
        write_jsonl_atomic(Path(ns.table), rows)
    print_table(rows, time.time() - t1, ns.table)
    if ns.markdown:
        print(markdown(rows))
    if ns.figure_dir and not render_figure(ns.table, ns.figure_dir):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
