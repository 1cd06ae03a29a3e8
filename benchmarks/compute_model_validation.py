"""Validate the layer compute model on measured step times: fit on two models, predict the others (issue 22)."""
# Input: a compute profile written by `python -m train calibrate --profile-only` (docs/compute-profile-cpu.json is
# this machine's). The fit is the one `train calibrate` uses (train.stepprofile.CPU_HOLD: the per-sample cost held
# at 0, peak FLOP/s, memory bytes/s, per-kernel and per-step costs free), on the models of --fit only; every other
# model's step time at every profiled batch is then predicted from its layer table and compared with its
# measurement. The fit pair is fixed in advance (--fit, default resnet20 and wideresnet16-4: a narrow and a wide
# network); --all-pairs also reports every other pair, so that the choice of the pair can be judged.
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.layermodel import StepPoint, fit_device, step_seconds
from sim.layers import canonical_name, layer_table
from train.stepprofile import CPU_HOLD

__all__ = ["main", "validate"]


def validate(points: list[StepPoint], fit_models: tuple[str, ...]) -> tuple[list[dict], dict]:
    """Rows (model, batch, measured, predicted, error, role) and the fitted constants."""
    fit = fit_device([p for p in points if p.table.model in fit_models], fixed=dict(CPU_HOLD))
    rows = []
    for p in points:
        pred = step_seconds(p.table, p.batch, fit.constants)
        role = "fit" if p.table.model in fit_models else "predicted"
        rows.append({"model": p.table.model, "batch": p.batch, "measured_s": p.seconds, "predicted_s": pred,
                     "rel_error": pred / p.seconds - 1.0, "role": role})
    c = fit.constants
    return rows, {"peak_GFLOPs": c.peak_flops / 1e9, "mem_GBps": c.mem_bps / 1e9, "launch_us": 1e6 * c.launch_s,
                  "step_ms": 1e3 * c.step_s, "sample_us": 1e6 * c.sample_s}


def _median_pred(rows: list[dict]) -> float:
    return statistics.median(abs(r["rel_error"]) for r in rows if r["role"] == "predicted")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("profile", nargs="?", default="docs/compute-profile-cpu.json", help="compute profile JSON")
    ap.add_argument("--fit", default="resnet20,wideresnet16-4", help="the two (or more) models to fit on")
    ap.add_argument("--all-pairs", action="store_true", help="also the median error of every other fit pair")
    ap.add_argument("--json", action="store_true", help="one JSON object")
    a = ap.parse_args(argv)
    prof = json.loads(Path(a.profile).read_text())
    points = [StepPoint(layer_table(r["model"]), int(r["batch"]), float(r["seconds"])) for r in prof["points"]]
    fit_models = tuple(canonical_name(m.strip()) for m in a.fit.split(",") if m.strip())
    rows, consts = validate(points, fit_models)
    models = sorted({p.table.model for p in points})
    pairs = {}
    if a.all_pairs:
        for pair in itertools.combinations(models, 2):
            pairs[",".join(pair)] = _median_pred(validate(points, pair)[0])
    med = _median_pred(rows)
    worst = max(abs(r["rel_error"]) for r in rows if r["role"] == "predicted")
    if a.json:
        print(json.dumps({"fit": list(fit_models), "constants": consts, "rows": rows, "median_abs_error": med,
                          "worst_abs_error": worst, "pairs": pairs}))
        return 0
    print(f"profile {a.profile}: {len(points)} points, load average {prof['load_avg_before'][0]:.1f} before, "
          f"{prof['load_avg_after'][0]:.1f} after; fitted on {', '.join(fit_models)}: "
          f"{consts['peak_GFLOPs']:.4g} GFLOP/s, {consts['mem_GBps']:.4g} GB/s, {consts['launch_us']:.3g} us per "
          f"kernel, {consts['step_ms']:.3g} ms per step")
    print("| model | batch | measured ms | modelled ms | error | |\n| --- | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {1e3 * r['measured_s']:.1f} | {1e3 * r['predicted_s']:.1f} | "
              f"{100 * r['rel_error']:+.1f} % | {r['role']} |")
    print(f"predicted points: median |error| {100 * med:.1f} %, worst {100 * worst:.1f} % (goal: median <= 20 %)")
    for pair, m in pairs.items():
        print(f"  fit on {pair}: median |error| of the others {100 * m:.1f} %")
    if pairs:
        print(f"  over all {len(pairs)} pairs: median {100 * statistics.median(pairs.values()):.1f} %, "
              f"worst {100 * max(pairs.values()):.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
