"""The paper's Table 7 layout (K = 16 on 8 x 2 Titan Xp, 10 Gbps): simulated speedup of local SGD for three models.

Speedup is the simulator's: one worker's time for the same samples over the K = 16 run's wall time (300 epochs of
CIFAR-10, local batch 128, local SGD with H = 1, 16, 32). Rows come from the presets as shipped (paper-8x2-fitted,
whose per-sync cost grows with the bytes, --sync-split scaled), from the same fit with --sync-split fixed (the same
cost per sync for every model), and from the link-spec preset paper-8x2-10gbps. Nothing here is fitted to Table 7.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.compute import get_model
from sim.fitruns import fit_runs, fitted_topology, read_runs
from sim.run import RunConfig, simulate
from sim.schedule import SyncSchedule
from sim.topology import Topology, load_topology

__all__ = ["main", "MODELS", "HS"]

MODELS = ("resnet20", "densenet40-12", "wrn28-10")
HS = (1, 16, 32)
RUNS = Path(__file__).resolve().parents[1] / "sim" / "presets" / "paper-8x2-runs.csv"


def _row(topo: Topology, model: str) -> dict[str, Any]:
    spec = get_model(model)
    out: dict[str, Any] = {"preset": topo.name, "model": model}
    for H in HS:
        cfg = RunConfig(topology=topo, model=spec, K=16, B=128, N=300 * spec.train_samples,
                        schedule=SyncSchedule(algorithm="local", H=H))
        r = simulate(cfg).to_json()
        out[f"H{H}"] = r["speedup"]
        out.update(step_s=r["step_s"], compute_source=r["compute_source"], sync_s=r["sync_global_s"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="one JSON object per row")
    a = ap.parse_args(argv)
    spec_preset = load_topology("paper-8x2-10gbps")
    fixed = fitted_topology(spec_preset, fit_runs(read_runs([RUNS]), spec_preset, "fixed"),
                            name="paper-8x2-fitted --sync-split fixed", table=str(RUNS))
    rows = [_row(t, m) for t in (load_topology("paper-8x2-fitted"), fixed, spec_preset) for m in MODELS]
    if a.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    print("| preset | model | step (B = 128) | per global sync | H = 1 | H = 16 | H = 32 | order at H = 1 |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for i in range(0, len(rows), len(MODELS)):
        group = rows[i:i + len(MODELS)]
        order = " < ".join(r["model"] for r in sorted(group, key=lambda r: r["H1"]))
        for j, r in enumerate(group):
            print(f"| {r['preset'] if j == 0 else ''} | {r['model']} | {1e3 * r['step_s']:.1f} ms "
                  f"({r['compute_source']}) | {1e3 * r['sync_s']:.1f} ms | {r['H1']:.2f} | {r['H16']:.2f} | "
                  f"{r['H32']:.2f} | {order if j == 0 else ''} |")
    print("published order at H = 1 (Lin et al., Table 7, as quoted in issue 22): wrn28-10 < densenet40-12 < resnet20")
    return 0


if __name__ == "__main__":
    sys.exit(main())
