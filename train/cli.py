"""Command line of the trainer: `python -m train [run] [FLAGS]` and `python -m train download NAME`."""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from dataclasses import fields
from typing import Any

from atomicio import OutputError, check_output_dir
from sim.clivocab import group_by_topic, name_flags, typed_options
from train.cliflags import DEFAULTS as _D
from train.cliflags import FLAGS as _FLAGS
from train.cliflags import TOPICS as _TOPICS
from train.cliflags import straggler_arg as _straggler
from train.config import TrainConfig
from train.errors import AgreedInterrupt, TrainError
from train.launch import RankZeroParser, launch_local_size, launch_nodes, launch_rank_size
from train.signals import EARLY
from train.summarytable import format_summary

#: Free space a run folder must have before a run starts (checkpoints, metrics); a later full disk is still handled.
MIN_FREE = 16 << 20

__all__ = ["main", "build_parser", "config_from_args", "launch_rank_size", "format_summary"]

def build_parser() -> argparse.ArgumentParser:
    p = RankZeroParser(prog="python -m train", description=(
        "Train with mini-batch, local, post-local or hierarchical local SGD over our MPI all-reduce. "
        "Launch with mpirun, e.g. `mpirun -n 16 python -m train` (the default: synthetic data, resnet8, "
        "post-local SGD, about a minute on 2 CPU cores)."))
    sub = p.add_subparsers(dest="command")
    # `run` is the default subcommand: `python -m train FLAGS` is `python -m train run FLAGS`, so usage lines and
    # error hints name the short form
    run = sub.add_parser("run", prog="python -m train", help="train (the default subcommand: the word may be left "
                         "out)", description=p.description,
                         epilog="`python -m train FLAGS` and `python -m train run FLAGS` are the same (run is the "
                                "default subcommand). Other subcommands: `python -m train download cifar10|cifar100 "
                                "--data-dir D`, `python -m train verify RUN_DIR`, `python -m train calibrate`, "
                                "`python -m train tune` (see their --help). Outputs: RUN_DIR/config.json, "
                                "metrics.jsonl, summary.json, checkpoints/ (docs/schema-train.md).")
    for flag, name, typ, text in _FLAGS:
        default = getattr(_D, name)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        tail = "" if default is None else f" (default: {shown})"
        run.add_argument(flag, dest=name, type=typ, default=None, help=text + tail)
    run.add_argument("--no-nesterov", dest="nesterov", action="store_false", default=None,
                     help="plain (heavy-ball) momentum instead of Nesterov")
    run.add_argument("--overlap", dest="overlap", action="store_true", default=None,
                     help="local-SGD syncs run beside the next --overlap-steps local steps and are applied after "
                          "them with x <- x + (avg(x_t) - x_t) (docs/README-overlap.md)")
    run.add_argument("--log-objective", dest="log_objective", action="store_true", default=None,
                     help="after every global sync record f(w) = mean training loss + wd/2 ||w||^2 "
                          "in RUN_DIR/objective.jsonl")
    run.add_argument("--straggler", dest="stragglers", type=_straggler, action="append", default=None,
                     metavar="RANK:FACTOR", help="make RANK compute FACTOR times slower (repeatable)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint "
                     "with its saved configuration; only --epochs (e.g. to extend a finished run), --stop-at-epoch, "
                     "--checkpoint-every, --checkpoint-minutes and --data-dir may differ from it "
                     "(docs/README-faults.md)")
    run.add_argument("--quiet", action="store_true", help="no progress bar and no summary table")
    run.add_argument("--json", action="store_true", help="print summary.json's content instead of the table")
    run.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    run.add_argument("--predict", action="store_true", help="print the simulator's predicted wall time and its "
                     "breakdown for this run and exit without training (needs --predict-topology)")
    run.add_argument("--predict-topology", metavar="FILE|PRESET", help="machine file of `python -m train calibrate`, "
                     "sim topology file or preset to predict on; on a real run the prediction goes to summary.json")
    run.add_argument("--predict-load", type=float, metavar="L", help="machine files: other runnable processes to "
                     "share the cores with (default: the calibration's mean background load)")
    run.add_argument("--predict-workers", type=int, metavar="K", help="--predict: workers to predict for "
                     "(default: the launcher's world size)")
    run.add_argument("--predict-nodes", type=int, metavar="N", help="machine files: nodes the workers sit on, "
                     "equal ranks each (default: from the launcher's ranks per node on a real run, else 1)")
    run.add_argument("--predict-network", metavar="FILE|PRESET", help="machine files: the links between nodes, the "
                     "inter level of a sim topology (`python -m sim calibrate --bench` on `comm bench --level inter` "
                     "across the nodes)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar (it is on when rank 0 writes to "
                     "a terminal or runs under mpirun)")
    group_by_topic(run, _TOPICS)
    ver = sub.add_parser("verify", help="check that a run's latest checkpoint has bitwise identical parameters "
                                        "on every rank (exit 1 if not)")
    ver.add_argument("run_dir", help="the run folder")
    ver.add_argument("--json", action="store_true", help="machine-readable output")
    dl = sub.add_parser("download", help="download and verify CIFAR-10/100 (needs internet)")
    dl.add_argument("name", help="cifar10 or cifar100")
    dl.add_argument("--data-dir", required=True, help="folder to put the archive and batches in")
    dl.add_argument("--url", help="mirror URL of the archive (the md5 is still checked)")
    from train.calibrate import register as register_calibrate
    register_calibrate(sub)
    from train.tune import register as register_tune
    register_tune(sub)
    return p


