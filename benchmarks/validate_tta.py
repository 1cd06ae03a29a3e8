"""Time to target on the emulated cluster: statistical runs here, retimed, against the same runs measured across nodes.
As root (python -m cluster)."""
# Usage (from the repository root, as root; about 25-35 minutes on the 2-core machine):
#   python benchmarks/validate_tta.py --work-dir runs/tta-validate --table docs/tta-cluster-table.jsonl \
#       --figure-dir docs/img/tta --markdown
# 1. The statistical runs: every configuration of the matrix with plain mpirun on this machine (one node; the
#    hierarchical run on virtual blocks of the nodes' size). Their timing is not used, only their learning curves
#    (--stat-only stops here and prints them, to choose --target-acc before anything is measured on the cluster).
# 2. Calibration, nothing of it in the matrix: this machine (`python -m train calibrate` with the task's model)
#    and the links at each rate (`comm bench --level inter` on 4 nodes x 1 at message sizes that are not the
#    model's, fitted by `python -m sim calibrate --bench`), as benchmarks/validate_cluster_predictions.py does.
# 3. The same configurations (same flags, same seed) really on the emulated cluster, measured: the time to target is
#    the wall time of the first evaluation that reaches --target-acc in summary.json. Before each, the background
#    load is sampled, and the statistical run is retimed on (machine file, 4 nodes, the rate's links, that load):
#    the prediction of the time to target is made before the measured run starts.
# 4. The table: predicted vs measured time to target (and, apart, the cluster run's own curve retimed, which
#    separates the clock's error from a curve that differs), median and worst |error|, Kendall's tau between the
#    predicted and the measured ranking (per cluster and over all runs), and the pick: the configuration with the
#    shortest predicted time per cluster (what `train tune` ranks first when every candidate finishes) and how far
#    its measured time is from the best measured one.
# 5. The premise: --premise also runs two configurations with --allreduce ring on both sides and checks that the
#    evaluation records (test accuracy, test loss, training loss) are bitwise identical one node vs four.
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from validate_cluster_predictions import BENCH_SIZES, _cluster, _run  # noqa: E402
from validate_predictions import select_rows  # noqa: E402

from atomicio import write_jsonl_atomic  # noqa: E402
from sim.retime import read_run, retime  # noqa: E402
from sim.trainrun import load_source  # noqa: E402
from train.calibrate import background_load, mpirun_path  # noqa: E402

__all__ = ["TASK", "MATRIX", "kendall_tau", "main"]

#: The task: multinomial logistic regression on 3 x 64 x 64 synthetic images (122,890 parameters, 491,560 bytes per
#: sync: network-bound at 100-400 Mbit/s, as in benchmarks/validate_cluster_predictions.py), noisy enough that
#: accuracy climbs over the first epochs; six epochs of batch 16, an evaluation every half epoch.
TASK = ["--model", "logreg", "--synthetic-size", "64", "--synthetic-train", "4096", "--synthetic-test", "1024",
        "--synthetic-noise", "24", "--batch-size", "16", "--epochs", "6", "--eval-every", "0.5",
        "--lr-warmup-epochs", "1"]
#: The task's flags that `train calibrate` takes (the model, data and batch it times).
CALIBRATE_FLAGS = ("--model", "--synthetic-size", "--batch-size")
SLOWMO = ["--momentum-variant", "slowmo", "--slow-lr", "1", "--slow-momentum", "0.5"]
#: (name, nodes, ranks per node, rate, trainer flags): 4 x 2 at 100 Mbit/s and 4 x 1 at 400 Mbit/s; mini-batch,
#: local H = 4, 16 and 64, post-local, hierarchical, SlowMo.
MATRIX: list[tuple[str, int, int, str, list[str]]] = [
    ("4x2 100mbit minibatch", 4, 2, "100mbit", ["--algorithm", "minibatch"]),
    ("4x2 100mbit local H=4", 4, 2, "100mbit", ["--algorithm", "local", "--H", "4"]),
    ("4x2 100mbit local H=16", 4, 2, "100mbit", ["--algorithm", "local", "--H", "16"]),
    ("4x2 100mbit local H=64", 4, 2, "100mbit", ["--algorithm", "local", "--H", "64"]),
    ("4x2 100mbit postlocal H=16", 4, 2, "100mbit", ["--algorithm", "postlocal", "--H", "16", "--switch-epoch",
                                                     "1"]),
    ("4x2 100mbit hierarchical H=4 Hb=4", 4, 2, "100mbit", ["--algorithm", "hierarchical", "--H", "4", "--Hb", "4"]),
    ("4x2 100mbit slowmo H=16", 4, 2, "100mbit", ["--algorithm", "local", "--H", "16", *SLOWMO]),
    ("4x1 400mbit minibatch", 4, 1, "400mbit", ["--algorithm", "minibatch"]),
    ("4x1 400mbit local H=4", 4, 1, "400mbit", ["--algorithm", "local", "--H", "4"]),
    ("4x1 400mbit local H=16", 4, 1, "400mbit", ["--algorithm", "local", "--H", "16"]),
    ("4x1 400mbit local H=64", 4, 1, "400mbit", ["--algorithm", "local", "--H", "64"]),
    ("4x1 400mbit postlocal H=16", 4, 1, "400mbit", ["--algorithm", "postlocal", "--H", "16", "--switch-epoch",
                                                     "1"]),
    ("4x1 400mbit slowmo H=16", 4, 1, "400mbit", ["--algorithm", "local", "--H", "16", *SLOWMO]),
]
#: The premise check: (name, ranks per node, flags), run with --allreduce ring on one node and on 4 nodes.
PREMISE = [("local H=16, ring", 2, ["--algorithm", "local", "--H", "16"]),
           ("minibatch, ring", 1, ["--algorithm", "minibatch"])]
