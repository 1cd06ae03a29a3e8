"""Command line of the simulator: `python -m sim cost|run|whatif|calibrate|retime` (and `convex`)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
from typing import Any

from atomicio import EXIT_OUTPUT, OutputError, check_output_file
from sim.clivocab import VocabParser, group_by_topic, name_flags, typed_options
from sim.compute import MODELS, get_model
from sim.costs import eq6, eq6_counts
from sim.errors import SimError
from sim.jitter import parse_jitter
from sim.overlap import parse_bytes, uniform_buckets
from sim.run import ALLREDUCE_CHOICES, COMPRESSIONS, ENGINES, RunConfig, simulate
from sim.schedule import ALGORITHMS, WARMUPS, SyncSchedule, total_steps
from sim.stragglers import parse_stragglers
from sim.topology import LINK_SHARING, Topology, load_topology, preset_names, save_topology
from sim.whatif import JsonlWriter, format_table, run_sweep, sweep_points

__all__ = ["main", "build_parser"]

DEFAULT_PRESET = "paper-8x2-10gbps"


def _ints(text: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals:
        raise argparse.ArgumentTypeError(f"expected at least one integer, got {text!r}")
    return vals


def _strs(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _add_workload(p: argparse.ArgumentParser) -> None:
    """Flags shared by run and whatif: model, data, schedule details, all-reduce, delays, stragglers."""
    p.add_argument("--model", default="resnet20", help=f"one of {', '.join(MODELS)} (default resnet20), or another "
                   "of the trainer's image models (resnetD, densenetD-K, wideresnetD-K); wideresnet28-10, as train "
                   "spells it, is wrn28-10")
    p.add_argument("--batch-size", old=("--B",), dest="B", type=int, default=128,
                   help="local batch per worker per step (default 128)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=float, default=None, help="epochs of the model's dataset (default 300)")
    g.add_argument("--N", type=int, default=None, help="total samples accessed by all workers together")
    p.add_argument("--switch-epoch", type=float, default=None,
                   help="postlocal: epoch of the switch to local SGD (default: the first LR decay, step ceil(T/2))")
    p.add_argument("--local-warmup", old=("--warmup",), dest="warmup", choices=WARMUPS, default="constant",
                   help="local-step warm-up shape")
    p.add_argument("--local-warmup-steps", old=("--warmup-steps",), dest="warmup_steps", type=int, default=0,
                   metavar="STEPS", help="warm-up length in steps")
    p.add_argument("--allreduce", choices=ALLREDUCE_CHOICES, default="auto",
                   help="all-reduce algorithm (auto: MPICH-like, hierarchical across nodes; paper: C lg p)")
    p.add_argument("--global-sync-delay", old=("--delay-global",), dest="delay_global", type=float, default=0.0,
                   metavar="S", help="extra seconds per global sync")
    p.add_argument("--block-sync-delay", old=("--delay-block",), dest="delay_block", type=float, default=0.0,
                   metavar="S", help="extra seconds per block sync")
    p.add_argument("--straggler", old=("--stragglers",), dest="stragglers", default="none", metavar="SPEC",
                   help="none | random:PROB:SLOWDOWN | fixed:RANK:SLOWDOWN | RANK:SLOWDOWN (= fixed, as in train)")
    p.add_argument("--jitter", default="none", help="per-(worker, step) compute-time noise, mean 1: none | "
                   "lognormal:CV | empirical:FILE (JSON list of step seconds, or a train calibrate machine file)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random stragglers and of the jitter")
    p.add_argument("--link-sharing", choices=LINK_SHARING, default=None,
                   help="how concurrent messages share a port or NIC direction: fair (max-min, the default "
                        "unless the topology file says fifo) or fifo (one message at a time)")
    p.add_argument("--compress", old=("--compression",), dest="compression", choices=COMPRESSIONS, default="none",
                   help="sign / ef-sign: syncs all-gather 1 bit per parameter (+ a scale) instead of all-reducing")
    p.add_argument("--bucket-size", dest="bucket_bytes", type=_bytes, default=0, metavar="BYTES",
                   help="mini-batch steps: gradient buckets of this many bytes all-reduced during the backward pass "
                        "(sim/overlap.py; 0, the default here: one all-reduce after it; train's default is 256K)")
    p.add_argument("--first-bucket-size", dest="first_bucket_bytes", type=_bytes, default=64 * 1024,
                   metavar="BYTES", help="the first (smaller) gradient bucket (default 64K)")
    p.add_argument("--overlap", action="store_true", help="local-SGD syncs run beside the next --overlap-steps "
                   "steps and only what is left of them is waited for (fast engine)")
    p.add_argument("--overlap-steps", type=int, default=None, metavar="TAU",
                   help="--overlap: steps a sync overlaps (1 <= TAU <= H; default 1)")
    p.add_argument("--engine", choices=ENGINES, default="fast", help="fast (memoised) or event (reference)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")


def _bytes(text: str) -> int:
    try:
        return parse_bytes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


#: --help topics of `sim run`, as in `python -m train --help`.
_RUN_TOPICS = [
    ("machine", ("--preset", "--topology", "--K", "--link-sharing")),
    ("model & data", ("--model", "--batch-size", "--epochs", "--N", "--seed")),
    ("algorithm & schedule", ("--algorithm", "--H", "--Hb", "--switch-epoch", "--local-warmup",
                              "--local-warmup-steps")),
    ("communication & slow-downs", ("--allreduce", "--compress", "--global-sync-delay", "--block-sync-delay",
                                    "--straggler", "--jitter", "--bucket-size", "--first-bucket-size", "--overlap",
                                    "--overlap-steps")),
    ("output", ("--engine", "--json", "--quiet")),
]


def build_parser() -> argparse.ArgumentParser:
    parser = VocabParser(prog="python -m sim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("cost", help="eq. (6) of the paper from its parameters")
    for flag, kind, help_ in (("--K", int, "devices"), ("--servers", int, "servers (the paper's K')"),
                              ("--N", int, "total samples"), ("--batch-size", int, "local batch"),
                              ("--H", int, "local steps"),
                              ("--Hb", int, "block steps"), ("--C1", float, "seconds per message inside a server"),
                              ("--C2", float, "seconds per message across servers")):
        p.add_argument(flag, old=("--B",) if flag == "--batch-size" else (), dest="B" if flag == "--batch-size"
                       else flag[2:], type=kind, required=flag not in ("--Hb",), default=1 if flag == "--Hb" else None,
                       help=help_)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_cost)

    p = sub.add_parser("run", help="simulate one configuration")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--preset", default=None, help=f"one of {', '.join(preset_names())} (default {DEFAULT_PRESET})")
    g.add_argument("--topology", default=None, help="topology JSON file (e.g. written by calibrate)")
    p.add_argument("--algorithm", choices=ALGORITHMS, default="local", help="sync algorithm, as in train")
    p.add_argument("--K", type=int, default=16, help="workers")
    p.add_argument("--H", type=int, default=1, help="local steps between syncs")
    p.add_argument("--Hb", type=int, default=1, help="hierarchical: block syncs per global sync")
    _add_workload(p)
    group_by_topic(p, _RUN_TOPICS)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("whatif", help="sweep topologies x K x algorithms x H x Hb")
    p.add_argument("--topologies", type=_strs, default=[DEFAULT_PRESET], help="comma-separated presets or files")
    p.add_argument("--K", type=_ints, default=[16])
    p.add_argument("--algorithms", type=_strs, default=["local"])
    p.add_argument("--H", type=_ints, default=[1])
    p.add_argument("--Hb", type=_ints, default=[1])
    p.add_argument("--out", default=None, help="JSON-lines output file (one run object per line)")
    _add_workload(p)
    p.set_defaults(func=cmd_whatif)

    p = sub.add_parser("calibrate", help="fit alpha/beta/gamma per level from comm bench JSONL, or per-step and "
                                         "per-sync costs from measured runs (--runs)")
    p.add_argument("--intra", action="append", default=[], metavar="FILE", help="bench JSONL measured inside a node")
    p.add_argument("--inter", action="append", default=[], metavar="FILE", help="bench JSONL measured across nodes")
    p.add_argument("--bench", action="append", default=[], metavar="FILE",
                   help="bench JSONL whose rows carry a level (intra / inter), e.g. from `comm bench --level both`: "
                        "fits both levels and a per-call overhead each")
    p.add_argument("--runs", nargs="+", default=[], metavar="FILE",
                   help="measured runs (summary.json, run folders, or a CSV / JSON table of model, K, B, algorithm, "
                        "H, [Hb], epochs or N, wall_s or wall_min): fit seconds per step and per sync")
    p.add_argument("--steps", nargs="+", default=[], metavar="FILE",
                   help="measured step times (CSV or JSON rows of model, batch, seconds_per_iter; or a train "
                        "calibrate profile or machine file): fit the device's layer-model compute constants")
    p.add_argument("--device", default=None, help="--steps: name of the device (default: the base's)")
    p.add_argument("--device-spec", default=None, metavar="TFLOPS,GBPS",
                   help="--steps: the vendor's peak FP32 TFLOP/s and memory GB/s; one efficiency scales both")
    p.add_argument("--efficiency", type=float, default=None, help="--steps: hold the efficiency (of --device-spec)")
    p.add_argument("--efficiency-from", default=None, metavar="TOPOLOGY",
                   help="--steps: hold the efficiency of this preset's layer model (the same kernels on another GPU)")
    p.add_argument("--hold", default=None, metavar="NAME=VALUE,...",
                   help="--steps: hold step_s, sample_s or launch_s at a value (e.g. step_s=0)")
    p.add_argument("--sync-split", choices=("scaled", "fixed"), default="scaled",
                   help="--runs with one payload size: the fitted per-sync cost is the links' collective x a factor "
                        "(scaled: grows with the bytes, default) or a constant (fixed); two sizes fit both")
    p.add_argument("--base", default=DEFAULT_PRESET, help="preset or file for unfitted levels and compute")
    p.add_argument("--nodes", type=int, default=None)
    p.add_argument("--gpus-per-node", type=int, default=None)
    p.add_argument("--name", default="calibrated")
    p.add_argument("--out", default=None, help="topology JSON to write")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_calibrate)

    from sim.convex.cli import register
    register(sub)
    from sim.retimecli import register as register_retime
    register_retime(sub)
    return parser


def cmd_cost(a: argparse.Namespace) -> int:
    blk, glob = eq6_counts(K=a.K, servers=a.servers, N=a.N, B=a.B, H=a.H, Hb=a.Hb)
    val = eq6(K=a.K, servers=a.servers, N=a.N, B=a.B, H=a.H, Hb=a.Hb, C1=a.C1, C2=a.C2)
    obj = {"eq6": val, "intra_syncs": blk, "global_syncs": glob, "K": a.K, "servers": a.servers, "N": a.N,
           "B": a.B, "H": a.H, "Hb": a.Hb, "C1": a.C1, "C2": a.C2}
    if a.json:
        print(json.dumps(obj))
    else:
        print(f"eq. (6): {val:.6g} s = {blk} block-only syncs x C1 {a.C1:g} x {a.servers} servers x "
              f"lg({a.K // a.servers}) + {glob} global syncs x C2 {a.C2:g} x lg({a.K})")
    return 0


def _samples(a: argparse.Namespace) -> tuple[int, float | None]:
    if a.N is not None:
        return a.N, None
    epochs = 300.0 if a.epochs is None else a.epochs
    if not (math.isfinite(epochs) and epochs > 0):
        raise SimError(f"epochs must be a number > 0, got {epochs!r}")
    return max(1, round(epochs * get_model(a.model).train_samples)), epochs


def _schedule_kwargs(a: argparse.Namespace, algorithm: str, N: int, K: int) -> dict[str, Any]:
    kw: dict[str, Any] = {"warmup": a.warmup, "warmup_steps": a.warmup_steps}
    if algorithm == "postlocal":
        T = total_steps(N, K, a.B)
        if a.switch_epoch is None:  # the first learning-rate decay, as train/ places it
            kw["switch_step"] = math.ceil(0.5 * T)
        else:
            if not (math.isfinite(a.switch_epoch) and a.switch_epoch >= 0):
                raise SimError(f"switch-epoch must be a number >= 0, got {a.switch_epoch!r}")
            steps_per_epoch = get_model(a.model).train_samples / (K * a.B)
            kw["switch_step"] = min(T, math.ceil(a.switch_epoch * steps_per_epoch))
    return kw


def _config(a: argparse.Namespace, topo, K: int, sched: SyncSchedule) -> RunConfig:
    N, epochs = _samples(a)
    model = get_model(a.model)
    if a.overlap_steps is not None and not a.overlap:
        raise SimError(f"--overlap-steps {a.overlap_steps} applies with --overlap only")
    if a.overlap and sched.algorithm == "minibatch":
        raise SimError("--overlap applies to local-SGD syncs; minibatch overlaps through --bucket-size")
    tau = (1 if a.overlap_steps is None else a.overlap_steps) if a.overlap else 0
    if a.overlap and tau < 1:
        raise SimError(f"--overlap-steps must be an integer >= 1, got {tau}")
    grad_steps = sched.algorithm in ("minibatch", "postlocal")
    buckets = uniform_buckets(model.bytes, a.bucket_bytes, a.first_bucket_bytes) if a.bucket_bytes and grad_steps \
        else ()
    return RunConfig(topology=topo, model=model, K=K, B=a.B, N=N, schedule=sched,
                     allreduce=a.allreduce, delay_global_s=a.delay_global, delay_block_s=a.delay_block,
                     stragglers=parse_stragglers(a.stragglers, a.seed), epochs=epochs, compression=a.compression,
                     jitter=parse_jitter(a.jitter, a.seed), buckets=buckets, overlap_steps=tau)


def _sharing(a: argparse.Namespace, topo: Topology) -> Topology:
    """The topology with --link-sharing applied when given."""
    return topo if a.link_sharing is None else dataclasses.replace(topo, link_sharing=a.link_sharing)


def _breakdown(r: dict[str, Any]) -> str:
    lines = [(f"{r['topology']}: K={r['K']} ({r['nodes']} x {r['gpus_per_node']}), {r['model']}, "
             f"{r['algorithm']} H={r['H']} Hb={r['Hb']}, B={r['B']}, N={r['N']} ({r['total_steps']} steps/worker), "
             f"all-reduce {r['allreduce_global']} (global) / {r['allreduce_block']} (block)"),
             f"  wall time      {r['wall_s']:12.3f} s"]
    for key, label in (("compute_s", "compute"), ("comm_intra_s", "comm intra"), ("comm_inter_s", "comm inter"),
                       ("wait_s", "waiting"), ("delay_s", "delays"), ("overhead_s", "sync overhead"),
                       ("hidden_s", "comm hidden")):
        if key in ("overhead_s", "hidden_s") and not r.get(key):
            continue
        share = 100 * r[key] / r["wall_s"] if r["wall_s"] > 0 else 0.0
        lines.append(f"  {label:<14} {r[key]:12.3f} s  ({share:5.1f} %, mean per worker)")
    lines += [f"  compute        {1e3 * r['step_s']:.4g} ms per step ({r['compute_source']}: {r['compute_note']})"
              + (f"; jitter {r['jitter']['kind']} CV {r['jitter']['cv']:.3g}" if r["jitter"]["kind"] != "none" else ""),
              f"  links          {r['link_sharing']} sharing of ports and NICs"
              + (f"; fitted sync overhead {r['sync_overhead_global_s']:.4g} s global, "
                 f"{r['sync_overhead_block_s']:.4g} s block" if r["overhead_s"] else ""),
              f"  syncs          {r['syncs_block']} block, {r['syncs_global']} global",
              f"  bytes          {r['bytes_intra']:.4g} intra, {r['bytes_inter']:.4g} inter",
              (f"  comm as eq.(6) counts it (block x nodes + global): {r['comm_accounted_s']:.4f} s; "
              f"eq. (6) with C1={r['eq6_C1_s']:.3g} s, C2={r['eq6_C2_s']:.3g} s: {r['eq6_s']:.4f} s"),
              f"  one worker alone {r['single_worker_s']:.3f} s -> speedup {r['speedup']:.2f}"
              if r["speedup"] is not None else "  speedup: n/a (zero wall time)",
              f"  simulated in {r['sim_seconds']:.3f} s ({r['engine']} engine)"]
    return "\n".join(lines)


def cmd_run(a: argparse.Namespace) -> int:
    topo = _sharing(a, load_topology(a.topology or a.preset or DEFAULT_PRESET))
    N, _ = _samples(a)
    sched = SyncSchedule(algorithm=a.algorithm, H=a.H, Hb=a.Hb, **_schedule_kwargs(a, a.algorithm, N, a.K))
    res = simulate(_config(a, topo, a.K, sched), a.engine).to_json()
    print(json.dumps(res) if a.json else _breakdown(res))
    return 0


def _check_out(path: str | None) -> None:
    """--out must be a writable location with some free space, checked before any work (one line, exit 2)."""
    if path:
        try:
            check_output_file(path, what="--out")
        except OutputError as e:
            raise SimError(str(e)) from None


def cmd_whatif(a: argparse.Namespace) -> int:
    from tqdm import tqdm

    _check_out(a.out)
    topos = [_sharing(a, load_topology(t)) for t in a.topologies]
    for alg in a.algorithms:
        if alg not in ALGORITHMS:
            raise SimError(f"algorithms must be among {', '.join(ALGORITHMS)}, got {alg!r}")
    points, notes = sweep_points(topos, a.K, a.algorithms, a.H, a.Hb)
    for note in notes:
        logging.getLogger(__name__).warning("%s", note)
    if not points:
        raise SimError("the sweep has no valid configuration (check K against each topology)")
    N, _ = _samples(a)
    writer = JsonlWriter(a.out) if a.out else None
    rows = []
    bar = tqdm(total=len(points), desc="whatif", unit="run", file=sys.stderr,
               disable=a.quiet or not sys.stderr.isatty())
    try:
        results = run_sweep(points, lambda pt, s: _config(a, pt.topology, pt.K, s),
                            lambda pt: _schedule_kwargs(a, pt.algorithm, N, pt.K), a.engine)
        for res in results:
            obj = res.to_json()
            rows.append(obj)
            if writer:
                writer.write(obj)
            if a.json:
                print(json.dumps(obj), flush=True)
            bar.update(1)
    except BaseException:
        if writer:
            writer.close(keep=False)
        raise
    finally:
        bar.close()
    if writer:
        writer.close()
    if not a.json:
        print(format_table(rows))
        if a.out:
            print(f"wrote {len(rows)} rows to {a.out}")
    return 0


def cmd_calibrate(a: argparse.Namespace) -> int:
    _check_out(a.out)
    if a.steps:
        if a.intra or a.inter or a.bench or a.runs:
            raise SimError("calibrate --steps fits a device's compute; give bench or run files in a separate call")
        from sim.stepfit import cmd_calibrate_steps
        return cmd_calibrate_steps(a)
    if a.runs:
        if a.intra or a.inter or a.bench:
            raise SimError("calibrate --runs fits measured runs; give the bench files (--intra, --inter, --bench) "
                           "in a separate call")
        return _calibrate_runs(a)
    if a.bench:
        from sim.twolevel import cmd_calibrate_bench
        return cmd_calibrate_bench(a)
    if not a.intra and not a.inter:
        raise SimError("calibrate needs --runs FILE..., --steps FILE..., --bench FILE, or at least one --intra FILE "
                       "or --inter FILE")
    from sim.calibrate import calibrated_topology, fit_level, read_bench, report_fits  # scipy: only here
    fits = {}
    for level, files in (("intra", a.intra), ("inter", a.inter)):
        if files:
            fits[level] = fit_level([row for f in files for row in read_bench(f)])
    topo = calibrated_topology(load_topology(a.base), fits, name=a.name, nodes=a.nodes, gpus_per_node=a.gpus_per_node)
    if a.out:
        save_topology(topo, a.out)
    return report_fits(fits, a.out, a.json)


def _calibrate_runs(a: argparse.Namespace) -> int:
    from sim.fitruns import fit_runs, fitted_topology, read_runs
    base = load_topology(a.base)
    fit = fit_runs(read_runs(a.runs), base, a.sync_split)
    topo = fitted_topology(base, fit, name=a.name, table=" ".join(a.runs))
    if a.out:
        save_topology(topo, a.out)
    if a.json:
        print(json.dumps({"runs_fit": fit.to_json(), "out": a.out}))
        return 0
    print(f"per step {fit.step_s:.6g} s ({fit.model}, B={fit.B}); per sync beyond the links of {base.name}: "
          f"global {fit.overhead_global_s:.6g} s + {fit.factor_global:.6g} x its collective, block "
          f"{fit.overhead_block_s:.6g} s + {fit.factor_block:.6g} x its collective")
    for r in fit.rows:
        print(f"  {r['name']}: {r['steps']} steps, {r['syncs_global']} global + {r['syncs_block']} block syncs, "
              f"links {r['links_s']:.4g} s; measured {r['wall_s']:.6g} s, fit {r['fit_s']:.6g} s "
              f"({100 * r['rel_residual']:+.2f} %)")
    for note in fit.notes:
        print(f"  note: {note}")
    if a.out:
        print(f"wrote topology {a.out}")
    return 0


#: Words of the simulator's messages that name a dest: dataclass fields and the messages' own spellings.
_WORDS = {"delay_global_s": "delay_global", "delay_block_s": "delay_block", "straggler": "stragglers",
          "switch-epoch": "switch_epoch"}
#: Dests that are not configuration values (a file, a name): their words are left alone in messages.
_NOT_VALUES = ("preset", "topology", "topologies", "out", "base", "name", "runs", "intra", "inter", "bench", "steps",
               "device", "efficiency_from", "machine", "network", "reference", "run_dirs")


def flag_error(e: SimError, args: argparse.Namespace) -> str:
    """The one-line message of `e` with each value set on the command line named by the option string typed."""
    typed = {k: v for k, v in typed_options(args).items() if k not in _NOT_VALUES}
    return name_flags(str(e), typed, _WORDS)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args))
    except SimError as e:
        print(f"error: {flag_error(e, args)}", file=sys.stderr)
        return 2
    except OutputError as e:  # a write failed during the work: the temp file is gone, the target untouched
        print(f"error: {e}", file=sys.stderr)
        return EXIT_OUTPUT
    except BrokenPipeError:  # e.g. `python -m sim run | head`: the reader left, which is not an error
        sys.stdout = open(os.devnull, "w")
        return 0