def given_fields(ns: argparse.Namespace) -> dict[str, Any]:
    """The configuration fields set explicitly on the command line."""
    given = {name: getattr(ns, name) for _, name, _, _ in _FLAGS if getattr(ns, name) is not None}
    for name in ("nesterov", "stragglers", "log_objective", "overlap"):
        if getattr(ns, name, None) is not None:
            given[name] = getattr(ns, name)
    return given


FLAG_OF = {name: flag for flag, name, _, _ in _FLAGS} | {"nesterov": "--no-nesterov", "stragglers": "--straggler",
                                                          "log_objective": "--log-objective", "overlap": "--overlap"}


def refuse_conflicts(given: dict[str, Any], cfg: TrainConfig) -> None:
    """Flags that the chosen options would silently ignore: one line naming both (TrainConfig checks the rest)."""
    if "H" in given and cfg.algorithm == "minibatch" and cfg.H != 1:
        raise TrainError(f"--H {cfg.H} does not apply to --algorithm minibatch (it averages gradients every step, "
                         f"H = 1); drop --H or use --algorithm local")
    if "global_momentum" in given and cfg.momentum_variant == "local" and cfg.global_momentum != 0:
        raise TrainError(f"--global-momentum {cfg.global_momentum} does not apply to --momentum-variant local; "
                         f"use --momentum-variant global or hybrid")
    for name in ("bucket_size", "first_bucket_size"):
        if name in given and cfg.algorithm in ("local", "hierarchical"):
            raise TrainError(f"{FLAG_OF[name]} applies to mini-batch steps (--algorithm minibatch or postlocal), "
                             f"got --algorithm {cfg.algorithm}")
    if "first_bucket_size" in given and cfg.bucket_size == 0:
        raise TrainError("--first-bucket-size does not apply with --bucket-size 0 (one all-reduce after backward)")
    if "progress" in given and not cfg.overlap and (cfg.bucket_size == 0 or cfg.algorithm in ("local",
                                                                                             "hierarchical")):
        raise TrainError(f"--progress {cfg.progress} applies to nonblocking all-reduces: --overlap, or mini-batch "
                         f"steps with gradient buckets")
    if "sign_scale" in given and cfg.compress != "sign":
        raise TrainError(f"--sign-scale {cfg.sign_scale} only applies to --compress sign, got --compress "
                         f"{cfg.compress}")


