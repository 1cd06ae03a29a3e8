"""`python -m train calibrate`: measure this machine (comm bench, link fit, trainer step times) into a machine file."""
# Three measurements, none of them a run the predictions are later compared with:
#   1. `comm bench` under `mpirun -n 2` (one rank per core), fitted by sim.calibrate into alpha, beta, gamma;
#   2. the real trainer on ONE rank for a few hundred steps: seconds per step and seconds per evaluated sample;
#   3. the real trainer, local SGD with a sync every `--probe-H` steps (4), on each of `--probe-ranks` (3, 6 and 12
#      by default: more ranks than cores, and none of the K the validation runs use). Two fits:
#      - the step times t_K (1 rank and the probes) to the CPU-share model t_K = u * max(C, K + L_K): C cores
#        shared fairly by our K busy ranks and L_K other runnable processes (the background load, sampled from
#        /proc/stat before each run; --fit-load fits one constant L instead); u * C is a rank's step time alone;
#      - the time per sync (all-reduce + the barrier before it) o_K to rounds_K * alpha(s_K), with
#        alpha(s) = alpha_bench * s / s_2 + lam * (1 - 1/s) * g(s): a message round between oversubscribed ranks
#        also waits, with the chance 1 - 1/s, for the partner to be scheduled again. The shape g is 1, sqrt(s) or
#        s, whichever fits the probes best, with lam fitted for it; rounds_K counts the barrier's and the
#        all-reduce's.
# The machine file also embeds a sim topology (one node, the fitted level, the measured step as a fixed compute),
# the single-rank run's step times (wall time between consecutive step records) with their coefficient of
# variation, which --predict turns into step-time jitter, and the version of the code that wrote it.
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sim.calibrate import fit_level, read_bench
from sim.errors import SimError
from train.config import TrainConfig
from train.errors import TrainError
from train.fitcheck import assess
from train.metrics import write_json_atomic
from train.predict import MACHINE_SCHEMA, WAIT_FORMS, calibration_code_version, profile_model, scheduling_wait

__all__ = ["register", "run_calibrate", "step_time", "step_samples", "MAX_SAMPLES", "fit_share", "fit_step",
           "fit_lambda", "sync_rounds", "background_load", "mpirun_path"]

log = logging.getLogger(__name__)

#: Trainer flags that define the calibrated model and batch (kebab-case flag, TrainConfig field, type).
MODEL_FLAGS = (("--model", "model", str), ("--width", "width", int), ("--dataset", "dataset", str),
               ("--data-dir", "data_dir", str), ("--batch-size", "batch_size", int),
               ("--synthetic-size", "synthetic_size", int), ("--synthetic-train", "synthetic_train", int))


def mpirun_path(given: str | None = None) -> str:
    """The mpirun to launch with: --mpirun, the one beside this Python, or the one on PATH."""
    if given:
        return given
    beside = Path(sys.executable).with_name("mpirun")
    if beside.exists():
        return str(beside)
    found = shutil.which("mpirun")
    if not found:
        raise TrainError("mpirun not found beside the Python interpreter or on PATH; pass --mpirun PATH")
    return found


def step_time(summary: dict[str, Any]) -> float:
    """Seconds per training step of a finished run: wall time less evaluation, communication, waiting and
    checkpoint writing."""
    tot = summary["totals_mean"]  # as of the last evaluation; rank 0's totals also hold the final checkpoint
    other = sum(tot.get(k) or 0.0 for k in ("eval_s", "comm_s_global", "comm_s_block", "wait_s_global",
                                             "wait_s_block"))
    other += (summary.get("totals_rank0") or tot).get("checkpoint_s") or 0.0
    steps = summary["steps_done"]
    if steps < 1:
        raise TrainError(f"calibration run {summary.get('run_dir')} did no step")
    return (summary["wall_s"] - other) / steps


#: Step times kept in the machine file (the first ones; the CV is over all of them).
MAX_SAMPLES = 512


