"""`python -m comm bench`: all-reduce time, algbw and busbw by message size and algorithm, osu/nccl-tests style."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn

import numpy as np
from mpi4py import MPI

from atomicio import EXIT_OUTPUT, OutputError, check_output_file
from atomicio import write_jsonl_atomic as _write_jsonl_atomic

from .allreduce import allreduce, auto_algorithm, private_comm
from .errors import CommError
from .nodes import node_layout
from .topology import Topology, hierarchical_allreduce

__all__ = ["BenchConfig", "parse_size", "pattern", "expected_sum", "time_call", "run_bench", "main",
           "BENCH_ALGORITHMS"]

BENCH_ALGORITHMS = ("recursive_doubling", "rabenseifner", "ring", "rail", "native", "hierarchical", "auto")
# "hierarchical" here is comm.hierarchical_allreduce over comm.Topology (virtual blocks with --gpus-per-node);
# comm.allreduce(algorithm="hierarchical") is the same shape on the real nodes.

#: world: time the algorithms on the whole world (rows without a level); intra: on the node communicators; inter:
#: on the communicator of the node leaders (one rank per node); both: intra, then inter. Rows of the last three
#: carry "level", the input of `python -m sim calibrate --bench` (two-level fit).
BENCH_LEVELS = ("world", "intra", "inter", "both")
BENCH_DTYPES = ("float16", "float32", "float64", "int32", "int64")
_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1024**2, "MB": 1024**2, "MIB": 1024**2,
          "G": 1024**3, "GB": 1024**3, "GIB": 1024**3}


def parse_size(text: str) -> int:
    """'4K', '1M', '100MiB' or '4096' -> bytes (binary units)."""
    t = text.strip().upper()
    digits = t.rstrip("KMGIB")
    unit = t[len(digits):]
    if not digits.isdigit() or unit not in _UNITS:
        raise CommError(f"size {text!r} is not a byte count like 4096, 4K, 1M or 128MiB")
    return int(digits) * _UNITS[unit]


def default_sizes() -> list[int]:
    return [4096 << i for i in range(16)]  # 4 KiB .. 128 MiB, doubling


@dataclass(kw_only=True)
class BenchConfig:
    sizes: list[int]
    algorithms: list[str]
    warmup: int = 3
    iters: int = 20
    dtype: str = "float32"
    gpus_per_node: int | None = None
    out: str | None = None
    level: str = "world"

    def __post_init__(self) -> None:
        if self.level not in BENCH_LEVELS:
            raise CommError(f"level must be one of {', '.join(BENCH_LEVELS)}; got {self.level!r}")
        if self.level != "world" and "hierarchical" in self.algorithms:
            raise CommError("--level times flat algorithms on the node and leader communicators; drop hierarchical "
                            "from --allreduce")
        for s in self.sizes:
            if s < 0:
                raise CommError(f"message size must be >= 0 bytes; got {s}")
        for a in self.algorithms:
            if a not in BENCH_ALGORITHMS:
                raise CommError(f"algorithm {a!r} is not one of {', '.join(BENCH_ALGORITHMS)}")
        if self.dtype not in BENCH_DTYPES:
            raise CommError(f"dtype must be one of {', '.join(BENCH_DTYPES)}; got {self.dtype!r}")
        if self.iters < 1:
            raise CommError(f"iters must be >= 1; got {self.iters}")
        if self.warmup < 0:
            raise CommError(f"warmup must be >= 0; got {self.warmup}")
        if self.gpus_per_node is not None and self.gpus_per_node < 1:
            raise CommError(f"gpus-per-node must be >= 1; got {self.gpus_per_node}")


def pattern(rank: int, count: int, dtype: Any) -> np.ndarray:
    """Rank-dependent small integers, exact in every benchmarked dtype: (rank + 1) + (i mod 7)."""
    return ((rank + 1) + (np.arange(count) % 7)).astype(dtype)


def expected_sum(p: int, count: int, dtype: Any) -> np.ndarray:
    """The closed-form sum over ranks of pattern(rank, ...): p (p + 1) / 2 + p (i mod 7)."""
    return (p * (p + 1) // 2 + p * (np.arange(count) % 7)).astype(dtype)


def time_call(fn: Callable[[], Any], comm: Any) -> float:
    """Seconds one collective call takes on the slowest rank (barrier before, max-reduce after)."""
    comm.Barrier()
    t0 = MPI.Wtime()
    fn()
    elapsed = MPI.Wtime() - t0
    slowest: float = comm.allreduce(elapsed, op=MPI.MAX)
    return slowest


def _row(p: int, cfg: BenchConfig, nbytes: int, algorithm: str, times: list[float], correct: bool) -> dict[str, Any]:
    med = statistics.median(times)
    algbw = nbytes / med / 1e9 if med > 0 else 0.0
    return {"library": "mpi" if algorithm == "native" else "localsgd", "p": p,
            "gpus_per_node": cfg.gpus_per_node if algorithm == "hierarchical" else None, "bytes": nbytes,
            "dtype": cfg.dtype, "algorithm": algorithm, "t_median_s": med, "t_min_s": min(times),
            "t_max_s": max(times), "algbw_GBps": algbw, "busbw_GBps": algbw * 2 * (p - 1) / p if p > 1 else 0.0,
            "correct": correct}


def _caller(algorithm: str, buf: np.ndarray, world: Any, topo: Topology | None) -> Callable[[], Any]:
    """The timed call of one cell: comm.hierarchical_allreduce over `topo`, else comm.allreduce by name."""
    if algorithm == "hierarchical":
        assert topo is not None
        return lambda: hierarchical_allreduce(buf, topo)
    return lambda: allreduce(buf, algorithm=algorithm, comm=world)


def run_bench(cfg: BenchConfig, world: Any = None,
              emit: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Time every (size, algorithm) of `cfg` and check each result against its closed form."""
    world = world or MPI.COMM_WORLD
    p, rank = world.Get_size(), world.Get_rank()
    dtype = np.dtype(cfg.dtype)
    topo = Topology.from_comm(world, cfg.gpus_per_node) if "hierarchical" in cfg.algorithms else None
    rows = []
    for nbytes in cfg.sizes:
        count = nbytes // dtype.itemsize
        src, want = pattern(rank, count, dtype), expected_sum(p, count, dtype)
        buf = np.empty_like(src)
        for algorithm in cfg.algorithms:
            call = _caller(algorithm, buf, world, topo)
            times, ok = [], True
            for it in range(cfg.warmup + cfg.iters):
                np.copyto(buf, src)
                t = time_call(call, world)
                ok = ok and bool(np.array_equal(buf, want))
                if it >= cfg.warmup:
                    times.append(t)
            correct = bool(world.allreduce(ok, op=MPI.LAND))
            row = _row(p, cfg, count * dtype.itemsize, algorithm, times, correct)
            if algorithm == "auto":  # what auto chose for this size on this layout
                row["auto_choice"] = auto_algorithm(count * dtype.itemsize, node_layout(private_comm(world)))
            rows.append(row)
            if rank == 0 and emit:
                emit(row)
    return rows


