"""Command line of the trainer: `python -m train [run] [FLAGS]` and `python -m train download NAME`."""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from atomicio import OutputError, check_output_dir
from sim.clivocab import group_by_topic, name_flags, typed_options
from train.config import BN_EVAL, DATASETS, MOMENTUM_VARIANTS, TrainConfig, parse_straggler
from train.errors import AgreedInterrupt, TrainError
from train.launch import RankZeroParser, launch_local_size, launch_nodes, launch_rank_size
from train.models import MODEL_HELP
from train.signals import EARLY
from train.summarytable import format_summary

#: Free space a run folder must have before a run starts (checkpoints, metrics); a later full disk is still handled.
MIN_FREE = 16 << 20

__all__ = ["main", "build_parser", "config_from_args", "launch_rank_size", "format_summary"]

_D = TrainConfig()


def _fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions like 0.5,0.75, got {text!r}") from None


def _straggler(text: str) -> tuple[int, float]:
    try:
        return parse_straggler(text)
    except TrainError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# (flag, field, type, help); defaults come from TrainConfig so the help shows them.
_FLAGS: list[tuple[str, str, Callable[[str], Any] | None, str]] = [
    ("--model", "model", str, f"model: {MODEL_HELP}"),
    ("--width", "width", int, "base width (channels) of the resnetD family (16 = the paper's ResNet-20)"),
    ("--dropout", "dropout", float, "dropout of the LSTM and WideResNet"),
    ("--dataset", "dataset", str, f"one of {', '.join(DATASETS)}"),
    ("--data-dir", "data_dir", str, "folder with the dataset files (CIFAR batches, w8a, wiki.*.tokens)"),
    ("--synthetic-train", "synthetic_train", int, "synthetic training samples"),
    ("--synthetic-test", "synthetic_test", int, "synthetic test samples"),
    ("--synthetic-classes", "synthetic_classes", int, "synthetic classes (vocabulary size for lstm)"),
    ("--synthetic-size", "synthetic_size", int, "synthetic images are 3 x SIZE x SIZE"),
    ("--synthetic-noise", "synthetic_noise", float, "noise std around the synthetic class templates"),
    ("--test-fraction", "test_fraction", float, "w8a: share held out as the test set (fixed split)"),
    ("--bptt", "bptt", int, "LSTM sequence length (backpropagation through time)"),
    ("--lm-state", "lm_state", str, ("LSTM hidden state: carry (from batch to batch over contiguous text, truncated "
                                    "BPTT), reset (zero for every sequence; sequences shuffled like images), auto "
                                    "(carry on wikitext2, reset on synthetic)")),
    ("--algorithm", "algorithm", str, "minibatch, local, postlocal or hierarchical"),
    ("--H", "H", int, "local steps between syncs (target H after the local-step warm-up)"),
    ("--Hb", "Hb", int, "hierarchical: block syncs per global sync (1 = plain local SGD)"),
    ("--gpus-per-node", "gpus_per_node", int, ("hierarchical: virtual blocks of this many consecutive ranks "
                                              "(default: the real shared-memory nodes)")),
    ("--switch-step", "switch_step", int, "postlocal: first local step (default: the first lr decay)"),
    ("--switch-epoch", "switch_epoch", float, "postlocal: switch at this epoch instead"),
    ("--local-warmup", "local_warmup", str, "local-step warm-up shape: constant, linear or exponential"),
    ("--local-warmup-steps", "local_warmup_steps", int, "local-step warm-up length in steps"),
    ("--local-warmup-epochs", "local_warmup_epochs", float, "local-step warm-up length in epochs"),
    ("--momentum-variant", "momentum_variant", str, (f"one of {', '.join(MOMENTUM_VARIANTS)} (SPEC section 2; "
                                                    "slowmo: docs/README-averager.md)")),
    ("--global-momentum", "global_momentum", float, "m_g of the global and hybrid momentum variants"),
    ("--slow-lr", "slow_lr", float, ("slowmo: slow learning rate alpha (alpha = 1 is hybrid momentum with "
                                    "m_g = --slow-momentum)")),
    ("--slow-momentum", "slow_momentum", float, "slowmo: slow momentum beta (docs/README-averager.md)"),
    ("--slow-buffers", "slow_buffers", str, ("slowmo: keep or reset the local momentum buffers at each global "
                                            "sync")),
    ("--allreduce", "allreduce", str, "comm algorithm: auto, recursive_doubling, rabenseifner, ring, native"),
    ("--compress", "compress", str, ("none, sign (majority vote) or ef-sign (error feedback): each sync all-gathers "
                                    "the packed 1-bit signs of the model change (docs/README-compress.md)")),
    ("--sign-scale", "sign_scale", float, "sign: the majority vote moves each coordinate by SIGN_SCALE * lr"),
    ("--sampler", "sampler", str, ("stream (per-epoch shuffled slices), or iid / shuffle: the convex simulator's "
                                  "shared sampler (sim.convex.sampler)")),
    ("--dtype", "dtype", str, "float32 or float64 parameters and data"),
    ("--lr-schedule", "lr_schedule", str, ("protocol (SPEC section 3), or the convex rules with c = --lr: decay "
                                          "(min(--lr-cap, c n/(t+1))) or const (--lr-cap * c)")),
    ("--lr-cap", "lr_cap", float, "cap of the decay and const learning-rate schedules"),
    ("--batch-size", "batch_size", int, "per-worker batch: B (minibatch) or B_loc (local variants)"),
    ("--epochs", "epochs", float, "epochs of data the K workers access together (may be fractional)"),
    ("--lr", "lr", float, "base learning rate gamma_0 for one worker at batch --lr-ref-batch"),
    ("--lr-ref-batch", "lr_ref_batch", int, "batch the base learning rate is tuned for"),
    ("--lr-scaling", "lr_scaling", str, "linear (peak = lr K B / ref batch) or none"),
    ("--lr-warmup-epochs", "lr_warmup_epochs", float, "epochs of linear warm-up from lr to the scaled peak"),
    ("--lr-decay-at", "lr_decay_at", _fractions, "fractions of all samples where lr is divided (e.g. 0.5,0.75)"),
    ("--lr-decay-factor", "lr_decay_factor", float, "divisor at each decay"),
    ("--momentum", "momentum", float, "local Nesterov momentum"),
    ("--weight-decay", "weight_decay", float, "weight decay (never on BatchNorm parameters)"),
    ("--clip-grad-norm", "clip_grad_norm", float, ("clip each step's gradient to this L2 norm (after a mini-batch "
                                                   "step's all-reduce; per worker in local steps); none by default")),
    ("--bn-eval", "bn_eval", str, (f"BatchNorm statistics for evaluation: {' or '.join(BN_EVAL)} "
                                  "(average = mean of the workers' statistics; rank0 = rank 0's)")),
    ("--eval-every", "eval_every", float, "epochs between evaluations of the synchronised model"),
    ("--log-every", "log_every", int, "steps between step records in metrics.jsonl"),
    ("--target-acc", "target_acc", float, "test accuracy for the time-to-accuracy figure (0..1)"),
    ("--target-loss", "target_loss", float, ("target on the objective's gap f(w) - f* (f = mean training loss + "
                                             "wd/2 ||w||^2 of the averaged model, at every evaluation); the "
                                             "first evaluation that reaches it is recorded (docs/README-tune.md)")),
    ("--fstar", "fstar", str, ("f* of --target-loss: computed (Newton on logreg-binary's objective over this "
                               "training set), paper (SPEC's w8a value) or a number")),
    ("--global-sync-delay", "global_sync_delay", float, "seconds added to every global sync (slow network)"),
    ("--block-sync-delay", "block_sync_delay", float, "seconds added to every block sync"),
    ("--checkpoint-every", "checkpoint_every", float, ("epochs between checkpoints, the last two kept (0: only at "
                                                      "the end and at a pause or stop)")),
    ("--checkpoint-minutes", "checkpoint_minutes", float, ("also checkpoint at the first global-sync check this "
                                                          "many minutes after the last checkpoint (0: off)")),
    ("--stop-at-epoch", "stop_at_epoch", float, "pause at this epoch: checkpoint and exit (continue with --resume)"),
    ("--seed", "seed", int, "seed of the model initialisation, the data order and augmentation"),
    ("--device", "device", str, "auto (cuda:(local rank %% GPUs) when CUDA is present), cpu or cuda"),
    ("--out-dir", "out_dir", str, "run folder (default runs/train-<UTC time>-<algorithm>-K<ranks>)"),
    ("--engine", "engine", str, ("mpi (one worker per MPI rank: mpirun -n K) or virtual (--workers K in this one "
                                "process, no mpirun: the same run, faster for many small workers; "
                                "docs/README-virtual.md)")),
    ("--workers", "workers", int, "engine virtual: the number of workers K run in this process (required there)"),
    ("--virtual-step", "virtual_step", str, ("engine virtual: loop (K model replicas on the rows of stacked "
                                            "tensors, by worker threads), vmap (one torch.func.vmap call per step) "
                                            "or auto (vmap on a GPU, loop on the CPU)")),
    ("--threads", "threads", int, "engine virtual: threads of its one process (default: every core it may use)"),
]


