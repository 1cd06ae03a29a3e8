"""`python -m sim retime RUN_DIR...`: run folders priced on a preset, a topology or a machine file."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from atomicio import OutputError, check_output_file, write_jsonl_atomic
from sim.errors import SimError
from sim.retime import read_run, retime, speedup
from sim.run import ENGINES
from sim.topology import preset_names
from sim.trainrun import load_source

__all__ = ["register", "cmd_retime", "format_retime"]


def register(sub: Any) -> None:
    """Add the `retime` subcommand to sim's subparsers."""
    p = sub.add_parser("retime", help="a trainer run's learning curve, time to target and speedup on another "
                                      "cluster's simulated clock")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders of python -m train (any engine)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--preset", help=f"one of {', '.join(preset_names())}")
    g.add_argument("--topology", help="sim topology JSON file (e.g. written by sim calibrate)")
    g.add_argument("--machine", help="machine file of python -m train calibrate (this machine, measured)")
    t = p.add_mutually_exclusive_group()
    t.add_argument("--target-acc", type=float, help="test accuracy to reach (0..1; default: the run's own target)")
    t.add_argument("--target-loss", type=float, help="objective gap f(w) - f* to reach (runs with --target-loss or "
                   "--log-objective record it)")
    p.add_argument("--reference", metavar="RUN_DIR", help="a one-worker run of the same task, retimed the same "
                   "way: the speedup to target over one worker (the paper's Table 1)")
    p.add_argument("--nodes", type=int, help="--machine: the nodes the workers sit on (default 1)")
    p.add_argument("--network", metavar="FILE|PRESET", help="--machine: the links between the nodes (a sim "
                   "calibrate --bench fit)")
    p.add_argument("--load", type=float, help="--machine: other runnable processes sharing the cores (default: the "
                   "calibration's mean)")
    p.add_argument("--engine", choices=ENGINES, default="fast", help="fast (memoised) or event (reference)")
    p.add_argument("--out", help="JSON-lines file: one retimed run per line (python -m analysis tta draws it)")
    p.add_argument("--json", action="store_true", help="print one JSON object per run")
    p.set_defaults(func=cmd_retime)


def _fmt_t(v: Any) -> str:
    return "-" if v is None else f"{v:.3f} s"


def format_retime(r: dict[str, Any]) -> str:
    """The human report of one retimed run."""
    tg, p = r["target"], r["prediction"]
    alg = r["algorithm"] + ("" if r["algorithm"] == "minibatch" else f" H={r['H']}") + \
        (f" Hb={r['Hb']}" if r["algorithm"] == "hierarchical" else "")
    what = f"test acc >= {tg['value']:g}" if tg["metric"] == "test_acc" else f"f - f* <= {tg['value']:g}"
    lines = [(f"{r['run_dir']}: {alg}, K={r['workers']}, batch {r['batch_size']}, {r['momentum_variant']} "
              f"momentum, seed {r['seed']} on {r['topology']}"),
             (f"  whole run        {_fmt_t(r['predicted_wall_s'])} predicted ({p['total_steps']} steps; measured "
              f"here {_fmt_t(r['measured_wall_s'])}){'' if r['complete'] else ' [run not complete]'}")]
    if tg["reached"]:
        lines.append(f"  time to target   {_fmt_t(tg['time_s'])} ({what} at step {tg['step']}, epoch "
                     f"{tg['epoch']:.3f}; interpolated {_fmt_t(tg['interpolated_time_s'])})")
        lines.append(f"  to the target    {tg['steps']} steps, {tg['syncs_global']} global + {tg['syncs_block']} "
                     f"block syncs, {tg['bytes_sent']:,} B sent per worker")
    else:
        lines.append(f"  time to target   not reached ({what}) by epoch {r['final']['epoch'] or 0:.3f}, "
                     f"{_fmt_t(r['reached_time_s'])} into the run")
    sp = r.get("speedup")
    if sp is not None:
        lines.append(f"  speedup          {sp['value']:.2f} x over one worker ({_fmt_t(sp['reference_time_s'])})"
                     if sp["value"] is not None else f"  speedup          - ({sp['reason']})")
    fin = r["final"]
    if fin.get("test_acc") is not None:
        lines.append(f"  final            test acc {100 * fin['test_acc']:.2f} % at epoch {fin['epoch']:.3f}"
                     + (f", f - f* {fin['objective_gap']:.4g}" if fin.get("objective_gap") is not None else ""))
    for n in p["notes"]:
        lines.append(f"  note: {n}")
    return "\n".join(lines)


def cmd_retime(a: argparse.Namespace) -> int:
    if a.out:
        try:
            check_output_file(a.out, what="--out")
        except OutputError as e:
            raise SimError(str(e)) from None
    spec = a.preset or a.topology or a.machine
    if a.preset and a.preset not in preset_names():
        raise SimError(f"preset must be one of {', '.join(preset_names())}, got {a.preset!r}")
    kind, src = load_source(spec)
    if a.machine and kind != "machine":
        raise SimError(f"machine {a.machine!r} is not a train.machine/1 file of python -m train calibrate; "
                       f"use --topology for a sim topology")
    if a.topology and kind == "machine":
        raise SimError(f"topology {a.topology!r} is a machine file; use --machine for it")
    if kind != "machine" and (a.nodes is not None or a.network is not None or a.load is not None):
        raise SimError("nodes, network and load apply to --machine only (a topology has its own nodes and links)")
    runs = [read_run(d) for d in a.run_dirs]   # every folder is read before any is priced
    ref_run = read_run(a.reference) if a.reference else None
    kw = dict(target_acc=a.target_acc, target_loss=a.target_loss, load=a.load, nodes=a.nodes, network=a.network,
              engine=a.engine)
    ref = None
    if ref_run is not None:
        first = retime(runs[0], (kind, src, spec), **kw)   # the reference shares the runs' target
        tg = first["target"]
        ref_kw = dict(kw, nodes=None, target_acc=tg["value"] if tg["metric"] == "test_acc" else None,
                      target_loss=tg["value"] if tg["metric"] == "objective_gap" else None)
        ref = retime(ref_run, (kind, src, spec), **ref_kw)
    out = []
    for run in runs:
        r = retime(run, (kind, src, spec), **kw)
        if ref is not None:
            r["speedup"] = speedup(r, ref)
        out.append(r)
        if a.json:
            print(json.dumps(r), flush=True)
        else:
            print(format_retime(r), flush=True)
    if a.out:
        write_jsonl_atomic(a.out, out + ([dict(ref, role="reference")] if ref is not None else []))
        if not a.json:
            print(f"wrote {len(out) + (ref is not None)} retimed runs to {a.out}", file=sys.stderr)
    return 0
