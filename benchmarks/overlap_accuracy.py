"""Accuracy of overlapped against blocking local SGD, and of DiLoCo's outer Nesterov against SlowMo, over seeds."""
# Usage (from the repository root; about 15 minutes on the 2-core machine):
#   python benchmarks/overlap_accuracy.py --seeds 0,1,2 --out docs/overlap-accuracy.jsonl --markdown
# Every run is `mpirun -n 4 python -m train` on this machine (accuracy does not depend on the links), one per task,
# variant and seed, and the final test accuracy and loss are read from its summary.json. Tasks:
#   synthetic: ResNet-8 (width 8) on the trainer's default synthetic images (8,192 of 3 x 16 x 16, noise 6),
#              local SGD with H = 8, batch 32, 8 epochs;
#   w8a:       binary logistic regression on w8a (../shared/data/w8a, 20 % held out), H = 8, batch 16, 2 epochs,
#              lr 0.5 at the reference batch 128 (scaled linearly), no weight decay.
# Variants: blocking local SGD; overlapped with tau = 1 and tau = 4; SlowMo (alpha 1, beta 0.5, the best of
# docs/README-averager.md's three); DiLoCo's outer Nesterov (lr 0.7, momentum 0.9, DiLoCo's values). Nothing tuned.
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DATA = os.environ.get("LOCALSGD_DATA") or str(ROOT.parent / "shared" / "data")
TASKS = {
    "synthetic": ["--model", "resnet8", "--dataset", "synthetic", "--algorithm", "local", "--H", "8",
                  "--batch-size", "32", "--epochs", "8", "--lr-warmup-epochs", "1"],
    "w8a": ["--model", "logreg-binary", "--dataset", "w8a", "--data-dir", DATA,
            "--algorithm", "local", "--H", "8", "--batch-size", "16", "--epochs", "2", "--lr", "0.5",
            "--lr-warmup-epochs", "0.2", "--weight-decay", "0"],
}
VARIANTS = {
    "blocking": [],
    "overlap tau=1": ["--overlap"],
    "overlap tau=4": ["--overlap", "--overlap-steps", "4"],
    "slowmo a=1 b=0.5": ["--momentum-variant", "slowmo", "--slow-lr", "1.0", "--slow-momentum", "0.5"],
    "diloco nesterov lr=0.7 m=0.9": ["--outer-optimizer", "nesterov", "--outer-lr", "0.7", "--outer-momentum", "0.9"],
}


def markdown(rows: list[dict]) -> str:
    seeds = sorted({r["seed"] for r in rows})
    out = ["| task | variant | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
           "| --- | --- | " + " | ".join("---" for _ in seeds) + " | --- |"]
    for task in TASKS:
        for v in VARIANTS:
            mine = {r["seed"]: r for r in rows if r["task"] == task and r["variant"] == v}
            if not mine:
                continue
            cells = [f"{100 * mine[s]['test_acc']:.2f} % ({mine[s]['test_loss']:.4f})" if s in mine else "-"
                     for s in seeds]
            acc = statistics.mean(r["test_acc"] for r in mine.values())
            loss = statistics.mean(r["test_loss"] for r in mine.values())
            out.append(f"| {task} | {v} | " + " | ".join(cells) + f" | {100 * acc:.2f} % ({loss:.4f}) |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--work-dir", default="runs/overlap-accuracy")
    ap.add_argument("--out", default=None, help="JSONL table (one line per run)")
    ap.add_argument("--markdown", action="store_true")
    ns = ap.parse_args(argv)
    for name, known in (("tasks", TASKS), ("variants", VARIANTS)):
        bad = [x for x in getattr(ns, name).split(",") if x not in known]
        if bad:
            print(f"error: --{name}: unknown {bad[0]!r}; valid: {', '.join(known)}", file=sys.stderr)
            return 2
    mpirun = str(Path(sys.executable).with_name("mpirun"))
    env = dict(os.environ, OMP_NUM_THREADS="1", MPIR_CVAR_ENABLE_HEAVY_YIELD="1")
    rows = []
    for seed in [int(s) for s in ns.seeds.split(",")]:
        for task in ns.tasks.split(","):
            for v in ns.variants.split(","):
                run_dir = Path(ns.work_dir) / f"{task}-{v.replace(' ', '_').replace('=', '')}-seed{seed}"
                if not (run_dir / "summary.json").is_file():
                    cmd = [mpirun, "-n", str(ns.workers), sys.executable, "-m", "mpi4py", "-m", "train",
                           *TASKS[task], *VARIANTS[v], "--seed", str(seed), "--target-acc", "0.99", "--quiet",
                           "--no-progress", "--out-dir", str(run_dir)]
                    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
                    if proc.returncode != 0:
                        print(f"error: {task} {v} seed {seed} failed: {(proc.stderr or proc.stdout)[-1500:]}",
                              file=sys.stderr)
                        return 1
                s = json.loads((run_dir / "summary.json").read_text())
                row = {"task": task, "variant": v, "seed": seed, "test_acc": s["final"]["test_acc"],
                       "test_loss": s["final"]["test_loss"], "train_loss": s["final"]["train_loss"],
                       "best_test_acc": s["best_test_acc"], "syncs": s["syncs"], "wall_s": s["wall_s"],
                       "flags": " ".join(TASKS[task] + VARIANTS[v]).replace(DATA, "../shared/data")}
                rows.append(row)
                print(json.dumps(row), flush=True)
                if ns.out:
                    sys.path.insert(0, str(ROOT))
                    from atomicio import write_jsonl_atomic
                    write_jsonl_atomic(Path(ns.out), rows)
    if ns.markdown:
        print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