PREMISE_KEYS = ("test_acc", "test_loss", "train_loss")


def calibrate(work: Path, rates: list[str], env: dict[str, str], machine: Path | None) -> tuple[Path, dict[str, Path]]:
    """The machine file (unless given, with the task's model) and one inter-level fit per link rate."""
    if machine is None:
        machine = work / "machine.json"
        print(f"calibrating this machine with the task's model -> {machine}", flush=True)
        mflags = [x for flag, value in zip(TASK[::2], TASK[1::2]) if flag in CALIBRATE_FLAGS for x in (flag, value)]
        # the same model and batch on a smaller training set: the 12-rank probe must fit the memory guard (the step
        # time depends on the model and the batch, not on how many samples there are)
        mflags += ["--synthetic-train", "1024"]
        # exit 3: written, but its fit does not explain its own probes (train/fitcheck.py): used, and said so
        _run([sys.executable, "-m", "train", "calibrate", "--out", str(machine), "--name",
              "2-core box (emulated cluster)", *mflags], "train calibrate", env, ok=(0, 3))
    nets: dict[str, Path] = {}
    for rate in rates:
        bench, net = work / f"bench-inter-{rate}.jsonl", work / f"net-{rate}.json"
        if not net.is_file():
            print(f"calibrating the links at {rate} -> {net}", flush=True)
            _run([*_cluster(4, 1, rate), "python", "-m", "mpi4py", "-m", "comm", "bench", "--level", "inter",
                  "--sizes", BENCH_SIZES, "--allreduce", "recursive_doubling,rabenseifner,ring", "--iters", "7",
                  "--warmup", "2", "--out", str(bench)], f"link bench at {rate}", env)
            _run([sys.executable, "-m", "sim", "calibrate", "--bench", str(bench), "--name", f"links {rate}", "--out",
                  str(net)], f"sim calibrate --bench at {rate}", env)
        nets[rate] = net
    return machine, nets


def kendall_tau(xs: list[float], ys: list[float]) -> float | None:
    """Kendall's tau-b of two rankings (ties counted as neither concordant nor discordant); None below 2 items."""
    n = len(xs)
    if n < 2:
        return None
    conc = disc = tx = ty = 0
    for i in range(n):
        for j in range(i + 1, n):
            a, b = xs[i] - xs[j], ys[i] - ys[j]
            if a == 0 and b == 0:
                continue
            if a == 0:
                tx += 1
            elif b == 0:
                ty += 1
            elif (a > 0) == (b > 0):
                conc += 1
            else:
                disc += 1
    den = math.sqrt((conc + disc + tx) * (conc + disc + ty))
    return None if den == 0 else (conc - disc) / den


def _stat_flags(per_node: int, flags: list[str]) -> list[str]:
    """On one node a hierarchical run needs virtual blocks of the cluster's nodes' size."""
    return flags + (["--gpus-per-node", str(per_node)] if "hierarchical" in flags else [])


def _curve(run_dir: Path) -> list[dict[str, Any]]:
    with open(run_dir / "metrics.jsonl", encoding="utf-8") as fh:
        return [r for r in map(json.loads, fh) if r.get("kind") == "epoch"]