def step_samples(metrics: Path, skip: int = 5) -> list[float]:
    """Seconds of each step of a run without syncs: wall time between consecutive step records of metrics.jsonl
    (rank 0, --log-every 1), the first `skip` steps (warm-up) left out."""
    prev: tuple[int, float] | None = None
    out = []
    with open(metrics, encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            if rec.get("kind") != "step":
                continue
            if prev is not None and rec["step"] == prev[0] + 1 and rec["step"] >= skip:
                out.append(float(rec["wall_s"]) - prev[1])
            prev = (rec["step"], float(rec["wall_s"]))
    return [v for v in out if v > 0]


def _cv(xs: list[float]) -> float | None:
    if len(xs) < 2:
        return None
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs)) / m


def background_load(seconds: float = 1.0, samples: int = 20) -> float:
    """Other runnable processes right now: the mean of /proc/stat's procs_running less this sampler (0 elsewhere)."""
    vals = []
    for i in range(samples):
        try:
            with open("/proc/stat", encoding="ascii") as fh:
                vals.append(next(int(x.split()[1]) for x in fh if x.startswith("procs_running")))
        except (OSError, StopIteration, ValueError, IndexError):
            return 0.0
        if i < samples - 1:
            time.sleep(seconds / samples)
    return max(0.0, sum(vals) / len(vals) - 1.0)


def fit_share(points: list[tuple[int, float]], cores: int, max_load: float = 32.0) -> tuple[float, float]:
    """(u, L) of t_K = u * max(cores, K + L) fitted to (K, t_K) points by least relative squares, L in [0, max_load].

    For each L on a 0.01 grid u has a closed form; the L with the smallest residual wins.
    """
    if len({k for k, _ in points}) < 2:
        raise TrainError(f"the share fit needs step times at >= 2 different rank counts, got {points}")
    for k, t in points:
        if k < 1 or not t > 0:
            raise TrainError(f"share fit points must be (ranks >= 1, seconds > 0), got ({k}, {t})")
    best = (float("inf"), 0.0, 0.0)
    for i in range(int(max_load * 100) + 1):
        L = i / 100
        x = [max(cores, k + L) / t for k, t in points]   # relative residuals: u x_i should be 1
        u = sum(x) / sum(v * v for v in x)
        res = sum((u * v - 1.0) ** 2 for v in x)
        if res < best[0] - 1e-15:
            best = (res, u, L)
    return best[1], best[2]


def fit_step(points: list[tuple[int, float, float]], cores: int) -> float:
    """u of t_K = u * max(cores, K + L_K) over (K, t_K, L_K) points with measured loads L_K (least relative squares)."""
    if not points:
        raise TrainError("the step fit needs at least one (ranks, seconds, load) point, got none")
    for k, t, load in points:
        if k < 1 or not t > 0 or load < 0:
            raise TrainError(f"step fit points must be (ranks >= 1, seconds > 0, load >= 0), got ({k}, {t}, {load})")
    x = [max(cores, k + load) / t for k, t, load in points]
    return sum(x) / sum(v * v for v in x)


def sync_rounds(K: int) -> int:
    """Message rounds of one trainer sync on K ranks: the dissemination barrier (ceil lg K) and a recursive
    doubling all-reduce (lg p' rounds, plus 2 for the fold when K is not a power of two)."""
    if K < 2:
        return 0
    p2 = 1 << (K.bit_length() - 1)
    return math.ceil(math.log2(K)) + int(math.log2(p2)) + (2 if p2 != K else 0)


def fit_lambda(points: list[tuple[int, float, float]], alpha_2: float,
               forms: tuple[str, ...] = WAIT_FORMS) -> tuple[float, str]:
    """(lam, form) of o_K = rounds_K * (alpha_2 * s_K + scheduling_wait(s_K, lam, form)) over (K, o_K, s_K) points:
    for each form lam by least relative squares (clipped at 0), the form with the smallest residual wins.
    alpha_2 is the bench's alpha divided by its own share."""
    best = (float("inf"), 0.0, forms[0])
    for form in forms:
        xs = []
        for k, o, s in points:
            base = sync_rounds(k) * alpha_2 * s
            x = sync_rounds(k) * scheduling_wait(s, 1.0, form)
            if o > 0:
                xs.append(((o - base) / o, x / o))
        if not any(x > 0 for _, x in xs):
            return 0.0, form
        lam = max(0.0, sum(r * x for r, x in xs) / sum(x * x for _, x in xs))
        res = sum((lam * x - r) ** 2 for r, x in xs)
        if res < best[0] - 1e-15:
            best = (res, lam, form)
    return best[1], best[2]


