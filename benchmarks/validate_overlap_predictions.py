"""Predictions of hidden communication on the emulated cluster: bucketed mini-batch and overlapped local SGD runs,
each predicted before it starts (as benchmarks/validate_cluster_predictions.py does for blocking syncs)."""
# Usage (from the repository root, as root; about 15 minutes on the 2-core machine):
#   python benchmarks/validate_overlap_predictions.py --work-dir runs/overlap-validate \
#       --table docs/overlap-predict-table.jsonl --figure-dir docs/img/overlap --markdown
# 1. Calibration, nothing of it in the matrix: this machine with the matrix's model (`python -m train calibrate`),
#    and the links at each rate (`comm bench --level inter` on 4 nodes x 1 at 192 KiB-3 MiB, none of them a size of
#    the matrix's messages, fitted by `python -m sim calibrate --bench`).
# 2. The matrix: `python -m cluster run ... -- python -m train ... --predict-topology MACHINE --predict-network NET
#    --predict-load L`: rank 0 predicts the run before it starts and summary.json keeps the prediction.
# The model is ResNet-8 of width 16 on 3 x 32 x 32 synthetic images (78,042 parameters, 312,168 bytes): at 25 and
# 100 Mbit/s one sync's communication takes about 0.5 to 3 steps' compute of 4 or 8 ranks on the 2 cores, the
# regime where hiding it matters.
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from validate_cluster_predictions import _run, calibrate_links, markdown, run_matrix  # noqa: E402
from validate_predictions import print_table, row, select_rows  # noqa: E402

from atomicio import write_jsonl_atomic  # noqa: E402

__all__ = ["MODEL", "MATRIX", "main"]

MODEL = ["--model", "resnet8", "--width", "16", "--synthetic-size", "32", "--synthetic-train", "4096",
         "--synthetic-test", "1024", "--eval-every", "2"]
#: (name, nodes, ranks per node, rate, trainer flags)
MATRIX: list[tuple[str, int, int, str, list[str]]] = [
    ("4x1 25mbit minibatch buckets", 4, 1, "25mbit", ["--algorithm", "minibatch", "--epochs", "2"]),
    ("4x1 25mbit minibatch unbucketed", 4, 1, "25mbit", ["--algorithm", "minibatch", "--bucket-size", "0",
                                                         "--epochs", "2"]),
    ("4x1 25mbit local H=4 overlap tau=1", 4, 1, "25mbit", ["--algorithm", "local", "--H", "4", "--overlap",
                                                            "--epochs", "4"]),
    ("4x1 100mbit local H=4 overlap tau=4", 4, 1, "100mbit", ["--algorithm", "local", "--H", "4", "--overlap",
                                                              "--overlap-steps", "4", "--epochs", "4"]),
    ("4x2 25mbit minibatch buckets", 4, 2, "25mbit", ["--algorithm", "minibatch", "--epochs", "2"]),
    ("4x2 25mbit local H=4 overlap tau=2", 4, 2, "25mbit", ["--algorithm", "local", "--H", "4", "--overlap",
                                                            "--overlap-steps", "2", "--epochs", "4"]),
    ("4x2 100mbit postlocal H=8 overlap, buckets", 4, 2, "100mbit", ["--algorithm", "postlocal", "--H", "8",
                                                                     "--switch-epoch", "1", "--overlap", "--epochs",
                                                                     "4"]),
    ("4x2 100mbit hierarchical H=2 Hb=2 overlap", 4, 2, "100mbit", ["--algorithm", "hierarchical", "--H", "2",
                                                                    "--Hb", "2", "--overlap", "--epochs", "4"]),
]