def premise(work: Path, env: dict[str, str], mpirun: str, rate: str) -> list[dict[str, Any]]:
    """The same run (--allreduce ring) on one node and on 4 emulated nodes: are the evaluations bitwise equal?"""
    out = []
    for i, (name, per_node, flags) in enumerate(PREMISE):
        K = 4 * per_node
        one, four = work / f"premise-{i}-one-node", work / f"premise-{i}-four-nodes"
        full = [*TASK, *flags, "--allreduce", "ring", "--quiet"]
        if not (one / "summary.json").is_file():
            _run([mpirun, "-n", str(K), sys.executable, "-m", "train", *full, "--out-dir", str(one)],
                 f"premise {name} on one node", env)
        if not (four / "summary.json").is_file():
            _run([*_cluster(4, per_node, rate), "python", "-m", "train", *full, "--out-dir", str(four)],
                 f"premise {name} on 4 nodes", env)
        a, b = _curve(one), _curve(four)
        same = len(a) == len(b) and all(x[k] == y[k] for x, y in zip(a, b) for k in PREMISE_KEYS)
        diff = max((abs(x[k] - y[k]) for x, y in zip(a, b) for k in PREMISE_KEYS), default=0.0)
        out.append({"name": name, "K": K, "evaluations": len(a), "bitwise_identical": same, "max_abs_diff": diff})
        print(f"premise {name} (K={K}): {len(a)} evaluations, {'bitwise identical' if same else 'DIFFERENT'} "
              f"(largest difference {diff:.3g})", flush=True)
    return out


def _tta(rt: dict[str, Any]) -> float | None:
    return rt["target"]["time_s"] if rt["target"]["reached"] else None


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Errors, Kendall's tau and the pick, per cluster and over all rows."""
    ok = [r for r in rows if r["predicted_s"] is not None and r["measured_s"] is not None]
    errs = [abs(r["rel_error"]) for r in ok]
    out: dict[str, Any] = {"runs": len(rows), "compared": len(ok),
                           "median_abs_error": statistics.median(errs) if errs else None,
                           "worst_abs_error": max(errs) if errs else None,
                           "kendall_tau_all": kendall_tau([r["predicted_s"] for r in ok],
                                                          [r["measured_s"] for r in ok]),
                           "clusters": {}}
    for cl in sorted({r["cluster"] for r in rows}):
        sub = [r for r in rows if r["cluster"] == cl]
        inf = 1e300  # a run that never reaches the target ranks last on either side
        pred = [r["predicted_s"] if r["predicted_s"] is not None else inf for r in sub]
        meas = [r["measured_s"] if r["measured_s"] is not None else inf for r in sub]
        pick = min(range(len(sub)), key=lambda i: pred[i])
        best = min(range(len(sub)), key=lambda i: meas[i])
        out["clusters"][cl] = {"kendall_tau": kendall_tau(pred, meas), "pick": sub[pick]["name"],
                               "pick_measured_s": sub[pick]["measured_s"], "best": sub[best]["name"],
                               "best_measured_s": sub[best]["measured_s"],
                               "pick_over_best": (meas[pick] / meas[best]) if meas[best] < inf else None}
    return out