def _run(cmd: list[str], what: str, env: dict[str, str]) -> None:
    log.info("%s: %s", what, " ".join(cmd))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise TrainError(f"{what} failed with exit status {proc.returncode}: {tail[0]}")


def _train_cmd(ns: argparse.Namespace, out_dir: Path, epochs: float, H: int = 1_000_000) -> list[str]:
    alg = ["--algorithm", "local", "--H", str(H)]
    cmd = [sys.executable, "-m", "train", "--quiet", "--out-dir", str(out_dir), *alg,
           "--epochs", f"{epochs:g}", "--eval-every", f"{epochs:g}", "--target-acc", "0.999"]
    for flag, name, _ in MODEL_FLAGS:
        if getattr(ns, name) is not None:
            cmd += [flag, str(getattr(ns, name))]
    return cmd


def _summary(out_dir: Path) -> dict[str, Any]:
    return json.loads((out_dir / "summary.json").read_text())


def run_calibrate(ns: argparse.Namespace) -> dict[str, Any]:
    """Run the three measurements and write the machine file; returns its content."""
    cfg = TrainConfig(**{name: getattr(ns, name) for _, name, _ in MODEL_FLAGS if getattr(ns, name) is not None})
    prof = profile_model(cfg)
    cpu = os.cpu_count() or 1
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    mpirun = mpirun_path(ns.mpirun)
    load_before = os.getloadavg()
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="calibrate-") as tmp:
        work = Path(tmp)
        bench = work / "bench_p2.jsonl"
        load_bench = background_load()
        _run([mpirun, "-n", "2", sys.executable, "-m", "mpi4py", "-m", "comm", "bench", "--sizes", ns.bench_sizes,
              "--allreduce", "recursive_doubling,rabenseifner,ring", "--iters", str(ns.iters), "--out", str(bench)],
             "comm bench (2 ranks)", env)
        try:
            fit = fit_level(read_bench(bench))
        except SimError as e:
            raise TrainError(f"sim calibrate could not fit the bench: {e}") from None
        # one rank: epochs chosen for about --steps steps (n_train samples per epoch, batch B)
        ep1 = ns.steps * cfg.batch_size / prof.n_train
        load1 = background_load()
        _run(_train_cmd(ns, work / "k1", ep1), "trainer on 1 rank", env)
        s1 = _summary(work / "k1")
        t1 = step_time(s1)
        samples = step_samples(work / "k1" / "metrics.jsonl")
        eval_per_sample = (s1["totals_mean"]["eval_s"] or 0.0) / prof.n_test
        ck = s1.get("totals_rank0") or s1["totals_mean"]  # the one rank's totals, final checkpoint included
        n_ckpt = ck.get("checkpoints") or 0
        ckpt_per_write = (ck.get("checkpoint_s") or 0.0) / n_ckpt if n_ckpt else 0.0
        points, loads, syncs = [(1, t1)], [load1], []
        for kp in ns.probe_ranks:
            ep_p = ns.steps * cfg.batch_size * kp / prof.n_train
            loads.append(background_load())
            _run([mpirun, "-n", str(kp), *_train_cmd(ns, work / f"k{kp}", ep_p, H=ns.probe_H)],
                 f"trainer on {kp} ranks", env)
            sp = _summary(work / f"k{kp}")
            points.append((kp, step_time(sp)))
            tot = sp["totals_mean"]
            syncs.append((kp, ((tot["comm_s_global"] or 0.0) + (tot["wait_s_global"] or 0.0))
                           / max(1, sp["syncs"]["global"])))
    if ns.fit_load:   # one constant background load L for all runs, fitted with u
        u, L = fit_share(points, cpu)
        run_loads = [L] * len(points)
        bench_load = L
    else:             # the load sampled before each run
        run_loads, bench_load = loads, load_bench
        u = fit_step([(k, t, ld) for (k, t), ld in zip(points, run_loads)], cpu)
        L = sum(loads) / len(loads)
    t_alone = u * cpu
    level_share = max(cpu, 2 + bench_load) / cpu  # the bench's 2 ranks ran this much slower than alone
    alpha_2 = fit.alpha / level_share
    sh = [max(cpu, k + ld) / cpu for (k, _), ld in zip(points, run_loads)]
    lam, form = fit_lambda([(k, o, s) for (k, o), s in zip(syncs, sh[1:])], alpha_2)
    level = fit.level("intra").to_json()
    name = ns.name
    machine = {
        "schema": MACHINE_SCHEMA, "name": name, "code_version": calibration_code_version(),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "calibration_s": time.time() - t0,
        "load_avg_before": list(load_before), "load_avg_after": list(os.getloadavg()),
        "cpu_count": cpu, "background_load": L, "level": level, "level_share": level_share,
        "oversubscribed_latency_s": lam, "oversubscribed_form": form, "sampled_loads": [load_bench, *loads],
        "fit": {"r2": fit.r2, "rows": fit.rows, "alpha_s": fit.alpha, "beta_s_per_byte": fit.beta,
                "gamma_s_per_byte": fit.gamma, "notes": fit.notes},
        "step": {"model": cfg.model, "width": cfg.width, "dataset": cfg.dataset, "batch_size": cfg.batch_size,
                 "params": prof.params, "gflops_per_sample": prof.gflops_per_sample, "seconds_per_step": t_alone,
                 "steps": s1["steps_done"], "eval_s_per_sample": eval_per_sample / sh[0], "cv": _cv(samples),
                 "checkpoint_s_per_write": ckpt_per_write / sh[0],
                 "samples_s": samples[:MAX_SAMPLES], "samples_from": "wall time between consecutive step records of "
                 "the single-rank run (metrics.jsonl), first 5 steps left out"},
        "probes": [{"ranks": k, "seconds_per_step": t, "load": ld, "fit_s": t_alone * s}
                   for (k, t), ld, s in zip(points, run_loads, sh)],
        "sync_probes": [{"ranks": k, "seconds_per_sync": o, "rounds": sync_rounds(k),
                         "fit_s": sync_rounds(k) * (alpha_2 * s + scheduling_wait(s, lam, form))}
                        for (k, o), s in zip(syncs, sh[1:])],
        "topology": {"name": name, "description": f"{name}: measured by python -m train calibrate (2-rank comm bench "
                     f"fit, single-rank step of {cfg.model} at batch {cfg.batch_size}); one node of {cpu} cores",
                     "nodes": 1, "gpus_per_node": cpu, "intra": level, "inter": level,
                     "compute": {"kind": "fixed", "device": "cpu", "seconds_per_iter": [t_alone]}},
    }
    if ns.profile_models:  # the compute profile of the listed models, for predictions of other models
        from train.stepprofile import profile_section
        machine["compute_profile"] = profile_section(ns.profile_models, ns.profile_batches, ns.profile_repeats,
                                                     lambda s: log.info("profile: %s", s))
    machine["quality"] = assess(machine)  # written even when it fails: what was measured is kept
    write_json_atomic(ns.out, machine)
    return machine


