"""The accuracy-communication trade-off on two tasks: statistical runs here, priced on a fast and on a slow network."""
# Usage (from the repository root; about 20-30 minutes on the 2-core machine):
#   python benchmarks/validate_tta_tradeoff.py --work-dir runs/tta-tradeoff --out docs/tta-tradeoff.jsonl \
#       --figure-dir docs/img/tta --markdown
# Two tasks, each over K in {4, 16} x H in {1, 4, 16, 64} (local SGD; H = 1 averages the models every step):
#   * w8a (real data, SPEC section 6): logreg-binary, the convex protocol (no hold-out, float64, step size
#     min(32, c n / (t + 1)) with c = 2^-3, no momentum, weight decay 1/n), target f - f* <= --w8a-target with the
#     computed f*;
#   * synthetic images: resnet8 (width 8, 16 x 16), the trainer's protocol, target test accuracy --synth-target.
# Every run is retimed (sim retime) on paper-8x2-10gbps (10 Gbps) and on docs/tta-slow-8x2.json (the same GPUs on
# 100 Mbit/s, 1 ms links). The table gives, per task and configuration, steps and epochs to the target (the
# statistics, which no cluster changes), the final metric (what large H x K costs), and the predicted time to
# target on each network, with the best configuration of each network marked. Nothing is fitted to these runs.
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from atomicio import write_jsonl_atomic  # noqa: E402
from sim.retime import read_run, retime  # noqa: E402
from sim.trainrun import load_source  # noqa: E402
from train.calibrate import mpirun_path  # noqa: E402

__all__ = ["TASKS", "GRID", "CLUSTERS", "stat_run", "main"]

W8A_N = 49749
TASKS: dict[str, dict[str, Any]] = {
    "w8a": {"flags": ["--model", "logreg-binary", "--dataset", "w8a", "--data-dir", "../shared/data",
                      "--test-fraction", "0", "--dtype", "float64", "--lr-schedule", "decay", "--lr", "0.125",
                      "--lr-cap", "32", "--momentum", "0", "--no-nesterov", "--weight-decay", repr(1 / W8A_N),
                      "--batch-size", "16", "--epochs", "1", "--eval-every", "0.05", "--checkpoint-every", "0"],
            "metric": "objective_gap"},
    "synthetic": {"flags": ["--model", "resnet8", "--synthetic-train", "8192", "--synthetic-test", "1024",
                            "--epochs", "4", "--eval-every", "0.25", "--lr-warmup-epochs", "1",
                            "--checkpoint-every", "0"],
                  "metric": "test_acc"},
}
GRID = [(K, H) for K in (4, 16) for H in (1, 4, 16, 64)]
#: Relative to the repository root, where the script runs (no absolute path of this machine in the outputs).
CLUSTERS = {"fast (paper-8x2-10gbps)": "paper-8x2-10gbps", "slow (tta-slow-8x2, 100 Mbit/s)":
            "docs/tta-slow-8x2.json"}


