"""Engine virtual (K workers in one process) against mpirun -n K: samples per second, side by side, pair by pair.

Run from the repo root (it launches every run itself):
    .venv/bin/python benchmarks/virtual_vs_mpi.py                       # resnet8,resnet20 x K = 4,16,64, 3 pairs
    .venv/bin/python benchmarks/virtual_vs_mpi.py --models resnet8 --ks 16 --pairs 5 --out cells.jsonl
Each cell runs the same local-SGD run (synthetic data, width 16, batch 32, H = 4, the same number of steps per
worker) with both engines, alternating which goes first, and reports medians: training samples/s (summary.json's,
after start-up), training samples per CPU-second (summary.json's train_cpu_s over every rank: what the run costs,
whatever else shares the machine), the end-to-end time of the whole command (start-up included: what a tuner's
short statistical runs pay), their per-pair ratios, and peak memory (resident, summed over the ranks for MPI).
The load average is printed before and after: on a shared machine the scheduler gives K ranks K shares of the
cores and one process its threads' shares, which favours mpirun in wall time.
The goal (docs/README-virtual.md): virtual >= 3x mpirun at K = 16; K = 64 runs.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
MPIRUN = str(Path(PY).with_name("mpirun"))


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               MPIR_CVAR_ENABLE_HEAVY_YIELD="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return env


def run_once(engine: str, model: str, K: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """One run; its end-to-end seconds, what summary.json says, or the one line it was refused with."""
    out = root / f"{engine}-{model}-K{K}-{time.monotonic_ns()}"
    n_local = args.synthetic_train // K
    epochs = args.steps * args.batch_size / n_local  # exactly args.steps steps per worker
    flags = ["-m", "train", "--model", model, "--width", str(args.width), "--batch-size", str(args.batch_size),
             "--synthetic-train", str(args.synthetic_train), "--epochs", repr(epochs), "--algorithm", "local",
             "--H", str(args.H), "--eval-every", repr(epochs), "--checkpoint-every", "0", "--checkpoint-minutes",
             "0", "--lr-warmup-epochs", "0", "--out-dir", str(out), "--quiet", "--no-progress"]
    cmd = [PY, *flags, "--engine", "virtual", "--workers", str(K)] if engine == "virtual" else \
        [MPIRUN, "-n", str(K), PY, *flags]
    t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=args.timeout,
                          check=False)
    e2e, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)  # every process of the command
    row: dict[str, Any] = {"engine": engine, "model": model, "K": K, "steps": args.steps, "rc": proc.returncode,
                           "end_to_end_s": e2e, "end_to_end_cpu_s": cpu}
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        row["error"] = lines[0] if lines else f"exit {proc.returncode}"
    else:
        s = json.loads((out / "summary.json").read_text())
        samples = s["steps_done"] * args.batch_size * K
        row.update(train_sps=s["samples_per_s"], wall_s=s["wall_s"], startup_s=s["startup_s"],
                   train_cpu_s=s["train_cpu_s"], train_spc=samples / s["train_cpu_s"],
                   e2e_sps=samples / e2e, peak_rss=s["memory"]["peak_rss_bytes_sum"],
                   estimate=s["memory"]["estimate_bytes"], test_acc=s["final"]["test_acc"])
    shutil.rmtree(out, ignore_errors=True)
    return row


def f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def mib(v: float | None) -> str:
    return "-" if v is None else f"{v / 2**20:.0f} MiB"


def _med(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet8,resnet20")
    p.add_argument("--ks", default="4,16,64")
    p.add_argument("--pairs", type=int, default=3, help="pairs per cell (virtual and mpi, alternating order)")
    p.add_argument("--steps", type=int, default=24, help="steps per worker of every run")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--H", type=int, default=4)
    p.add_argument("--synthetic-train", type=int, default=8192)
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--out", help="also write every run as a JSON line here")
    args = p.parse_args(argv)
    load0 = os.getloadavg()
    print(f"load average before: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}; {os.cpu_count()} CPUs", flush=True)
    rows: list[dict[str, Any]] = []
    table = []
    with tempfile.TemporaryDirectory(prefix="virtual-vs-mpi-") as tmp:
        for model in args.models.split(","):
            for K in (int(k) for k in args.ks.split(",")):
                cell: list[dict[str, Any]] = []
                ratios, e2e_ratios, cpu_ratios = [], [], []
                for i in range(args.pairs):
                    order = ("virtual", "mpi") if i % 2 == 0 else ("mpi", "virtual")
                    pair = {e: run_once(e, model, K, args, Path(tmp)) for e in order}
                    cell += pair.values()
                    for r in pair.values():
                        print(json.dumps(r), flush=True)
                    v, m = pair["virtual"], pair["mpi"]
                    if v.get("train_sps") and m.get("train_sps"):
                        ratios.append(v["train_sps"] / m["train_sps"])
                        e2e_ratios.append(m["end_to_end_s"] / v["end_to_end_s"])
                        cpu_ratios.append(v["train_spc"] / m["train_spc"])
                    if m.get("error") and "needs an estimated" in m["error"]:
                        break  # refused by the memory guard: it will be refused again
                rows += cell
                v_rows = [r for r in cell if r["engine"] == "virtual"]
                m_rows = [r for r in cell if r["engine"] == "mpi"]
                table.append({"model": model, "K": K, "virtual_sps": _med(v_rows, "train_sps"),
                              "mpi_sps": _med(m_rows, "train_sps"),
                              "ratio": statistics.median(ratios) if ratios else None,
                              "virtual_e2e_s": _med(v_rows, "end_to_end_s"), "mpi_e2e_s": _med(m_rows, "end_to_end_s"),
                              "e2e_ratio": statistics.median(e2e_ratios) if e2e_ratios else None,
                              "virtual_spc": _med(v_rows, "train_spc"), "mpi_spc": _med(m_rows, "train_spc"),
                              "cpu_ratio": statistics.median(cpu_ratios) if cpu_ratios else None,
                              "virtual_rss": _med(v_rows, "peak_rss"), "mpi_rss": _med(m_rows, "peak_rss"),
                              "mpi_error": next((r["error"] for r in m_rows if r.get("error")), None),
                              "virtual_error": next((r["error"] for r in v_rows if r.get("error")), None),
                              "pairs": len(ratios)})
    load1 = os.getloadavg()
    if args.out:
        with open(args.out, "w") as fh:
            for r in rows:
                fh.write(json.dumps(r) + "\n")
    print(f"\nload average after: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}\n")
    print("| model | K | training samples/s virtual / mpirun | ratio | samples per CPU-second virtual / mpirun | "
          "ratio | end to end virtual / mpirun | ratio | peak memory virtual / mpirun (sum) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for t in table:
        if t["mpi_error"] and t["mpi_sps"] is None:
            mpi = f"refused: {t['mpi_error'][:100]}"
            print(f"| {t['model']} | {t['K']} | {f(t['virtual_sps'], '.0f')} / {mpi} | - | "
                  f"{f(t['virtual_spc'], '.0f')} / - | - | {f(t['virtual_e2e_s'], '.1f')} s / - | - | "
                  f"{mib(t['virtual_rss'])} / - |")
            continue
        print(f"| {t['model']} | {t['K']} | {f(t['virtual_sps'], '.0f')} / {f(t['mpi_sps'], '.0f')} | "
              f"{f(t['ratio'], '.2f')}x | {f(t['virtual_spc'], '.0f')} / {f(t['mpi_spc'], '.0f')} | "
              f"{f(t['cpu_ratio'], '.2f')}x | {f(t['virtual_e2e_s'], '.1f')} s / {f(t['mpi_e2e_s'], '.1f')} s | "
              f"{f(t['e2e_ratio'], '.2f')}x | {mib(t['virtual_rss'])} / {mib(t['mpi_rss'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