def _cmd(ns: argparse.Namespace) -> int:
    if ns.profile_repeats < 1:
        raise TrainError(f"profile_repeats must be an integer >= 1, got {ns.profile_repeats}")
    if ns.profile_only:
        from train.stepprofile import cmd_profile_only
        return cmd_profile_only(ns)
    if ns.steps < 16:
        raise TrainError(f"steps must be an integer >= 16, got {ns.steps}")
    if not ns.probe_ranks or min(ns.probe_ranks) < 2:
        raise TrainError(f"probe_ranks must be integers >= 2 like 3,6, got {ns.probe_ranks}")
    if ns.probe_H < 1:
        raise TrainError(f"probe_H must be an integer >= 1, got {ns.probe_H}")
    if ns.iters < 1:
        raise TrainError(f"iters must be an integer >= 1, got {ns.iters}")
    m = run_calibrate(ns)
    if ns.json:
        print(json.dumps(m, indent=2))
        return 0
    lv, st = m["level"], m["step"]
    bw = "unlimited" if lv["bandwidth_GBps"] is None else f"{lv['bandwidth_GBps']:.3g} GB/s"
    print(f"link (2-rank bench fit, R^2 {m['fit']['r2']:.3f}): alpha {lv['latency_s'] + lv['overhead_s']:.3g} s, "
          f"bandwidth {bw}, gamma {lv['gamma_s_per_byte']:.3g} s/B")
    for pr in m["probes"]:
        print(f"step ({st['model']}, batch {st['batch_size']}) on {pr['ranks']} rank(s): "
              f"{1e3 * pr['seconds_per_step']:.3f} ms measured, {1e3 * pr['fit_s']:.3f} ms fitted "
              f"(background load {pr['load']:.2f})")
    for pr in m["sync_probes"]:
        print(f"sync on {pr['ranks']} ranks ({pr['rounds']} rounds): {1e3 * pr['seconds_per_sync']:.3f} ms measured, "
              f"{1e3 * pr['fit_s']:.3f} ms fitted")
    print(f"oversubscribed message round: scheduling wait {1e3 * m['oversubscribed_latency_s']:.3f} ms x (1 - 1/s) "
          f"x g(s), g = {m['oversubscribed_form']} (the best-fitting shape)")
    if st.get("cv") is not None:
        print(f"step-time jitter: CV {st['cv']:.3g} over {len(st['samples_s'])} single-rank steps "
              f"(--predict draws each rank's steps from them)")
    print(f"CPU share: mean background load {m['background_load']:.2f} on {m['cpu_count']} cores; a rank alone "
          f"{1e3 * st['seconds_per_step']:.3f} ms per step, {1e6 * st['eval_s_per_sample']:.2f} us per test sample, "
          f"{1e3 * st.get('checkpoint_s_per_write', 0.0):.2f} ms per checkpoint")
    print(f"load average {m['load_avg_before'][0]:.2f} before, {m['load_avg_after'][0]:.2f} after; "
          f"took {m['calibration_s']:.1f} s; wrote {ns.out}")
    q = m["quality"]
    if not q["ok"]:
        for problem in q["problems"]:
            print(f"WARNING: {problem}", file=sys.stderr)
        print(f"WARNING: this calibration does not explain its own measurements (rule: {q['rule']}); --predict "
              f"will warn on every use of {ns.out}; recalibrate on a quieter machine (exit status 3)",
              file=sys.stderr, flush=True)
        return 3
    return 0


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 3,6, got {text!r}") from None