#: --help topics: (title, flags); a flag not listed here stays under argparse's "options".
_TOPICS: list[tuple[str, tuple[str, ...]]] = [
    ("model & data", ("--model", "--width", "--dropout", "--dataset", "--data-dir", "--synthetic-train",
                      "--synthetic-test", "--synthetic-classes", "--synthetic-size", "--synthetic-noise",
                      "--test-fraction", "--bptt", "--lm-state", "--sampler", "--dtype", "--seed", "--device")),
    ("algorithm & schedule", ("--algorithm", "--H", "--Hb", "--gpus-per-node", "--switch-step", "--switch-epoch",
                              "--local-warmup", "--local-warmup-steps", "--local-warmup-epochs", "--epochs")),
    ("optimisation & learning rate", ("--batch-size", "--lr", "--lr-ref-batch", "--lr-scaling",
                                      "--lr-warmup-epochs", "--lr-decay-at", "--lr-decay-factor", "--lr-schedule",
                                      "--lr-cap", "--momentum", "--no-nesterov", "--weight-decay",
                                      "--clip-grad-norm", "--momentum-variant", "--global-momentum", "--slow-lr",
                                      "--slow-momentum", "--slow-buffers")),
    ("communication & slow-downs", ("--allreduce", "--compress", "--sign-scale", "--global-sync-delay",
                                    "--block-sync-delay", "--straggler")),
    ("evaluation & targets", ("--eval-every", "--bn-eval", "--target-acc", "--target-loss", "--fstar", "--log-every",
                              "--log-objective")),
    ("faults & checkpoints", ("--checkpoint-every", "--checkpoint-minutes", "--stop-at-epoch", "--resume")),
    ("engine", ("--engine", "--workers", "--virtual-step", "--threads")),
    ("output", ("--out-dir", "--quiet", "--json", "-v", "--no-progress")),
    ("prediction", ("--predict", "--predict-topology", "--predict-load", "--predict-workers", "--predict-nodes",
                    "--predict-network")),
]


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
    for name in ("nesterov", "stragglers", "log_objective"):
        if getattr(ns, name, None) is not None:
            given[name] = getattr(ns, name)
    return given


FLAG_OF = {name: flag for flag, name, _, _ in _FLAGS} | {"nesterov": "--no-nesterov", "stragglers": "--straggler",
                                                          "log_objective": "--log-objective"}


def refuse_conflicts(given: dict[str, Any], cfg: TrainConfig) -> None:
    """Flags that the chosen options would silently ignore: one line naming both (TrainConfig checks the rest)."""
    if "H" in given and cfg.algorithm == "minibatch" and cfg.H != 1:
        raise TrainError(f"--H {cfg.H} does not apply to --algorithm minibatch (it averages gradients every step, "
                         f"H = 1); drop --H or use --algorithm local")
    if "global_momentum" in given and cfg.momentum_variant == "local" and cfg.global_momentum != 0:
        raise TrainError(f"--global-momentum {cfg.global_momentum} does not apply to --momentum-variant local; "
                         f"use --momentum-variant global or hybrid")
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
