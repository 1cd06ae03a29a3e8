"""Command line of the convex experiment: `python -m sim convex fstar|grid|speedup`."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from sim.clivocab import VocabParser
from sim.convex.errors import ConvexError

__all__ = ["register"]

_GRID_H = "1,2,4,8,16"
_GRID_B = "1,2,4,8,16,32,64,128,256"
_SPEEDUP_K = "1,2,4,8,16,32,64"


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"must be a comma-separated list of integers >= 1, got {text!r}")
    return values


def _seed_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"must be a comma-separated list of integers >= 0, got {text!r}")
    return values


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return v


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, metavar="PATH", help="LIBSVM file (e.g. ../shared/data/w8a)")
    p.add_argument("--n-features", type=_positive_int, default=None, help="feature count (default: inferred)")
    p.add_argument("--cache-dir", default=None, help="f* cache folder (default $XDG_CACHE_HOME/localsgd)")
    p.add_argument("--json", action="store_true", help="print the machine-readable result on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _experiment(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--fstar", default="computed", help="f* to measure against: computed | paper | a number")
    p.add_argument("--out", default=None, metavar="PATH", help="write the JSON result here (atomically)")
    p.add_argument("--epsilon", type=float, default=0.005, help="target f(w) - f* <= epsilon")
    p.add_argument("--grad-cost", type=float, default=1.0, help="time units per sample gradient")
    p.add_argument("--comm-cost", type=float, default=25.0, help="time units per communication round")
    p.add_argument("--lr-cap", old=("--gamma-cap",), dest="gamma_cap", metavar="CAP", type=float, default=32.0,
                   help="cap of the decaying step; const step is cap*c")
    p.add_argument("--max-time", type=float, default=2.0e6, help="a run not at target by then is unreached")
    p.add_argument("--average", choices=("uniform", "linear", "quadratic"), default="quadratic",
                   help="weight s**p of the iterate after s steps in the averaged iterate")
    p.add_argument("--sampler", old=("--sampling",), dest="sampling", choices=("iid", "shuffle"), default="iid",
                   help="see sim/convex/sampler.py")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler (ignored with --seeds)")
    p.add_argument("--seeds", type=_seed_list, default=None,
                   help="comma-separated seeds: one c search per seed, time = mean of their best times")
    p.add_argument("--schedules", default="decay,const", help="step-size schedules to search (decay, const)")
    p.add_argument("--c-min-exp", type=int, default=-20, help="smallest c = 2**i the search may try")
    p.add_argument("--c-max-exp", type=int, default=10, help="largest c = 2**i the search may try")


def register(subparsers: Any) -> None:
    """Add the `convex` subcommand (with fstar/grid/speedup) to an argparse subparsers object."""
    parser = subparsers.add_parser("convex", help="convex w8a experiment (logistic regression, SPEC section 6)")
    sub = parser.add_subparsers(dest="convex_command", required=True, metavar="{fstar,grid,speedup}",
                                parser_class=VocabParser)  # old spellings (old=...) whatever the caller's parser
    p = sub.add_parser("fstar", help="minimum of the objective by Newton's method (cached by sha256)")
    _common(p)
    p.add_argument("--refresh", action="store_true", help="solve again even if the cache has the value")
    p.set_defaults(func=_guard(_cmd_fstar))
    p = sub.add_parser("grid", help="time to target over H x B_loc at fixed K (Figure 7(a))")
    _experiment(p)
    p.add_argument("--K", type=_positive_int, default=16)
    p.add_argument("--H", type=_int_list, default=_int_list(_GRID_H))
    p.add_argument("--batch-size", old=("--B",), dest="B", type=_int_list, default=_int_list(_GRID_B),
                   help="local batches B_loc to try")
    p.set_defaults(func=_guard(_cmd_grid))
    p = sub.add_parser("speedup", help="speedup over K at fixed B_loc for each H (Figure 7(b))")
    _experiment(p)
    p.add_argument("--batch-size", old=("--B",), dest="B", type=_positive_int, default=16, help="local batch B_loc")
    p.add_argument("--H", type=_int_list, default=_int_list(_GRID_H))
    p.add_argument("--K", type=_int_list, default=_int_list(_SPEEDUP_K))
    p.add_argument("--k1-comm", action="store_true", help="charge the communication cost at K = 1 too")
    p.set_defaults(func=_guard(_cmd_speedup))


def _guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except BrokenPipeError:
            raise  # the reader of stdout left (e.g. `| head`); sim's main treats that as success
        except (ConvexError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    handler.__name__ = fn.__name__
    return handler


def _bar(total: int, desc: str, quiet: bool) -> Any:
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="cfg", file=sys.stderr, disable=quiet or not sys.stderr.isatty())


def _cmd_fstar(args: argparse.Namespace) -> int:
    from sim.convex.fstar import FSTAR_PAPER, fstar_cached
    from sim.convex.libsvm import load_libsvm
    from sim.convex.objective import LogisticObjective
    with _bar(2, "f*", args.quiet) as bar:
        data = load_libsvm(args.data, n_features=args.n_features)
        obj = LogisticObjective(data.X, data.y)
        bar.update(1)
        assert data.sha256 is not None
        res = fstar_cached(obj, sha256=data.sha256, cache_dir=args.cache_dir, refresh=args.refresh)
        bar.update(1)
    out = {"fstar_computed": res.fstar, "fstar_paper": FSTAR_PAPER, "difference": FSTAR_PAPER - res.fstar,
           "gap_bound": res.gap_bound, "grad_norm": res.grad_norm, "newton_iterations": res.iterations,
           "cached": res.cached, "n": obj.n, "d": obj.d, "lam": obj.lam, "sha256": data.sha256}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"data      {args.data}  (n={obj.n}, d={obj.d}, sha256 {data.sha256[:12]}...)")
        print(f"f* computed {res.fstar:.15f}  (Newton, {res.iterations} iterations, |grad| {res.grad_norm:.1e}, "
              f"certified gap <= {res.gap_bound:.1e}{', cached' if res.cached else ''})")
        print(f"f* paper    {FSTAR_PAPER:.15f}  (paper minus computed: {FSTAR_PAPER - res.fstar:.3e})")
    return 0


def _protocol_and_search(args: argparse.Namespace, k1_comm: bool = False) -> tuple[Any, Any]:
    from sim.convex.localsgd import Protocol
    from sim.convex.search import SearchSettings
    protocol = Protocol(epsilon=args.epsilon, unit_grad=args.grad_cost, unit_comm=args.comm_cost,
                        gamma_cap=args.gamma_cap, max_time=args.max_time, average=args.average,
                        seed=args.seeds[0] if args.seeds else args.seed, sampling=args.sampling,
                        k1_comm=k1_comm)
    schedules = tuple(s.strip() for s in args.schedules.split(",") if s.strip())
    return protocol, SearchSettings(c_min_exp=args.c_min_exp, c_max_exp=args.c_max_exp, schedules=schedules)


def _saver(out: str | None) -> Callable[[dict], None] | None:
    """Write each partial result to --out, so an interrupted run keeps what it measured."""
    if not out:
        return None
    from sim.convex.io import write_json_atomic
    return lambda doc: write_json_atomic(out, doc)


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _emit(args: argparse.Namespace, result: dict, lines: list[str]) -> None:
    from sim.convex.io import write_json_atomic
    if args.out:
        write_json_atomic(args.out, result)
    if args.json:
        print(json.dumps(result))
    else:
        print("\n".join(lines))
        if args.out:
            print(f"wrote {args.out}")


def _cmd_grid(args: argparse.Namespace) -> int:
    from sim.convex.experiment import load_problem, run_grid
    protocol, settings = _protocol_and_search(args)
    lp = load_problem(args.data, fstar=args.fstar, cache_dir=args.cache_dir, n_features=args.n_features)
    with _bar(len(args.H) * len(args.B), f"grid K={args.K}", args.quiet) as bar:
        res = run_grid(lp, protocol, K=args.K, H=args.H, B=args.B, settings=settings, seeds=args.seeds,
                       partial=_saver(args.out),
                       progress=lambda r: bar.update(1))
    lines = [f"K={args.K}  f*={lp.fstar_used:.15f} ({lp.fstar_source})  epsilon={protocol.epsilon}",
             f"{'H':>3} {'B_loc':>5} {'time':>10} {'relative':>8} {'schedule':>8} {'c':>10} {'iterate':>8}"]
    for c in res["configs"]:
        lines.append(f"{c['H']:>3} {c['B']:>5} {_fmt(c['time'], '.0f'):>10} {_fmt(c['relative'], '.3f'):>8} "
                     f"{c['schedule'] or '-':>8} {_fmt(c['c'], 'g'):>10} {c['iterate'] or '-':>8}")
    lines.append(f"wall {res['wall_seconds']:.1f} s")
    _emit(args, res, lines)
    return 0


def _cmd_speedup(args: argparse.Namespace) -> int:
    from sim.convex.experiment import load_problem, run_speedup
    protocol, settings = _protocol_and_search(args, k1_comm=args.k1_comm)
    lp = load_problem(args.data, fstar=args.fstar, cache_dir=args.cache_dir, n_features=args.n_features)
    Ks = sorted(set(args.K) | {1})
    with _bar(len(args.H) * len(Ks), f"speedup B={args.B}", args.quiet) as bar:
        res = run_speedup(lp, protocol, B=args.B, H=args.H, K=args.K, settings=settings, seeds=args.seeds,
                          partial=_saver(args.out),
                          progress=lambda r: bar.update(1))
    lines = [f"B_loc={args.B}  f*={lp.fstar_used:.15f} ({lp.fstar_source})  baseline: {res['baseline']}",
             f"{'H':>3} {'K':>4} {'time':>10} {'speedup':>8} {'schedule':>8} {'c':>10}"]
    for c in res["configs"]:
        lines.append(f"{c['H']:>3} {c['K']:>4} {_fmt(c['time'], '.0f'):>10} {_fmt(c['speedup'], '.2f'):>8} "
                     f"{c['schedule'] or '-':>8} {_fmt(c['c'], 'g'):>10}")
    lines.append(f"wall {res['wall_seconds']:.1f} s")
    _emit(args, res, lines)
    return 0