def markdown(rows: list[dict[str, Any]]) -> str:
    out = ["| run | K | load | target at (eval) | predicted (s) | measured (s) | error | own curve retimed (s) |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        def f(v: Any) -> str:
            return "-" if v is None else f"{v:.2f}"
        err = "-" if r["rel_error"] is None else f"{100 * r['rel_error']:+.1f} %"
        at = f"{r['stat_epoch']} / {r['cluster_epoch']}"
        out.append(f"| {r['name']} | {r['K']} | {r['sampled_load']:.2f} | {at} | {f(r['predicted_s'])} | "
                   f"{f(r['measured_s'])} | {err} | {f(r['own_curve_predicted_s'])} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work-dir", default=None, help="folder for calibration files and run folders (default: new)")
    ap.add_argument("--machine", default=None, help="an existing machine file made with the task's model")
    ap.add_argument("--target-acc", type=float, default=0.68, help="test accuracy to reach (default: %(default)s)")
    ap.add_argument("--stat-only", action="store_true", help="run the statistical runs only and print their curves "
                    "(to choose --target-acc from them, before any cluster run)")
    ap.add_argument("--table", default="runs/tta-cluster-table.jsonl", help="JSONL table to write")
    ap.add_argument("--figure-dir", default=None, help="write the `analysis predict` and `tta` figures here")
    ap.add_argument("--only", default=None, help="comma-separated row numbers (0-based) of the matrix to run")
    ap.add_argument("--premise", action="store_true", help="also check one node vs 4 nodes bitwise (--allreduce ring)")
    ap.add_argument("--markdown", action="store_true", help="print the table as markdown")
    ns = ap.parse_args(argv)
    matrix = select_rows(MATRIX, ns.only)
    if matrix is None:
        return 2
    work = Path(ns.work_dir or f"runs/tta-validate-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MPIR_CVAR_ENABLE_HEAVY_YIELD="1")
    mpirun = mpirun_path(None)
    t0 = time.time()
    print(f"load average before: {os.getloadavg()}", flush=True)
    target = ["--target-acc", f"{ns.target_acc:g}"]
    for i, (name, _nodes, per_node, _rate, flags) in enumerate(matrix):      # the statistical runs, here
        stat = work / f"stat-{i:02d}"
        if not (stat / "summary.json").is_file():
            print(f"[statistical {i + 1}/{len(matrix)}] {name}: mpirun -n {4 * per_node} on this machine", flush=True)
            _run([mpirun, "-n", str(4 * per_node), sys.executable, "-m", "train", "--quiet", *TASK, *target,
                  *_stat_flags(per_node, flags), "--out-dir", str(stat)], f"statistical run {name!r}", env)
    if ns.stat_only:
        for i, (name, *_rest) in enumerate(matrix):
            accs = " ".join(f"{r['test_acc']:.3f}" for r in _curve(work / f"stat-{i:02d}"))
            print(f"{name}: {accs}")
        return 0
    t1 = time.time()     # calibrated now, next to the cluster runs, under the load they will see
    machine, nets = calibrate(work, sorted({m[3] for m in matrix}), env, Path(ns.machine) if ns.machine else None)
    print(f"calibration took {time.time() - t1:.0f} s", flush=True)
    kind, src = load_source(str(machine))
    source = (kind, src, str(machine))
    rows = []
    for i, (name, nodes, per_node, rate, flags) in enumerate(matrix):
        stat, clus = work / f"stat-{i:02d}", work / f"cluster-{i:02d}"
        load = background_load(seconds=2.0, samples=40)
        kw = {"nodes": nodes, "network": str(nets[rate]), "load": load, "target_acc": ns.target_acc}
        pred = retime(read_run(str(stat)), source, **kw)       # made before the cluster run starts
        if not (clus / "summary.json").is_file():
            print(f"[cluster {i + 1}/{len(matrix)}] {name} (load {load:.2f})", flush=True)
            _run([*_cluster(nodes, per_node, rate), "python", "-m", "train", "--quiet", *TASK, *target, *flags,
                  "--out-dir", str(clus)], f"cluster run {name!r}", env)
        s = json.loads((clus / "summary.json").read_text())
        own = retime(read_run(str(clus)), source, **kw)
        meas = s["time_to_target"]["wall_s"] if s.get("time_to_target") else None
        p = _tta(pred)
        rows.append({"name": name, "cluster": f"4x{per_node} {rate}", "K": nodes * per_node, "flags": " ".join(flags),
                     "sampled_load": load, "loadavg_1min_after": os.getloadavg()[0], "target_acc": ns.target_acc,
                     "predicted_s": p, "measured_s": meas,
                     "rel_error": (p - meas) / meas if p is not None and meas is not None else None,
                     "own_curve_predicted_s": _tta(own),
                     "stat_epoch": pred["target"].get("epoch"), "cluster_epoch": (s.get("time_to_target") or {})
                     .get("epoch"), "predicted_wall_s": pred["predicted_wall_s"], "measured_wall_s": s["wall_s"],
                     "stat_run": str(stat), "cluster_run": str(clus)})
        write_jsonl_atomic(Path(ns.table), rows)
        r = rows[-1]
        err = "-" if r["rel_error"] is None else f"{100 * r['rel_error']:+.1f} %"
        print(f"  time to target predicted {r['predicted_s']}, measured {r['measured_s']} s, error {err}", flush=True)
    summary = summarise(rows)
    if ns.premise:
        summary["premise"] = premise(work, env, mpirun, "400mbit")
    summary["load_average_after"] = list(os.getloadavg())
    summary["took_s"] = time.time() - t0
    (Path(ns.table).with_suffix(".summary.json")).write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    if ns.markdown:
        print(markdown(rows))
    if ns.figure_dir:
        pairs = Path(ns.figure_dir) / "tta-pairs.jsonl"
        pairs.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl_atomic(pairs, [{"name": r["name"], "predicted_s": r["predicted_s"], "measured_s": r["measured_s"]}
                                   for r in rows if r["rel_error"] is not None])
        subprocess.run([sys.executable, "-m", "analysis", "predict", "--table", str(pairs), "--out-dir",
                        ns.figure_dir, "--formats", "png", "--quiet"], cwd=ROOT, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
