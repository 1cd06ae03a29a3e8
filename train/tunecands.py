"""The tuner's candidates: the grid of its axes over the trainer's own flags, validated and priced before any run."""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import Any

from sim.errors import SimError
from sim.trainrun import predict_run
from train.config import TrainConfig
from train.errors import TrainError

__all__ = ["AXES", "Candidate", "NoCandidate", "base_fields", "flags_of", "build_candidates"]

log = logging.getLogger(__name__)

#: The tuner's axes: its flag, the TrainConfig field, the type of one value.
AXES = (("--K", "K", int), ("--algorithm", "algorithm", str), ("--H", "H", int), ("--Hb", "Hb", int),
        ("--batch-size", "batch_size", int), ("--momentum-variant", "momentum_variant", str))
#: Trainer fields the tuner sets itself (or that would break its runs): refused after `--`.
OWN = {"out_dir": "--out", "stop_at_epoch": "the rungs", "target_acc": "--target-acc", "target_loss": "--target-loss"}
#: Trainer fields that apply to some candidates only: (field, applies to the candidate).
SCOPED = {"slow_lr": lambda c: c["momentum_variant"] == "slowmo",
          "slow_momentum": lambda c: c["momentum_variant"] == "slowmo",
          "slow_buffers": lambda c: c["momentum_variant"] == "slowmo",
          "global_momentum": lambda c: c["momentum_variant"] in ("global", "hybrid"),
          "switch_step": lambda c: c["algorithm"] == "postlocal",
          "switch_epoch": lambda c: c["algorithm"] == "postlocal",
          "gpus_per_node": lambda c: c["algorithm"] == "hierarchical",
          "local_warmup": lambda c: c["algorithm"] != "minibatch",
          "local_warmup_steps": lambda c: c["algorithm"] != "minibatch",
          "local_warmup_epochs": lambda c: c["algorithm"] != "minibatch"}


class NoCandidate(TrainError):
    """Every combination of the axes was left out (the message lists why)."""


@dataclass(kw_only=True)
class Candidate:
    """One configuration to try: its axes, the validated trainer configuration, the flags of its runs."""

    cid: str
    axes: dict[str, Any]
    cfg: TrainConfig
    flags: list[str]
    predicted_wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def K(self) -> int:
        return int(self.axes["K"])

    @property
    def label(self) -> str:
        a = self.axes
        alg = a["algorithm"]
        h = "" if alg == "minibatch" else f" H={a['H']}"
        hb = f" Hb={a['Hb']}" if alg == "hierarchical" else ""
        mv = "" if a["momentum_variant"] == "local" else f" {a['momentum_variant']}"
        return f"{alg}{h}{hb} K={a['K']} B={a['batch_size']}{mv}"


