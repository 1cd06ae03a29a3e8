"""`python -m train tune`: which configuration reaches the target soonest on a cluster (runs here, retimed there)."""
# The learning curves of K workers do not depend on the cluster, only their clock does (docs/README-tune.md). So each
# candidate is trained here (mpirun with K ranks, or the virtual-worker engine), its run folder is retimed on the
# cluster after every rung (sim/retime.py), and successive halving on the predicted time to target stops those that
# cannot win (train/tunehalving.py). The finalists run with more seeds; the ranked table, a JSON-lines log and a
# figure end it. Everything lives in --out: a killed tune, run again with the same command (or --resume DIR),
# re-reads its run folders and redoes nothing that finished (a run stopped mid-way continues from its checkpoint).
from __future__ import annotations

import argparse
import json
import logging
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from atomicio import JsonlAppender, OutputError, check_output_dir, read_jsonl, write_json_atomic, write_jsonl_atomic
from sim.clivocab import name_flags, typed_options
from sim.errors import SimError
from sim.retime import read_run, retime
from sim.trainrun import load_source
from train.errors import TrainError
from train.tunecands import AXES, Candidate, NoCandidate, base_fields, build_candidates
from train.tunehalving import Observation, SeedResult, decide, finalists, rank_final, rung_epochs
from train.tunerun import ENGINES, last_lines, launch, mpirun_path, pick_engine, run_command, run_state
from train.tunetable import format_table, result_rows

__all__ = ["register", "run_tune", "parse_budget"]

log = logging.getLogger(__name__)

SCHEMA = "train.tune/1"


class BudgetSpent(Exception):
    """No time is left of --budget for another run."""


def parse_budget(text: str) -> float:
    """Seconds of '90', '90s', '15m' or '1.5h' (> 0)."""
    t = text.strip().lower()
    mult = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(t[-1:])
    try:
        v = float(t[:-1] if mult else t) * (mult or 1.0)
    except ValueError:
        v = float("nan")
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a duration like 600, 600s, 15m or 1.5h, got {text!r}")
    return v