def config_from_args(ns: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of parsed `run` arguments (not for --resume: see train.resume); validated."""
    given = given_fields(ns)
    cfg = TrainConfig(**given)
    refuse_conflicts(given, cfg)
    return cfg


#: Words of TrainConfig's messages that are not a dest of their own (the field is `stragglers`).
_WORDS = {"straggler": "stragglers"}


#: `train calibrate`'s own values named in its messages.
_CALIBRATE_VALUES = ("steps", "probe_ranks", "probe_H", "iters")


def flag_error(e: TrainError, ns: argparse.Namespace) -> TrainError:
    """A configuration error with each field set on the command line named by the option string typed for it."""
    names = {f.name for f in fields(TrainConfig)} | set(_CALIBRATE_VALUES)
    return TrainError(name_flags(str(e), {k: v for k, v in typed_options(ns).items() if k in names}, _WORDS))


def _download(ns: argparse.Namespace) -> int:
    from train.data import download_cifar
    folder = download_cifar(ns.name, ns.data_dir, url=ns.url)
    print(f"{ns.name} ready in {folder}")
    return 0


def _verify(ns: argparse.Namespace) -> int:
    from train.verify import verify_checkpoint
    res = verify_checkpoint(ns.run_dir)
    if ns.json:
        print(json.dumps(res, indent=2))
    else:
        verdict = "bitwise identical" if res["identical"] else f"DIFFERENT ({', '.join(res['differing'][:5])})"
        who = f"{res['workers']} virtual workers" if res.get("engine") == "virtual" else f"{res['world_size']} ranks"
        print(f"step {res['step']}: parameters of {who} are {verdict}")
        if res.get("pending_sync"):
            print("an overlapped sync was in flight at this checkpoint: the models differ by the local steps taken "
                  "since it, by design, and agree at the run's final sync (docs/README-overlap.md)")
    return 0 if res["identical"] else 1


def check_predict_flags(ns: argparse.Namespace) -> None:
    """The --predict-* numbers, named by their flags (the simulator's own messages name its parameters)."""
    for flag, v in (("--predict-workers", ns.predict_workers), ("--predict-nodes", ns.predict_nodes)):
        if v is not None and v < 1:
            raise TrainError(f"{flag} must be an integer >= 1, got {v}")
    load = ns.predict_load
    if load is not None and not (load >= 0 and load != float("inf")):
        raise TrainError(f"--predict-load must be a finite number >= 0 (other runnable processes), got {load}")
    if not ns.predict_topology and any(v is not None for v in (ns.predict_workers, ns.predict_nodes, ns.predict_load,
                                                                ns.predict_network)):
        raise TrainError("--predict-workers, --predict-nodes, --predict-load and --predict-network need "
                         "--predict-topology FILE|PRESET")


def _predict(ns: argparse.Namespace, cfg: TrainConfig, size: int, rank: int) -> int:
    from train.predict import format_prediction, predict
    if not ns.predict_topology:
        raise TrainError("--predict needs --predict-topology FILE|PRESET: a machine file from `python -m train "
                         "calibrate`, a sim topology file or a preset such as paper-8x2-10gbps")
    K = ns.predict_workers if ns.predict_workers is not None else cfg.workers_of(size)
    launcher = launch_nodes(size) if size == K and cfg.engine == "mpi" else None
    pred = predict(cfg.on_mpi(), K, ns.predict_topology, load=ns.predict_load, nodes=ns.predict_nodes,
                   launcher_nodes=launcher, network=ns.predict_network)
    if rank == 0:
        print(json.dumps(pred, indent=2) if ns.json else format_prediction(pred), flush=True)
    return 0


def _run_prediction(ns: argparse.Namespace, cfg: TrainConfig, size: int) -> dict[str, Any]:
    """Rank 0, before a real run: the prediction that summary.json records next to the measurement (engine
    virtual: the prediction of the same run on K MPI ranks of that machine or cluster)."""
    from train.predict import predict
    virtual = cfg.engine == "virtual"
    return predict(cfg.on_mpi(), cfg.workers_of(size), ns.predict_topology, load=ns.predict_load,
                   nodes=ns.predict_nodes, launcher_nodes=None if virtual else launch_nodes(size),
                   network=ns.predict_network)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):  # `run` is the default subcommand, also for --help
        argv = ["run", *argv]
    ns = build_parser().parse_args(argv)
    if ns.command is None:
        ns = build_parser().parse_args(["run"])
    rank, size = launch_rank_size()
    logging.basicConfig(level=logging.INFO if getattr(ns, "verbose", False) else logging.WARNING,
                        format=f"[rank {rank}] %(levelname)s %(name)s: %(message)s")
    try:
        if ns.command == "download":
            return _download(ns)
        if ns.command == "verify":
            return _verify(ns)
        if ns.command == "calibrate":
            try:
                return int(ns.calibrate(ns))
            except TrainError as e:
                raise flag_error(e, ns) from None
        if ns.command == "tune":
            return int(ns.tune(ns))
        plan = None
        check_predict_flags(ns)
        if ns.resume:                   # decided from the run folder's files, before MPI starts
            from train.resume import plan_resume
            if ns.predict or ns.predict_topology:
                raise TrainError("--predict / --predict-topology cannot be combined with --resume (the run is "
                                 "already under way)")
            plan = plan_resume(ns.resume, given_fields(ns), size, FLAG_OF)
            if plan.cfg is None:        # e.g. a finished run: nothing is changed, nothing is written
                if rank == 0:
                    print(plan.message, file=sys.stderr, flush=True)
                return 0
            cfg = plan.cfg
        else:
            try:
                cfg = config_from_args(ns)  # validated on every rank, before MPI starts
            except TrainError as e:
                raise flag_error(e, ns) from None
        if ns.predict:                  # no MPI at all: the prediction is the simulator's
            return _predict(ns, cfg, size, rank)
        if ns.predict_topology:         # every rank reads the files; rank 0 alone runs the simulator
            from train.predict import load_source
            for flag, spec in (("--predict-topology", ns.predict_topology), ("--predict-network", ns.predict_network)):
                try:
                    if spec:
                        load_source(spec)
                except TrainError as e:
                    raise TrainError(f"{flag}: {e}") from None
        prediction = _run_prediction(ns, cfg, size) if ns.predict_topology and rank == 0 else None
        try:
            cfg.check_world(size)
        except TrainError as e:
            raise flag_error(e, ns) from None
        from train.memory import check_memory
        memory = check_memory(cfg, size=size, local_ranks=launch_local_size())  # before anything is allocated
        if not ns.resume and cfg.out_dir and os.path.exists(os.path.join(cfg.out_dir, "config.json")):
            raise TrainError(f"run folder {cfg.out_dir} already holds a run (config.json); continue it with "
                             f"--resume {cfg.out_dir} or choose another --out-dir")
        try:
            check_output_dir(ns.resume or cfg.out_dir or "runs", need_bytes=MIN_FREE,
                             what="run folder" if ns.resume else "--out-dir")
        except OutputError as e:
            raise TrainError(str(e)) from None
        if EARLY.seen:                  # Ctrl-C before MPI started: every rank got it, none has begun anything
            raise AgreedInterrupt(f"interrupted by {signal.Signals(EARLY.seen).name} during start-up: nothing "
                                  f"was written; run the command again", EARLY.seen)
    except AgreedInterrupt as e:
        if rank == 0:
            print(f"error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    except TrainError as e:
        if rank == 0:
            print(f"error: {e}", file=sys.stderr)
        return 2
    if plan is not None and plan.message and rank == 0:
        print(plan.message, file=sys.stderr, flush=True)
    from train.trainer import Trainer  # starts MPI (through comm and mpi4py)
    # Under mpirun stderr is a pipe to the launcher, which forwards it to the terminal: show the bar there too.
    progress = not (ns.quiet or ns.no_progress) and (sys.stderr.isatty() or size > 1)
    trainer = Trainer(cfg, resume_dir=ns.resume, progress=progress, prediction=prediction,
                      from_scratch=bool(plan and plan.from_scratch), memory=memory)
    summary = trainer.run()
    if summary is not None and not ns.quiet:
        print(json.dumps(summary, indent=2, sort_keys=True) if ns.json else format_summary(summary), flush=True)
    return trainer.exit_code