def base_fields(train_flags: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The configuration fields given after `--`, parsed by the trainer's own parser (its errors, exit 2), and the
    option string typed for each (for messages)."""
    from sim.clivocab import typed_options
    from train.cli import build_parser, given_fields
    flags = train_flags[1:] if train_flags[:1] == ["--"] else list(train_flags)
    ns = build_parser().parse_args(["run", *flags])
    for dest, what in (("resume", "--resume"), ("predict", "--predict"), ("predict_topology", "--predict-topology")):
        if getattr(ns, dest, None):
            raise TrainError(f"{what} cannot be given to the tuner's runs (after --): the tuner starts, pauses and "
                             f"resumes them itself and prices them on --on")
    given = given_fields(ns)
    for fld, own in OWN.items():
        if fld in given:
            raise TrainError(f"--{fld.replace('_', '-')} after -- is the tuner's to set ({own}); leave it out of "
                             f"the trainer flags")
    for flag, fld, _ in AXES:
        if fld in given:
            raise TrainError(f"{flag} is a tuning axis: give it to train tune before --, e.g. {flag} "
                             f"{given[fld]}, not to the trainer")
    return given, typed_options(ns)


def flags_of(fields: dict[str, Any]) -> list[str]:
    """Trainer flags that set `fields` (the inverse of the trainer's parser)."""
    from train.cli import FLAG_OF
    out: list[str] = []
    for name, v in fields.items():
        if v is None or name == "K":
            continue
        if name == "nesterov":
            out += [] if v else ["--no-nesterov"]
        elif name == "log_objective":
            out += ["--log-objective"] if v else []
        elif name == "stragglers":
            for r, f in v:
                out += ["--straggler", f"{r}:{f!r}"]
        elif isinstance(v, (tuple, list)):
            out += [FLAG_OF[name], ",".join(repr(x) for x in v)]
        else:
            out += [FLAG_OF[name], repr(v) if isinstance(v, float) else str(v)]
    return out


def _grid(axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination, with the axes that do not apply collapsed (H of minibatch, Hb of non-hierarchical)."""
    seen, out = set(), []
    names = [fld for _, fld, _ in AXES]
    for combo in itertools.product(*(axes[n] for n in names)):
        c = dict(zip(names, combo))
        if c["algorithm"] == "minibatch":
            c["H"] = 1
        if c["algorithm"] != "hierarchical":
            c["Hb"] = 1
        key = tuple(c[n] for n in names)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def _blocks(c: dict[str, Any], kind: str, src: Any, nodes: int | None) -> int | None:
    """The ranks per block of a hierarchical candidate on the cluster (its virtual blocks on this machine)."""
    if kind == "topology":
        return int(src.gpus_per_node)
    if nodes is not None and c["K"] % nodes == 0:
        return c["K"] // nodes
    return None


def build_candidates(axes: dict[str, list[Any]], given: dict[str, Any], target: dict[str, Any],
                     source: tuple[str, Any, str], *, nodes: int | None, network: str | None,
                     load: float | None) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """The valid candidates, each priced on the cluster for the whole run, and (label, reason) of those left out.

    The configuration the flags give must itself be valid (a TrainError otherwise); a combination of axes the
    trainer or the cluster refuses is left out with its reason."""
    from train.predict import profile_model, train_run
    kind, src, _ = source
    cands: list[Candidate] = []
    skipped: list[tuple[str, str]] = []
    profiles: dict[tuple[Any, ...], Any] = {}
    first_error: TrainError | None = None
    for i, c in enumerate(_grid(axes)):
        fields = {k: v for k, v in given.items() if k not in SCOPED or SCOPED[k](c)}
        fields.update({k: v for k, v in c.items() if k != "K"}, **target)
        if c["algorithm"] == "hierarchical" and "gpus_per_node" not in fields:
            g = _blocks(c, kind, src, nodes)
            if g is None:
                skipped.append((_label(c), ("hierarchical needs blocks: give --nodes N with a machine file, or "
                                           "--gpus-per-node G after --")))
                continue
            fields["gpus_per_node"] = g
        if c["algorithm"] == "minibatch":
            fields.pop("H", None)
        try:
            cfg = TrainConfig(**fields)
            from train.cli import refuse_conflicts
            refuse_conflicts(fields, cfg)
            cfg.check_world(c["K"])
        except TrainError as e:
            if first_error is None:
                first_error = e
            skipped.append((_label(c), str(e)))
            continue
        key = (cfg.model, cfg.width, cfg.dataset, cfg.data_dir, cfg.synthetic_train, cfg.synthetic_test,
               cfg.synthetic_size, cfg.synthetic_classes, cfg.test_fraction, cfg.dtype, cfg.bptt)
        if key not in profiles:
            profiles[key] = profile_model(cfg)
        cand = Candidate(cid=f"c{i:02d}", axes=c, cfg=cfg, flags=flags_of(fields))
        try:
            pred, _ = predict_run(train_run(cfg, c["K"], profiles[key]), source, load=load,
                                  nodes=nodes if kind == "machine" and nodes and c["K"] % nodes == 0 else None,
                                  network=network if kind == "machine" and nodes and c["K"] % nodes == 0 else None)
        except (SimError, TrainError) as e:
            skipped.append((cand.label, f"the cluster refuses it: {e}"))
            continue
        cand.predicted_wall_s = float(pred["wall_s"])
        cands.append(cand)
    if not cands:
        if first_error is not None:
            raise first_error
        raise NoCandidate("no candidate is left to tune: " + "; ".join(f"{a}: {b}" for a, b in skipped[:3]))
    return cands, skipped


def _label(c: dict[str, Any]) -> str:
    return Candidate(cid="", axes=c, cfg=TrainConfig(), flags=[]).label