def _names(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated model names like resnet20,wideresnet16-4, got "
                                         f"{text!r}")
    return names


def register(sub: Any) -> None:
    """Add the `calibrate` subcommand to the trainer's subparsers."""
    p = sub.add_parser("calibrate", help="measure this machine (comm bench, trainer step times) into a machine "
                                         "file for --predict")
    p.add_argument("--out", required=True, help="machine file to write (JSON, schema train.machine/1)")
    p.add_argument("--name", default="this-machine", help="name of the machine in the file")
    for flag, name, typ in MODEL_FLAGS:
        p.add_argument(flag, dest=name, type=typ, default=None, help="as for a run (default: the trainer's)")
    p.add_argument("--steps", type=int, default=256, help="steps of each timed trainer run (default: %(default)s)")
    p.add_argument("--probe-ranks", type=_ints, default=[3, 6, 12], help="rank counts of the probes; "
                   "keep them out of the runs you validate (default: 3,6,12)")
    p.add_argument("--probe-H", dest="probe_H", type=int, default=4,
                   help="local steps between the probes' syncs (default: %(default)s)")
    p.add_argument("--fit-load", action="store_true", help="fit one constant background load to the probes "
                   "instead of sampling the runnable processes before each run")
    p.add_argument("--bench-sizes", default="1K,16K,64K,256K,1M", help="comm bench message sizes")
    p.add_argument("--iters", type=int, default=20, help="comm bench timed iterations per cell")
    p.add_argument("--mpirun", default=None, help="mpirun to use (default: beside python, else on PATH)")
    p.add_argument("--profile-models", type=_names, default=[], metavar="M1,M2",
                   help="also time one step of these models (CPU seconds, one thread) at --profile-batches and fit "
                        "the layer model that predicts other models' step times (e.g. resnet20,wideresnet16-4)")
    p.add_argument("--profile-batches", type=_ints, default=[8, 32, 64], metavar="B1,B2",
                   help="batch sizes of the profile (default: 8,32,64)")
    p.add_argument("--profile-repeats", type=int, default=5,
                   help="repeats of each profile point, interleaved; the median counts (default: %(default)s)")
    p.add_argument("--profile-only", action="store_true",
                   help="measure only the profile (of --profile-models, else --model) and write it to --out")
    p.add_argument("--json", action="store_true", help="print the machine file")
    p.set_defaults(calibrate=_cmd)
