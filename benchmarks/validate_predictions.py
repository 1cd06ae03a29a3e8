"""Run a matrix of real mpirun trainer runs, each predicted beforehand; write the JSONL table and the figure."""
# Usage (from the repository root):
#   python -m train calibrate --out runs/machine.json              # first, in the same quiet window
#   python benchmarks/validate_predictions.py --machine runs/machine.json --table docs/predict-table.jsonl \
#       --figure-dir docs/img
# Each run is launched with --predict-topology MACHINE, so the prediction is made before the run starts and
# recorded in its summary.json next to the measured wall time; nothing measured in a run feeds its own prediction.
# The background load (other runnable processes, from /proc/stat) is sampled for two seconds before each run and
# passed to the prediction (--predict-load), as the calibration did for its probes; --fixed-load uses the
# calibration's mean load instead.
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from atomicio import write_jsonl_atomic  # noqa: E402
from train.calibrate import background_load, mpirun_path  # noqa: E402

T = TypeVar("T")

__all__ = ["MATRIX", "main", "row", "select_rows", "print_table", "render_figure"]

#: (name, ranks, trainer flags). K in {2, 4, 8, 16}; mini-batch and local with H in {4, 16}; hierarchical on
#: virtual 2-GPU nodes; one run with --global-sync-delay. The calibration probes (1, 3 and 6 ranks) are not here.
MATRIX: list[tuple[str, int, list[str]]] = [
    ("minibatch K=2", 2, ["--algorithm", "minibatch"]),
    ("local K=2 H=4", 2, ["--algorithm", "local", "--H", "4"]),
    ("minibatch K=4", 4, ["--algorithm", "minibatch"]),
    ("local K=4 H=16", 4, ["--algorithm", "local", "--H", "16"]),
    ("minibatch K=8", 8, ["--algorithm", "minibatch"]),
    ("local K=8 H=4", 8, ["--algorithm", "local", "--H", "4"]),
    ("hierarchical 4x2 H=2 Hb=4", 8, ["--algorithm", "hierarchical", "--H", "2", "--Hb", "4", "--gpus-per-node", "2"]),
    ("minibatch K=16", 16, ["--algorithm", "minibatch"]),
    ("local K=16 H=4", 16, ["--algorithm", "local", "--H", "4"]),
    ("local K=16 H=16", 16, ["--algorithm", "local", "--H", "16"]),
    ("hierarchical 8x2 H=2 Hb=4 delay 0.05 s", 16, ["--algorithm", "hierarchical", "--H", "2", "--Hb", "4",
                                                   "--gpus-per-node", "2", "--global-sync-delay", "0.05"]),
]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """The table, atomically (atomicio: temp, fsync, rename, fsync of the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(path, rows)


def row(name: str, K: int, flags: list[str], summary: dict[str, Any], load: float) -> dict[str, Any]:
    """One table row: the prediction recorded in summary.json next to the measured wall time and splits."""
    pred, tot = summary["prediction"], summary["totals_mean"]
    meas = summary["wall_s"]
    return {
        "name": name, "predicted_s": pred["wall_s"], "measured_s": meas,
        "rel_error": (pred["wall_s"] - meas) / meas, "K": K, "flags": " ".join(flags), "sampled_load": load,
        "predicted_load": pred.get("background_load"),
        "loadavg_1min_after": os.getloadavg()[0], "cpu_share": pred["cpu_share"],
        "predicted": {k: pred.get(k, 0.0) for k in ("compute_s", "comm_intra_s", "comm_inter_s", "wait_s",
                                                    "barrier_s", "delay_s", "eval_s", "checkpoint_s")},
        "measured": {"compute_s": tot.get("compute_s"), "eval_s": tot.get("eval_s"),
                     "comm_s": (tot.get("comm_s_global") or 0.0) + (tot.get("comm_s_block") or 0.0),
                     "wait_s": (tot.get("wait_s_global") or 0.0) + (tot.get("wait_s_block") or 0.0),
                     "checkpoint_s": tot.get("checkpoint_s"),
                     "startup_s": summary.get("startup_s")},
        "run_dir": summary["run_dir"],
    }


def select_rows(matrix: list[T], only: str | None) -> list[T] | None:
    """The rows `--only` names (comma-separated 0-based numbers), all without it; None after one error line."""
    if not only:
        return matrix
    try:
        return [matrix[int(i)] for i in only.split(",")]
    except (ValueError, IndexError):
        print(f"error: --only must be row numbers 0..{len(matrix) - 1}, got {only!r}", file=sys.stderr)
        return None


def print_table(rows: list[dict[str, Any]], took_s: float, table: str) -> None:
    """The human table and the median and worst |error|."""
    errs = [abs(r["rel_error"]) for r in rows]
    print(f"{'run':<40}{'K':>3}{'load':>6}{'predicted s':>13}{'measured s':>12}{'error':>9}")
    for r in rows:
        print(f"{r['name']:<40}{r['K']:>3}{r['sampled_load']:>6.2f}{r['predicted_s']:>13.2f}"
              f"{r['measured_s']:>12.2f}{100 * r['rel_error']:>+8.1f}%")
    print(f"median |error| {100 * statistics.median(errs):.1f} %, worst {100 * max(errs):.1f} % over {len(rows)} "
          f"runs; matrix took {took_s:.0f} s; table {table}")


def render_figure(table: str, figure_dir: str) -> bool:
    """`python -m analysis predict` on the table; False (with one error line) if it fails."""
    fig = subprocess.run([sys.executable, "-m", "analysis", "predict", "--table", table, "--out-dir", figure_dir,
                          "--formats", "png", "--quiet"], cwd=ROOT, capture_output=True, text=True, check=False)
    if fig.returncode != 0:
        print(f"error: analysis predict failed: {fig.stderr.strip()}", file=sys.stderr)
        return False
    print(f"figure {Path(figure_dir) / 'predict.png'}")
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--machine", required=True, help="machine file from `python -m train calibrate`")
    ap.add_argument("--table", default="runs/predict-table.jsonl", help="JSONL table to write")
    ap.add_argument("--runs-dir", default=None, help="folder for the run folders (default: a new one under runs/)")
    ap.add_argument("--figure-dir", default=None, help="write the `analysis predict` figure here (predict.png)")
    ap.add_argument("--only", default=None, help="comma-separated row numbers (0-based) of the matrix to run")
    ap.add_argument("--mpirun", default=None, help="mpirun to use")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--fixed-load", action="store_true", help="predict with the calibration's mean background load "
                    "instead of the load sampled before each run")
    ap.add_argument("extra", nargs="*", help="extra trainer flags for every run (after --)")
    ns = ap.parse_args(argv)
    if not Path(ns.machine).is_file():
        print(f"error: machine file {ns.machine!r} does not exist; write it with python -m train calibrate",
              file=sys.stderr)
        return 2
    matrix = select_rows(MATRIX, ns.only)
    if matrix is None:
        return 2
    runs_dir = Path(ns.runs_dir or f"runs/validate-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
    runs_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    mpirun = mpirun_path(ns.mpirun)
    from tqdm import tqdm
    bar = tqdm(matrix, unit="run", disable=ns.quiet or not sys.stderr.isatty())
    rows: list[dict[str, Any]] = []
    t0 = time.time()
    for i, (name, K, flags) in enumerate(bar):
        bar.set_description(name)
        load = background_load(seconds=2.0, samples=40)
        out = runs_dir / f"{i:02d}-{name.replace(' ', '_').replace('=', '')}"
        cmd = [mpirun, "-n", str(K), sys.executable, "-m", "train", "--quiet", "--out-dir", str(out),
               "--predict-topology", ns.machine, *([] if ns.fixed_load else ["--predict-load", f"{load:.3f}"]),
               *flags, *ns.extra]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, check=False)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
            print(f"error: run {name!r} failed with exit status {proc.returncode}: {tail[0]}", file=sys.stderr)
            return 1
        summary = json.loads((out / "summary.json").read_text())
        rows.append(row(name, K, flags, summary, load))
        _write_jsonl(Path(ns.table), rows)
    print_table(rows, time.time() - t0, ns.table)
    if ns.figure_dir and not render_figure(ns.table, ns.figure_dir):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