def calibrate(work: Path, rates: list[str], env: dict[str, str], machine: Path | None) -> tuple[Path, dict[str, Path]]:
    """The machine file (unless given) with the matrix's model, and one inter-level fit per link rate."""
    if machine is None:
        machine = work / "machine.json"
        print(f"calibrating this machine with the matrix's model -> {machine}", flush=True)
        mflags = [f for f in MODEL if f not in ("--eval-every", "2", "--synthetic-test", "1024")]
        _run([sys.executable, "-m", "train", "calibrate", "--out", str(machine), "--name",
              "2-core box (emulated cluster, resnet8 w16)", *mflags], "train calibrate", env, ok=(0, 3))
        # exit status 3: written, but a probe misfits (measured here: the 3-rank sync probe on shared memory, which
        # none of the matrix's runs use; their links are the inter fits below); --predict repeats the warning
    return machine, calibrate_links(work, rates, env, iters=5, warmup=1, reuse=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work-dir", default=None, help="folder for the calibration files and the run folders")
    ap.add_argument("--machine", default=None, help="an existing machine file made with the matrix's model")
    ap.add_argument("--table", default="runs/overlap-predict-table.jsonl", help="JSONL table to write")
    ap.add_argument("--figure-dir", default=None, help="write the `analysis predict` figure here (predict.png)")
    ap.add_argument("--only", default=None, help="comma-separated row numbers (0-based) of the matrix to run")
    ap.add_argument("--markdown", action="store_true", help="also print the table as markdown")
    ap.add_argument("--repredict", action="store_true", help="run nothing: predict the runs already in --work-dir "
                    "again with today's model, from their own calibration files and sampled loads")
    ns = ap.parse_args(argv)
    matrix = select_rows(MATRIX, ns.only)
    if matrix is None:
        return 2
    if ns.repredict:
        return repredict(ns, matrix)
    return run_matrix(ns, matrix, MODEL, calibrate, "overlap-validate", extra=_hidden)


def repredict(ns: argparse.Namespace, matrix: list[tuple[str, int, int, str, list[str]]]) -> int:
    """The rows of a matrix that ran before, each predicted again now from the run's own config.json, the work
    dir's machine and link files and the load sampled before the run: what a change of the model does to runs
    it did not see (nothing is measured again)."""
    from train.config import TrainConfig
    from train.predict import predict
    if not ns.work_dir or not (Path(ns.work_dir) / "machine.json").is_file():
        print("error: --repredict needs --work-dir of a matrix that ran (with its machine.json)", file=sys.stderr)
        return 2
    work, rows = Path(ns.work_dir), []
    for i, (name, nodes, per_node, rate, flags) in enumerate(matrix):
        slug = name.replace(" ", "_").replace("=", "").replace(":", "-").replace(",", "")
        out = work / f"{i:02d}-{slug}"  # numbered as run_matrix numbers the rows it ran (of --only, if given)
        summary = json.loads((out / "summary.json").read_text())
        conf = json.loads((out / "config.json").read_text())["config"]
        cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in conf.items()})
        load = float(summary["prediction"]["background_load"])
        summary["prediction"] = predict(cfg, nodes * per_node, str(work / "machine.json"), load=load, nodes=nodes,
                                        network=str(work / f"net-{rate}.json"), sample_load=False)
        r = row(name, nodes * per_node, flags, summary, load)
        r.update(nodes=nodes, ranks_per_node=per_node, rate=rate, model_flags=" ".join(MODEL), repredicted=True,
                 **_hidden(summary))
        rows.append(r)
    write_jsonl_atomic(Path(ns.table), rows)
    print_table(rows, 0.0, ns.table)
    if ns.markdown:
        print(markdown(rows))
    return 0


def _hidden(summary: dict[str, Any]) -> dict[str, Any]:
    """The communication the prediction hid, and the time the run's overlapped all-reduces were in flight."""
    tot = summary["totals_mean"]
    return {"hidden_predicted_s": summary["prediction"].get("hidden_s"),
            "inflight_measured_s": (tot.get("inflight_s_global") or 0.0) + (tot.get("inflight_s_block") or 0.0)}


if __name__ == "__main__":
    sys.exit(main())
