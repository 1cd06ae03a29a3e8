"""The trainer's run flags: (flag, field, type, help) of every TrainConfig option, and their --help topics."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from train.config import BN_EVAL, DATASETS, MOMENTUM_VARIANTS, TrainConfig, parse_straggler
from train.errors import TrainError
from train.models import MODEL_HELP

__all__ = ["DEFAULTS", "FLAGS", "TOPICS", "straggler_arg"]

DEFAULTS = TrainConfig()


def _fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions like 0.5,0.75, got {text!r}") from None


def _bytes(text: str) -> int:
    from sim.overlap import parse_bytes
    try:
        return parse_bytes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def straggler_arg(text: str) -> tuple[int, float]:
    """argparse type of --straggler RANK:FACTOR."""
    try:
        return parse_straggler(text)
    except TrainError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# (flag, field, type, help); defaults come from TrainConfig so the help shows them.
FLAGS: list[tuple[str, str, Callable[[str], Any] | None, str]] = [
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
    ("--bucket-size", "bucket_size", _bytes, ("mini-batch steps: gradient buckets of this many bytes (e.g. 256K), "
                                              "each all-reduced as soon as backward has produced it; 0: one "
                                              "all-reduce after backward (docs/README-overlap.md)")),
    ("--first-bucket-size", "first_bucket_size", _bytes, "the first (smaller) gradient bucket, in bytes"),
    ("--overlap-steps", "overlap_steps", int, ("--overlap: tau, the local steps a sync runs beside; its average is "
                                              "applied after them (1 <= tau <= H)")),
    ("--progress", "progress", str, ("how nonblocking all-reduces advance: thread (comm's helper thread) or poll "
                                    "(from the training's own hooks)")),
    ("--outer-optimizer", "outer_optimizer", str, ("none, sgd or nesterov: DiLoCo's outer step on the "
                                                  "pseudo-gradient anchor - avg(x) at every global sync")),
    ("--outer-lr", "outer_lr", float, "learning rate of the outer optimizer"),
    ("--outer-momentum", "outer_momentum", float, "momentum of the outer optimizer"),
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
TOPICS: list[tuple[str, tuple[str, ...]]] = [
    ("model & data", ("--model", "--width", "--dropout", "--dataset", "--data-dir", "--synthetic-train",
                      "--synthetic-test", "--synthetic-classes", "--synthetic-size", "--synthetic-noise",
                      "--test-fraction", "--bptt", "--lm-state", "--sampler", "--dtype", "--seed", "--device")),
    ("algorithm & schedule", ("--algorithm", "--H", "--Hb", "--gpus-per-node", "--switch-step", "--switch-epoch",
                              "--local-warmup", "--local-warmup-steps", "--local-warmup-epochs", "--epochs")),
    ("optimisation & learning rate", ("--batch-size", "--lr", "--lr-ref-batch", "--lr-scaling",
                                      "--lr-warmup-epochs", "--lr-decay-at", "--lr-decay-factor", "--lr-schedule",
                                      "--lr-cap", "--momentum", "--no-nesterov", "--weight-decay",
                                      "--clip-grad-norm", "--momentum-variant", "--global-momentum", "--slow-lr",
                                      "--slow-momentum", "--slow-buffers", "--outer-optimizer", "--outer-lr",
                                      "--outer-momentum")),
    ("communication & slow-downs", ("--allreduce", "--compress", "--sign-scale", "--bucket-size",
                                    "--first-bucket-size", "--overlap", "--overlap-steps", "--progress",
                                    "--global-sync-delay",
                                    "--block-sync-delay", "--straggler")),
    ("evaluation & targets", ("--eval-every", "--bn-eval", "--target-acc", "--target-loss", "--fstar", "--log-every",
                              "--log-objective")),
    ("faults & checkpoints", ("--checkpoint-every", "--checkpoint-minutes", "--stop-at-epoch", "--resume")),
    ("engine", ("--engine", "--workers", "--virtual-step", "--threads")),
    ("output", ("--out-dir", "--quiet", "--json", "-v", "--no-progress")),
    ("prediction", ("--predict", "--predict-topology", "--predict-load", "--predict-workers", "--predict-nodes",
                    "--predict-network")),
]