def stat_run(out: Path, K: int, flags: list[str], env: dict[str, str], mpirun: str) -> None:
    """One statistical run on this machine (skipped when its summary exists: the script resumes)."""
    if (out / "summary.json").is_file():
        return
    cmd = [mpirun, "-n", str(K), sys.executable, "-m", "train", "--quiet", *flags, "--out-dir", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise SystemExit(f"error: {' '.join(cmd)} failed ({proc.returncode}): {' | '.join(tail)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work-dir", default="runs/tta-tradeoff", help="folder of the run folders")
    ap.add_argument("--out", default="runs/tta-tradeoff.jsonl", help="JSONL rows (one per task, config, cluster)")
    ap.add_argument("--figure-dir", default=None, help="write one `analysis tta` figure per task and cluster here")
    ap.add_argument("--w8a-target", type=float, default=0.01, help="f - f* to reach on w8a (default %(default)s)")
    ap.add_argument("--synth-target", type=float, default=0.6, help="test accuracy to reach on the synthetic "
                    "images (default %(default)s)")
    ap.add_argument("--tasks", default="w8a,synthetic", help="comma-separated tasks to run")
    ap.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    ns = ap.parse_args(argv)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MPIR_CVAR_ENABLE_HEAVY_YIELD="1")
    mpirun = mpirun_path(None)
    work = Path(ns.work_dir)
    t0 = time.time()
    print(f"load average before: {os.getloadavg()}", flush=True)
    rows: list[dict[str, Any]] = []
    for task in ns.tasks.split(","):
        spec = TASKS[task]
        target = ns.w8a_target if spec["metric"] == "objective_gap" else ns.synth_target
        tflag = ["--target-loss", repr(target)] if spec["metric"] == "objective_gap" else ["--target-acc",
                                                                                           repr(target)]
        for K, H in GRID:
            out = work / f"{task}-K{K}-H{H}"
            print(f"[{task}] K={K} H={H}", flush=True)
            stat_run(out, K, [*spec["flags"], *tflag, "--algorithm", "local", "--H", str(H)], env, mpirun)
        for cname, cspec in CLUSTERS.items():
            kind, src = load_source(cspec)
            rts = []
            for K, H in GRID:
                kw = {"target_loss": target} if spec["metric"] == "objective_gap" else {"target_acc": target}
                rt = retime(read_run(str(work / f"{task}-K{K}-H{H}")), (kind, src, cspec), **kw)
                rt["label"] = f"K={K} H={H}"
                rts.append(rt)
                tg = rt["target"]
                rows.append({"task": task, "cluster": cname, "K": K, "H": H, "HK": H * K, "metric": spec["metric"],
                             "target": target, "reached": tg["reached"], "steps": tg.get("steps"),
                             "epoch": tg.get("epoch"), "tta_s": tg.get("time_s"),
                             "final": rt["final"].get(spec["metric"]), "predicted_wall_s": rt["predicted_wall_s"],
                             "run_dir": rt["run_dir"]})
            if ns.figure_dir:
                f = work / f"tradeoff-{task}-{cname.split()[0]}.jsonl"   # the figure's input, beside the runs
                f.parent.mkdir(parents=True, exist_ok=True)
                write_jsonl_atomic(f, rts)
                subprocess.run([sys.executable, "-m", "analysis", "tta", str(f), "--out-dir", ns.figure_dir,
                                "--name", f.stem, "--formats", "png", "--quiet"], cwd=ROOT, check=False)
        write_jsonl_atomic(Path(ns.out), rows)
    for task in ns.tasks.split(","):
        for cname in CLUSTERS:
            sub = [r for r in rows if r["task"] == task and r["cluster"] == cname]
            reached = [r for r in sub if r["reached"]]
            best = min(reached, key=lambda r: r["tta_s"]) if reached else None
            for r in sub:
                r["best"] = r is best
            print(f"{task} on {cname}: best " + (f"K={best['K']} H={best['H']} at {best['tta_s']:.4g} s"
                                                 if best else "none reached the target"), flush=True)
    write_jsonl_atomic(Path(ns.out), rows)
    if ns.markdown:
        print(markdown(rows))
    print(f"took {time.time() - t0:.0f} s; load average after: {os.getloadavg()}")
    return 0


def markdown(rows: list[dict[str, Any]]) -> str:
    """One table per task: a row per (K, H) with the statistics and the time to target on each cluster."""
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        sub = [r for r in rows if r["task"] == task]
        clusters = list(dict.fromkeys(r["cluster"] for r in sub))
        m = sub[0]["metric"]
        head = ["K", "H", "H x K", "epochs to target", "final " + ("f - f*" if m == "objective_gap" else "test acc")]
        head += [f"time to target on {c} (s)" for c in clusters]
        out += [f"**{task}** (target {'f - f* <= ' if m == 'objective_gap' else 'test acc >= '}{sub[0]['target']:g})",
                "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for K, H in dict.fromkeys((r["K"], r["H"]) for r in sub):
            cells = [r for r in sub if (r["K"], r["H"]) == (K, H)]
            c0 = cells[0]
            fin = "-" if c0["final"] is None else (f"{c0['final']:.4g}" if m == "objective_gap"
                                                   else f"{100 * c0['final']:.2f} %")
            line = [str(K), str(H), str(H * K), "-" if c0["epoch"] is None else f"{c0['epoch']:.3g}", fin]
            for c in clusters:
                r = next(x for x in cells if x["cluster"] == c)
                v = "not reached" if not r["reached"] else f"{r['tta_s']:.4g}"
                line.append(f"**{v}**" if r.get("best") else v)
            out.append("| " + " | ".join(line) + " |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
