"""The paper's Table 1 layout: speedup to a target accuracy over one worker, K x H, on a preset, from runs here."""
# Usage (from the repository root; about 20-30 minutes on the 2-core machine):
#   python benchmarks/table1_tta.py --work-dir runs/tta-table1 --presets paper-8x2-fitted,paper-8x2-10gbps \
#       --target-acc 0.5 --out docs/tta-table1.jsonl
# The paper's Table 1 reports, per K and H, the speedup of reaching the target accuracy over one GPU. Here every
# cell is a statistical run on this machine (local SGD on K ranks with H; K = 1 is the one-worker reference), the
# time to target of each is its run folder retimed on the preset (sim retime: the simulated clock of that cluster
# for the run's own model, steps, syncs and evaluations), and the speedup is the reference's time to target over
# the cell's. The target is --target-acc (a test accuracy the one-worker run reaches); a cell that does not reach
# it in the run's epochs shows "-". Nothing is fitted to these runs.
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from validate_tta_tradeoff import stat_run  # noqa: E402

from atomicio import write_jsonl_atomic  # noqa: E402
from sim.retime import read_run, retime, speedup  # noqa: E402
from sim.trainrun import load_source  # noqa: E402
from train.calibrate import mpirun_path  # noqa: E402

__all__ = ["TASK", "KS", "HS", "main"]

#: The trainer's default synthetic task, shortened: resnet8 (width 8) on 16 x 16 images, 4 epochs.
TASK = ["--model", "resnet8", "--synthetic-train", "8192", "--synthetic-test", "1024", "--epochs", "4",
        "--eval-every", "0.25", "--lr-warmup-epochs", "1", "--checkpoint-every", "0"]
KS = (2, 4, 8, 16)
HS = (1, 2, 4, 16, 32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work-dir", default="runs/tta-table1", help="folder of the run folders (resumable)")
    ap.add_argument("--presets", default="paper-8x2-fitted,paper-8x2-10gbps", help="comma-separated presets or "
                    "topology files to price the runs on, one table each (default: %(default)s)")
    ap.add_argument("--target-acc", type=float, default=0.5, help="test accuracy to reach (default %(default)s)")
    ap.add_argument("--out", default="runs/tta-table1.jsonl", help="JSONL rows, one per cell")
    ns = ap.parse_args(argv)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MPIR_CVAR_ENABLE_HEAVY_YIELD="1")
    mpirun = mpirun_path(None)
    work = Path(ns.work_dir)
    t0 = time.time()
    print(f"load average before: {os.getloadavg()}", flush=True)
    target = ["--target-acc", repr(ns.target_acc)]
    stat_run(work / "K1", 1, [*TASK, *target, "--algorithm", "minibatch"], env, mpirun)
    for K in KS:
        for H in HS:
            print(f"K={K} H={H}", flush=True)
            stat_run(work / f"K{K}-H{H}", K, [*TASK, *target, "--algorithm", "local", "--H", str(H)], env, mpirun)
    rows: list[dict[str, Any]] = []
    for preset in ns.presets.split(","):
        kind, src = load_source(preset)
        source = (kind, src, preset)
        ref = retime(read_run(str(work / "K1")), source, target_acc=ns.target_acc)
        cells = []
        for K in KS:
            for H in HS:
                rt = retime(read_run(str(work / f"K{K}-H{H}")), source, target_acc=ns.target_acc)
                sp = speedup(rt, ref)
                cells.append({"K": K, "H": H, "speedup": sp["value"], "reason": sp.get("reason"),
                              "tta_s": rt["target"].get("time_s"), "epoch": rt["target"].get("epoch"),
                              "final_acc": rt["final"].get("test_acc"), "reference_tta_s": ref["target"].get("time_s"),
                              "reference_epoch": ref["target"].get("epoch"), "preset": preset,
                              "target_acc": ns.target_acc, "run_dir": rt["run_dir"]})
        print(markdown(cells, ref, preset, ns.target_acc) + "\n")
        rows += cells
    write_jsonl_atomic(Path(ns.out), rows)
    print(f"took {time.time() - t0:.0f} s; load average after: {os.getloadavg()}")
    return 0


def markdown(rows: list[dict[str, Any]], ref: dict[str, Any], preset: str, target: float) -> str:
    tg = ref["target"]
    head = (f"Speedup to {100 * target:g} % test accuracy over one worker on {preset} (one worker: "
            + (f"{tg['time_s']:.4g} s, epoch {tg['epoch']:.3g})" if tg["reached"] else "does not reach it)"))
    out = [head, "", "| K \\ H | " + " | ".join(str(h) for h in HS) + " |", "| --- |" + " --- |" * len(HS)]
    for K in KS:
        cells = []
        for H in HS:
            r = next(x for x in rows if x["K"] == K and x["H"] == H)
            cells.append("-" if r["speedup"] is None else f"{r['speedup']:.2f} ({r['epoch']:.3g} ep)")
        out.append(f"| {K} | " + " | ".join(cells) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