class Tune:
    """One tune in its folder: the candidates, the log of what happened, the runs."""

    def __init__(self, ns: argparse.Namespace, cands: list[Candidate], source: tuple[str, Any, str],
                 target: tuple[str, float], out: Path, engine: str) -> None:
        self.ns, self.cands, self.source, self.target, self.out = ns, cands, source, target, out
        self.by_id = {c.cid: c for c in cands}
        self.engine = engine                       # the engine runs start on
        self.fallback: dict[str, str] = {}        # candidate -> why it runs on mpi (auto: virtual refused it)
        self.mpirun = mpirun_path(ns.mpirun) if engine == "mpi" else ""
        self.logged = {r.get("key") for r in read_jsonl(out / "tune.jsonl")} if (out / "tune.jsonl").exists() \
            else set()
        self.spent = sum(r.get("run_s", 0.0) for r in read_jsonl(out / "tune.jsonl") if r.get("kind") == "run") \
            if (out / "tune.jsonl").exists() else 0.0
        self.writer = JsonlAppender(out / "tune.jsonl")
        self.curves: dict[str, dict[str, Any]] = {}   # run name -> its latest retime (curves.jsonl)
        self.bar: Any = None
        self.t_start = time.perf_counter()

    # -- log ------------------------------------------------------------------------------------------
    def record(self, key: str, rec: dict[str, Any]) -> None:
        """Append a record once: a resumed tune re-derives the same decisions and does not log them twice."""
        if key in self.logged:
            return
        self.logged.add(key)
        self.writer.write({"key": key, **rec})
        if rec.get("kind") == "decision" and not self.ns.quiet:
            self._say(f"{rec['cid']} {self.by_id[rec['cid']].label}: {rec['action']} at rung {rec['rung']}: "
                      f"{rec['reason']}")

    def _say(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    # -- runs -----------------------------------------------------------------------------------------
    def cluster_kw(self, K: int) -> dict[str, Any]:
        ns, kind = self.ns, self.source[0]
        fits = kind == "machine" and ns.nodes is not None and K % ns.nodes == 0
        return {"nodes": ns.nodes if fits else None, "network": ns.network if fits else None, "load": ns.load}

    def ensure(self, cand: Candidate, seed: int, epochs: float) -> dict[str, Any]:
        """Train (or resume) run (cand, seed) to `epochs` unless it is there already; its retime on the cluster."""
        E = cand.cfg.epochs
        name = f"{cand.cid}-s{seed}"
        run_dir = self.out / "runs" / name
        st = run_state(run_dir)
        if not st.reached(epochs, E):
            if self.ns.budget is not None and self.spent >= self.ns.budget:
                raise BudgetSpent
            flags = [*cand.flags, "--seed", str(cand.cfg.seed + seed)]
            stop = None if epochs >= E - 1e-9 else epochs
            # a run goes on with the engine it started on; a new one with the tune's (mpi where virtual refused it)
            engine = st.engine or ("mpi" if cand.cid in self.fallback else self.engine)
            rc, secs, cmd = self._launch(name, engine, cand, flags, run_dir, st.status != "absent", stop, epochs)
            st2 = run_state(run_dir)
            if (rc == 2 and engine == "virtual" and self.ns.engine == "auto" and st.status == "absent"
                    and st2.status == "absent"):   # refused before it started: this configuration runs on mpi
                why = last_lines(self.out / "logs" / f"{name}.log", 1)
                self.fallback[cand.cid] = why
                self.record(f"fallback:{cand.cid}", {"kind": "engine", "cid": cand.cid, "engine": "mpi",
                                                     "reason": f"engine virtual refused it: {why}"})
                self.spent += secs
                engine = "mpi"
                rc, secs, cmd = self._launch(name, engine, cand, flags, run_dir, False, stop, epochs)
                st2 = run_state(run_dir)
            self.spent += secs
            if rc in (130, 143) or st2.status == "interrupted":
                raise KeyboardInterrupt
            if rc != 0 or not st2.reached(epochs, E):
                raise TrainError(f"run {name} ({cand.label}) failed with exit status {rc}: "
                                 f"{last_lines(self.out / 'logs' / f'{name}.log')}")
            if self.bar is not None:
                self.bar.update(epochs - (st.epochs_done if st.status in ("paused", "completed") else 0.0))
            self.writer.write({"key": f"run:{name}:{epochs:g}:{time.time():.3f}", "kind": "run", "run": name,
                               "cid": cand.cid, "seed": seed, "epochs": epochs, "run_s": secs, "engine": engine,
                               "command": cmd})
        metric, value = self.target
        try:
            rt = retime(read_run(str(run_dir)), self.source, target_acc=value if metric == "test_acc" else None,
                        target_loss=value if metric == "objective_gap" else None, **self.cluster_kw(cand.K))
        except SimError as e:
            raise TrainError(f"retime of {run_dir}: {e}") from None
        rt.update(label=f"{cand.cid} {cand.label}" + (f" seed {seed}" if seed else ""), cid=cand.cid,
                  tune_seed=seed)
        self.curves[name] = rt
        write_jsonl_atomic(self.out / "curves.jsonl", [self.curves[k] for k in sorted(self.curves)])
        return rt

    def _launch(self, name: str, engine: str, cand: Candidate, flags: list[str], run_dir: Path, resume: bool,
                stop: float | None, epochs: float) -> tuple[int, float, list[str]]:
        if engine == "mpi" and not self.mpirun:
            self.mpirun = mpirun_path(self.ns.mpirun)
        cmd = run_command(engine=engine, K=cand.K, flags=flags, run_dir=run_dir, resume=resume, stop_at=stop,
                          mpirun=self.mpirun)
        if self.bar is not None:
            self.bar.set_description(f"{name} to epoch {epochs:g}")
        rc, secs = launch(cmd, self.out / "logs" / f"{name}.log")
        return rc, secs, cmd

    # -- the tune -------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        ns = self.ns
        metric, value = self.target
        E = self.cands[0].cfg.epochs
        ev = min(c.cfg.eval_every for c in self.cands)
        rungs = rung_epochs(E, ns.rungs, ns.eta, ev)
        self.record("settings", {"kind": "settings", "rungs": rungs, "candidates": {c.cid: c.label
                                                                                     for c in self.cands}})
        alive = [c.cid for c in self.cands]
        finished: dict[str, float] = {}
        stopped: dict[str, tuple[int, str]] = {}
        best: tuple[str, float] | None = None
        from tqdm import tqdm
        est = sum(max(1, math.ceil(len(alive) / ns.eta ** r)) * (e - (rungs[r - 1] if r else 0.0))
                  for r, e in enumerate(rungs)) + min(ns.finalists, len(alive)) * (ns.seeds - 1) * E
        self.bar = tqdm(total=round(est, 3), unit="epoch", file=sys.stderr, dynamic_ncols=True, leave=False,
                        disable=ns.quiet or None, bar_format="{l_bar}{bar}| {n:.3g}/{total:.3g} epochs "
                        "[{elapsed}<{remaining}]")
        budget_hit = False
        try:
            for r, e in enumerate(rungs):
                obs = []
                for cid in alive:
                    rt = self.ensure(self.by_id[cid], 0, e)
                    tg = rt["target"]
                    obs.append(Observation(cid=cid, epochs=e, tta_s=tg.get("time_s") if tg["reached"] else None,
                                           end_s=float(rt["reached_time_s"]),
                                           curve=tuple((p["time_s"], p.get(metric)) for p in rt["curve"])))
                for d in decide(obs, r, r == len(rungs) - 1, eta=ns.eta, larger_is_better=metric == "test_acc",
                                best=best, target=value, metric="test acc" if metric == "test_acc" else "f - f*"):
                    self.record(f"decision:{d.cid}:{r}", {"kind": "decision", "cid": d.cid, "rung": r,
                                                           "epochs": e, "action": d.action, "reason": d.reason,
                                                           "score": d.score})
                    if d.action == "finished" and d.score is not None:
                        finished[d.cid] = d.score
                    elif d.action == "stopped":
                        stopped[d.cid] = (r, d.reason)
                alive = [o.cid for o in obs if o.cid not in finished and o.cid not in stopped]
                if finished:
                    best = min(finished.items(), key=lambda x: (x[1], x[0]))
                left = sum(max(1, math.ceil(len(alive) / ns.eta ** (q - r - 1))) * (rungs[q] - rungs[q - 1])
                           for q in range(r + 1, len(rungs))) if alive else 0.0
                self.bar.total = round(self.bar.n + left + min(ns.finalists, len(finished) + len(alive))
                                       * ((ns.seeds - 1) * E + E - e), 3)
                self.bar.refresh()
                if not alive:
                    break
            final = finalists(finished, ns.finalists)
            for cid in final:
                self.record(f"finalist:{cid}", {"kind": "decision", "cid": cid, "rung": len(rungs), "epochs": E,
                                                "action": "finalist", "score": finished[cid],
                                                "reason": f"among the {ns.finalists} shortest times to target: "
                                                          f"{finished[cid]:.4g} s (seed 0)"})
            seeds: dict[str, list[dict[str, Any]]] = {}
            for cid in final:
                seeds[cid] = [self.ensure(self.by_id[cid], s, E) for s in range(ns.seeds)]
        except BudgetSpent:
            budget_hit = True
            final = list(finalists(finished, ns.finalists))
            seeds = {cid: [rt for k, rt in sorted(self.curves.items()) if rt["cid"] == cid] for cid in final}
        finally:
            self.bar.close()
            self.bar = None
        ranked = rank_final([SeedResult(cid=cid, tta_s=[rt["target"].get("time_s") if rt["target"]["reached"]
                                                        else None for rt in seeds[cid]]) for cid in final])
        rows = result_rows(ranked, seeds, self.by_id, self.engine, metric)
        for row in rows:
            self.record(f"result:{row['cid']}", {"kind": "result", **row})
        out = {"schema": SCHEMA, "out": str(self.out), "cluster": self.source[2], "target": {"metric": metric,
               "value": value}, "rungs": rungs, "ranked": rows, "budget_spent": budget_hit,
               "stopped": [{"cid": cid, "label": self.by_id[cid].label, "rung": r, "reason": why}
                           for cid, (r, why) in sorted(stopped.items())],
               "finished_not_final": {cid: t for cid, t in finished.items() if cid not in final},
               "run_s": self.spent}
        write_json_atomic(self.out / "result.json", out)
        return out

    def figure(self) -> str | None:
        """Draw the curves with `python -m analysis tta` (analysis reads files only); the path, or None."""
        cmd = [sys.executable, "-m", "analysis", "tta", str(self.out / "curves.jsonl"), "--out-dir", str(self.out),
               "--formats", "png", "--quiet"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            log.warning("figure not drawn: %s", (proc.stderr.strip().splitlines() or ["?"])[-1])
            return None
        return str(self.out / "tta.png")


def _settings(ns: argparse.Namespace) -> dict[str, Any]:
    keep = ("on", "target_acc", "target_loss", "nodes", "network", "load", "seeds", "finalists", "rungs", "eta",
            "engine", "train_flags") + tuple(fld for _, fld, _ in AXES)
    return {k: getattr(ns, k) for k in keep}


def run_tune(ns: argparse.Namespace) -> int:
    """The `tune` subcommand: check everything, then tune (one line and exit 2 for bad input, before any run)."""
    if ns.resume:
        saved = Path(ns.resume) / "tune.json"
        try:
            settings = json.loads(saved.read_text())["settings"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise TrainError(f"--resume {ns.resume}: no readable tune.json there ({type(e).__name__})") from None
        for k, v in settings.items():
            setattr(ns, k, v)
        ns.out = ns.resume
    if ns.on is None or (ns.target_acc is None) == (ns.target_loss is None):
        raise TrainError("tune needs --on CLUSTER and exactly one of --target-acc A or --target-loss L")
    for name, lo in (("seeds", 1), ("finalists", 1), ("rungs", 1)):
        if getattr(ns, name) < lo:
            raise TrainError(f"--{name} must be an integer >= {lo}, got {getattr(ns, name)}")
    if not ns.eta > 1:
        raise TrainError(f"--eta must be a number > 1, got {ns.eta}")
    if ns.target_acc is not None and not 0 < ns.target_acc <= 1:
        raise TrainError(f"--target-acc must be a fraction in (0, 1], got {ns.target_acc}")
    if ns.target_loss is not None and not (math.isfinite(ns.target_loss) and ns.target_loss > 0):
        raise TrainError(f"--target-loss must be a finite number > 0, got {ns.target_loss}")
    try:
        kind, src = load_source(ns.on)
    except SimError as e:
        raise TrainError(f"--on: {e}") from None
    if kind != "machine" and (ns.nodes is not None or ns.network is not None or ns.load is not None):
        raise TrainError(f"--nodes, --network and --load apply to a machine file; --on {ns.on!r} is a topology")
    engine = pick_engine(ns.engine)
    given, typed = base_fields(ns.train_flags)
    target = ({"target_acc": ns.target_acc} if ns.target_acc is not None else
              {"target_loss": ns.target_loss, "target_acc": None})
    axes = {fld: getattr(ns, fld) for _, fld, _ in AXES}
    try:
        cands, skipped = build_candidates(axes, given, target, (kind, src, ns.on), nodes=ns.nodes,
                                          network=ns.network, load=ns.load)
    except NoCandidate:
        raise
    except TrainError as e:  # name each field by the flag typed for it (an axis before --, the others after)
        own = {k: v for k, v in typed_options(ns).items() if k in axes}
        raise TrainError(name_flags(str(e), {**own, **typed}, {"straggler": "stragglers"})) from None
    out = Path(ns.out or f"runs/tune-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
    settings = _settings(ns)
    if (out / "tune.json").exists():
        try:
            old = json.loads((out / "tune.json").read_text())["settings"]
        except (OSError, ValueError, KeyError, TypeError):
            old = None
        diff = sorted(k for k in settings if old is None or json.dumps(old.get(k)) != json.dumps(settings[k]))
        if diff:
            raise TrainError(f"--out {out} holds a tune with other settings ({', '.join(diff)} differ); rerun its "
                             f"command to resume it (--resume {out}) or choose another --out")
    try:
        check_output_dir(out, what="--out")
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "tune.json", {"schema": SCHEMA, "settings": settings, "argv": sys.argv[1:]})
    except OutputError as e:
        raise TrainError(str(e)) from None
    metric, value = ("test_acc", ns.target_acc) if ns.target_acc is not None else ("objective_gap", ns.target_loss)
    if not ns.quiet:
        print(f"tune: {len(cands)} candidates on {ns.on} ({engine} engine), target "
              f"{'test acc >= ' if metric == 'test_acc' else 'f - f* <= '}{value:g}; folder {out}", file=sys.stderr)
        for label, why in skipped:
            print(f"  left out {label}: {why}", file=sys.stderr)
    tune = Tune(ns, cands, (kind, src, ns.on), (metric, value), out, engine)
    for label, why in skipped:
        tune.record(f"skipped:{label}", {"kind": "skipped", "label": label, "reason": why})
    try:
        result = tune.run()
    except KeyboardInterrupt:
        print(f"tune interrupted; the runs checkpointed. Continue with: python -m train tune --resume {out}",
              file=sys.stderr)
        return 130
    finally:
        tune.writer.close()
    fig = tune.figure()
    if ns.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result, tune.by_id, fig))
    return 0


def register(sub: Any) -> None:
    """Add the `tune` subcommand to the trainer's subparsers."""
    def _list(typ: Any) -> Any:
        def parse(text: str) -> list[Any]:
            try:
                vals = [typ(x.strip()) for x in text.split(",") if x.strip()]
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected comma-separated values like 1,4,16, got {text!r}") from None
            if not vals:
                raise argparse.ArgumentTypeError(f"expected at least one value, got {text!r}")
            return vals
        return parse

    p = sub.add_parser("tune", help="which configuration reaches the target soonest on a cluster (successive "
                                    "halving on the predicted time to target)",
                       description="Run each candidate's statistical run here, retime it on --on, stop those that "
                                   "cannot win, run the finalists with more seeds and rank them. Trainer flags of "
                                   "the task go after `--`. docs/README-tune.md.")
    p.add_argument("--on", metavar="CLUSTER", help="the cluster: a preset, a sim topology file or a machine file of "
                   "python -m train calibrate")
    t = p.add_mutually_exclusive_group()
    t.add_argument("--target-acc", type=float, help="test accuracy to reach (0..1)")
    t.add_argument("--target-loss", type=float, help="objective gap f - f* to reach (see --fstar after --)")
    defaults: dict[str, list[Any]] = {"K": [4], "algorithm": ["local"], "H": [1, 4, 16], "Hb": [1], "batch_size": [32],
                "momentum_variant": ["local"]}
    for flag, fld, typ in AXES:
        p.add_argument(flag, dest=fld, type=_list(typ), default=defaults[fld],
                       help=f"comma-separated values to try (default: {','.join(map(str, defaults[fld]))})")
    p.add_argument("--seeds", type=int, default=3, help="seeds of each finalist (default: %(default)s)")
    p.add_argument("--finalists", type=int, default=3, help="candidates run with every seed (default: %(default)s)")
    p.add_argument("--rungs", type=int, default=3, help="successive-halving rungs: epochs E/eta^2, E/eta, E by "
                   "default (default: %(default)s)")
    p.add_argument("--eta", type=float, default=2.0, help="keep 1/eta of the unfinished candidates at each rung "
                   "(default: %(default)s)")
    p.add_argument("--budget", type=parse_budget, help="time on this machine after which no run starts, e.g. 15m "
                   "(the table then shows what is known)")
    p.add_argument("--engine", choices=ENGINES, default="auto", help="auto (virtual when this trainer has it), mpi "
                   "(mpirun -n K) or virtual")
    p.add_argument("--nodes", type=int, help="machine file: the nodes the workers sit on")
    p.add_argument("--network", metavar="FILE|PRESET", help="machine file: the links between the nodes")
    p.add_argument("--load", type=float, help="machine file: other runnable processes on the cluster's cores")
    p.add_argument("--mpirun", help="mpirun to launch with (default: beside python, else on PATH)")
    p.add_argument("--out", help="the tune's folder (default runs/tune-<UTC time>); rerun to resume")
    p.add_argument("--resume", metavar="DIR", help="continue the tune in DIR with its saved settings")
    p.add_argument("--json", action="store_true", help="print result.json instead of the table")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no decision lines")
    p.add_argument("train_flags", nargs=argparse.REMAINDER, help="-- then the trainer's flags of the task "
                   "(model, data, epochs, eval-every, lr, ...)")
    p.set_defaults(tune=run_tune)