def run_levels(cfg: BenchConfig, world: Any,
               emit: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Time the flat algorithms on the node communicators (level intra: every node at once, node 0's rows are
    kept) and then on the leaders' communicator (level inter); rows carry "level" and the layout."""
    topo = Topology.from_comm(world, cfg.gpus_per_node)
    levels = ("intra", "inter") if cfg.level == "both" else (cfg.level,)
    rows: list[dict[str, Any]] = []
    for level in levels:
        comm = topo.node_comm if level == "intra" else topo.leader_comm
        extra = {"level": level, "nodes": topo.n_nodes, "ranks_per_node": topo.gpus_per_node}
        tagged = (lambda r, extra=extra: emit({**r, **extra})) if emit else None
        if comm is not None:  # ranks off the leaders' communicator sit the inter level out
            rows += [{**r, **extra} for r in run_bench(cfg, comm, tagged if world.Get_rank() == 0 else None)]
        world.Barrier()
    return rows


def _fmt_bytes(n: int) -> str:
    for unit, scale in (("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} B"


def print_row(row: dict[str, Any]) -> None:
    print(f"{_fmt_bytes(row['bytes']):>10} {row['algorithm']:>18} {row['t_median_s'] * 1e6:>12.1f} "
          f"{row['t_min_s'] * 1e6:>12.1f} {row['t_max_s'] * 1e6:>12.1f} {row['algbw_GBps']:>8.3f} "
          f"{row['busbw_GBps']:>8.3f} {'ok' if row['correct'] else 'WRONG':>6}", flush=True)


def write_jsonl_atomic(path: str, rows: list[dict[str, Any]]) -> None:
    """Write rows as JSON lines atomically (atomicio: temp, fsync, rename, fsync of the folder)."""
    _write_jsonl_atomic(path, rows)


class _Parser(argparse.ArgumentParser):
    """Under mpirun: help from rank 0 only; a usage error becomes a CommError that goes through the ranks'
    agreement in main() (one `error:` line from rank 0, exit 2 everywhere) instead of N usage blocks."""

    def print_help(self, file: Any = None) -> None:
        if MPI.COMM_WORLD.Get_rank() == 0:
            super().print_help(file)

    def error(self, message: str) -> NoReturn:
        raise CommError(f"{message} (see `{self.prog} --help`)")


class _OldSpelling(argparse.Action):
    """An old option spelling (`--algorithms`, kept for one release): stores like the new one, warns on rank 0."""

    NEW: ClassVar[dict[str, str]] = {"--algorithms": "--allreduce"}

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if MPI.COMM_WORLD.Get_rank() == 0:
            print(f"warning: {option_string} is deprecated; use {self.NEW.get(str(option_string))}", file=sys.stderr,
                  flush=True)
        setattr(namespace, self.dest, values)


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m comm bench", description=__doc__)
    ap.add_argument("--sizes", default=None,
                    help="comma-separated message sizes (4K,1M,...); default 4K..128M doubling")
    ap.add_argument("--allreduce", default=None, help="comma-separated all-reduce algorithms (as the trainer's "
                    "--allreduce); default: all (all but hierarchical with --level)")
    ap.add_argument("--algorithms", dest="allreduce", action=_OldSpelling, help=argparse.SUPPRESS)
    ap.add_argument("--level", default="world", help="world (default) | intra (node communicators) | inter (node "
                    "leaders) | both: rows tagged with their level for `python -m sim calibrate --bench`")
    ap.add_argument("--warmup", type=int, default=3, help="untimed iterations per cell (default 3)")
    ap.add_argument("--iters", type=int, default=20, help="timed iterations per cell (default 20)")
    ap.add_argument("--dtype", default="float32", help=f"one of {', '.join(BENCH_DTYPES)} (default float32)")
    ap.add_argument("--gpus-per-node", type=int, default=None,
                    help="ranks per (virtual) node for the hierarchical rows; default: real shared-memory nodes")
    ap.add_argument("--out", default=None, help="write JSON lines, one row per size x algorithm")
    ap.add_argument("--json", action="store_true", help="print JSON lines instead of the table")
    return ap


def main(argv: list[str] | None = None) -> int:
    world = MPI.COMM_WORLD
    problem = None
    try:  # every rank validates its arguments before any communication
        args = build_parser().parse_args(argv)
        sizes = [parse_size(s) for s in args.sizes.split(",")] if args.sizes else default_sizes()
        default = [a for a in BENCH_ALGORITHMS if args.level == "world" or a != "hierarchical"]
        algs = [a.strip() for a in args.allreduce.split(",") if a.strip()] if args.allreduce else default
        cfg = BenchConfig(sizes=sizes, algorithms=algs, warmup=args.warmup, iters=args.iters, dtype=args.dtype,
                          gpus_per_node=args.gpus_per_node, out=args.out, level=args.level)
        if cfg.gpus_per_node and world.Get_size() % cfg.gpus_per_node and (
                "hierarchical" in cfg.algorithms or cfg.level != "world"):
            raise CommError(f"world size {world.Get_size()} is not divisible by --gpus-per-node {cfg.gpus_per_node}")
        if cfg.out and not os.path.isdir(os.path.dirname(os.path.abspath(cfg.out))):
            folder = os.path.dirname(os.path.abspath(cfg.out))
            raise CommError(f"--out {cfg.out!r}: directory {folder!r} does not exist")
        if cfg.out and world.Get_rank() == 0:
            try:
                check_output_file(cfg.out, what="--out")
            except OutputError as e:
                raise CommError(str(e)) from None
    except CommError as e:
        problem = str(e)
    # One agreement step, so that every rank stops together when any rank's input is bad (no rank is left waiting
    # in a collective), and rank 0 has printed the error before the job ends.
    problems = [p for p in world.allgather(problem) if p]
    if problems:
        if world.Get_rank() == 0:
            print(f"error: {problems[0]}", file=sys.stderr, flush=True)
        world.Barrier()
        return 2
    rank0 = world.Get_rank() == 0
    if rank0 and not args.json:
        print(f"# localsgd comm bench: p={world.Get_size()} dtype={cfg.dtype} warmup={cfg.warmup} "
              f"iters={cfg.iters} ({MPI.Get_library_version().splitlines()[0].strip()})")
        print(f"{'size':>10} {'algorithm':>18} {'median(us)':>12} {'min(us)':>12} {'max(us)':>12} "
              f"{'algbw':>8} {'busbw':>8} {'check':>6}")
        print(f"{'':>10} {'':>18} {'':>12} {'':>12} {'':>12} {'(GB/s)':>8} {'(GB/s)':>8}")
    emit = (lambda r: print(json.dumps(r), flush=True)) if args.json else print_row
    rows = run_bench(cfg, world, emit) if cfg.level == "world" else run_levels(cfg, world, emit)
    if rank0 and cfg.out:
        try:
            write_jsonl_atomic(cfg.out, rows)
        except OutputError as e:  # e.g. the disk filled during the bench: one line, no temp file left
            print(f"error: {e}", file=sys.stderr, flush=True)
            return EXIT_OUTPUT
    return 0 if all(r["correct"] for r in rows) else 1
