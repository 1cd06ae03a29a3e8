"""The `python -m analysis` command line: one subcommand per figure family, plus the HTML run report."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: must precede any pyplot import anywhere in the process

from matplotlib.figure import Figure
from tqdm import tqdm

from analysis.errors import AnalysisError, InputError
from analysis.render import RenderConfig, parse_formats, save_figure
from atomicio import EXIT_OUTPUT, OutputError, check_output_dir, check_output_file

__all__ = ["build_parser", "main"]

log = logging.getLogger(__name__)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def _formats(text: str) -> tuple[str, ...]:
    try:
        return parse_formats(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cmd_comm(args: argparse.Namespace, cfg: RenderConfig) -> dict[str, Figure]:
    from analysis.commplot import bench_series, load_bench, plot_comm
    from analysis.costmodel import load_calibration
    cal = load_calibration(args.calibration, args.level) if args.calibration else None
    return plot_comm(bench_series(load_bench(args.bench)), cfg, cal, spread=args.spread)


def _cmd_cost(args: argparse.Namespace, cfg: RenderConfig) -> dict[str, Figure]:
    from analysis.costplot import plot_cost
    from analysis.simout import load_sim, select
    points = select(load_sim(args.sim), dedupe_local=False, topology=args.topology, algorithm=args.algorithm)
    return plot_cost(points, cfg, K=args.K, fixed_H=args.fixed_H, fixed_Hb=args.fixed_Hb)


def _cmd_wall(args: argparse.Namespace, cfg: RenderConfig) -> dict[str, Figure]:
    from analysis.simout import load_sim, select
    from analysis.wallplot import plot_wall
    points = select(load_sim(args.sim), K=args.K, algorithm=args.algorithm)
    marks = []
    for text in args.mark:
        h, _, m = text.partition(":")
        try:
            marks.append((float(h), float(m)))
        except ValueError:
            raise InputError(f"--mark must be H:MINUTES like 16:8.57, got {text!r}") from None
    return plot_wall(points, cfg, name=args.name, marks=marks)


def _cmd_speedup(args: argparse.Namespace, cfg: RenderConfig) -> dict[str, Figure]:
    from analysis.runs import load_runs
    from analysis.simout import load_sim, select
    from analysis.speedupplot import plot_speedup, plot_time_to_acc, run_speedup_lines, sim_speedup_lines
    if not args.sim and not args.runs:
        raise InputError("speedup needs --sim FILE... (sim whatif output) or --runs RUN_DIR..., got neither")
    out: dict[str, Figure] = {}
    if args.sim:
        points = select(load_sim(args.sim), topology=args.topology, algorithm=args.algorithm, Hb=args.Hb)
        out.update(plot_speedup(sim_speedup_lines(points), cfg, title="Simulated speedup over K"))
    if args.runs:
        runs = load_runs(args.runs)
        lines, ref, ref_K = run_speedup_lines(runs, use_tta=args.time == "tta")
        figs = plot_speedup(lines, cfg, reference=ref, ref_K=ref_K,
                            title="Measured speedup over K" + (" (time to accuracy)" if args.time == "tta" else ""))
        out["speedup_runs"] = figs["speedup"]  # fixed name: measured, whatever else is drawn
        if any(r.summary_num("tta_s") is not None for r in runs):
            out.update(plot_time_to_acc(runs, cfg))
    return out


def _cmd_convex(args: argparse.Namespace, cfg: RenderConfig) -> dict[str, Figure]:
    from analysis.convexplot import (
        convex_speedup_lines,
        grid_cells,
        load_convex_rows,
        plot_convex_grid,
        plot_convex_speedup,
    )
    if not args.grid and not args.speedup:
        raise InputError("convex needs --grid FILE (sim convex grid) or --speedup FILE, got neither")
    out: dict[str, Figure] = {}
    if args.grid:
        out.update(plot_convex_grid(grid_cells(load_convex_rows(args.grid)), cfg))
    if args.speedup:
        rows = load_convex_rows(args.speedup)
        lines, ref_K = convex_speedup_lines(rows)
        complete = all(r.get("complete", True) is not False for r in rows)
        out.update(plot_convex_speedup(lines, ref_K, cfg, complete=complete))
    return out


def _cmd_curves(args: argparse.Namespace, cfg: RenderConfig) -> dict[str, Figure]:
    from analysis.curvesplot import plot_breakdown, plot_curves
    from analysis.runs import load_runs
    runs = load_runs(args.run_dirs)
    return {**plot_curves(runs, cfg), **plot_breakdown(runs, cfg)}


def _cmd_predict(args: argparse.Namespace, cfg: RenderConfig) -> dict[str, Figure]:
    from analysis.predictplot import pairs_from_runs, pairs_from_table, plot_predict
    from analysis.runs import load_runs
    if not args.table and not args.runs:
        raise InputError("predict needs --table FILE.jsonl or --runs RUN_DIR..., got neither")
    pairs = pairs_from_table(args.table) if args.table else []
    if args.runs:
        pairs += pairs_from_runs(load_runs(args.runs))
    return plot_predict(pairs, cfg)


def _cmd_tta(args: argparse.Namespace, cfg: RenderConfig) -> dict[str, Figure]:
    from analysis.ttaplot import load_retimed, plot_tta
    return plot_tta(load_retimed(args.retimed), cfg, metric=args.metric, name=args.name)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out-dir", default="out/analysis", type=Path,
                        help="directory for the figures, named OUT_DIR/<figure>.<format> (default: %(default)s)")
    common.add_argument("--formats", default=("png", "svg"), type=_formats,
                        help="comma-separated output formats among png, svg, pdf (default: png,svg)")
    common.add_argument("--dpi", default=100, type=_positive_int,
                        help="PNG resolution; figures are 7 in wide, so 100 dpi gives 700 px (default: %(default)s)")
    common.add_argument("--json", action="store_true", help="print the written files as one JSON object")
    common.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")

    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")

    p = sub.add_parser("comm", parents=[common], help="all-reduce time and busbw against message size")
    p.add_argument("bench", nargs="+", metavar="BENCH.jsonl", help="`python -m comm bench --out` files")
    p.add_argument("--calibration", metavar="FILE", help="calibration/topology JSON: overlay the alpha-beta-gamma "
                   "model and the bandwidth bound")
    p.add_argument("--level", default="intra", help="which level of the calibration file (default: %(default)s)")
    p.add_argument("--spread", action="store_true", help="shade each line between its t_min_s and t_max_s")
    p.set_defaults(handler=_cmd_comm)

    p = sub.add_parser("cost", parents=[common], help="communication cost against H and H^b (sim vs eq. 6)")
    p.add_argument("sim", nargs="+", metavar="SIM.json[l]", help="`sim run --json` or `sim whatif --out` files")
    p.add_argument("--K", type=_positive_int, help="the K to draw (default: the largest simulated)")
    p.add_argument("--fixed-H", type=_positive_int, help="H held fixed in cost_Hb (default: smallest with 2+ Hb)")
    p.add_argument("--fixed-Hb", type=_positive_int, help="H^b held fixed in cost_H (default: 1)")
    p.add_argument("--topology", help="only this simulated topology (default: all)")
    p.add_argument("--algorithm", help="only this sync algorithm (default: all)")
    p.set_defaults(handler=_cmd_cost)

    p = sub.add_parser("wall", parents=[common], help="simulated wall time against H, one line per topology")
    p.add_argument("sim", nargs="+", metavar="SIM.json[l]", help="`sim run --json` or `sim whatif --out` files")
    p.add_argument("--K", type=_positive_int, help="only this K (default: all)")
    p.add_argument("--algorithm", help="only this sync algorithm (default: all)")
    p.add_argument("--mark", action="append", default=[], metavar="H:MIN", help="a measured point to draw (minutes)")
    p.add_argument("--name", default="wall_H", help="figure file stem (default: %(default)s)")
    p.set_defaults(handler=_cmd_wall)

    p = sub.add_parser("speedup", parents=[common], help="speedup against K per H; time-to-accuracy bars")
    p.add_argument("--sim", nargs="+", metavar="FILE", default=[], help="`sim whatif` JSONL files")
    p.add_argument("--runs", nargs="+", metavar="RUN_DIR", default=[], help="train run directories")
    p.add_argument("--topology", help="sim: only this topology (default: all)")
    p.add_argument("--algorithm", help="sim: only this sync algorithm (default: all)")
    p.add_argument("--Hb", type=_positive_int, default=1, help="sim: only this H^b (default: %(default)s)")
    p.add_argument("--time", choices=("total", "tta"), default="total",
                   help="runs: speedup in total wall time or in time to accuracy (default: %(default)s)")
    p.set_defaults(handler=_cmd_speedup)

    p = sub.add_parser("convex", parents=[common], help="Figure 7(a) heatmap and 7(b) speedup lines")
    p.add_argument("--grid", metavar="FILE", help="`sim convex grid --out` result")
    p.add_argument("--speedup", metavar="FILE", help="`sim convex speedup` result")
    p.set_defaults(handler=_cmd_convex)

    p = sub.add_parser("curves", parents=[common], help="training curves and time breakdown of runs")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.set_defaults(handler=_cmd_curves)

    p = sub.add_parser("predict", parents=[common], help="simulator-predicted against measured wall time")
    p.add_argument("--table", metavar="FILE.jsonl", help='rows {"name", "predicted_s", "measured_s"}')
    p.add_argument("--runs", nargs="+", metavar="RUN_DIR", default=[],
                   help="run directories whose summary.json has wall_s and predicted.wall_s")
    p.set_defaults(handler=_cmd_predict)

    p = sub.add_parser("tta", parents=[common], help="learning curves on a cluster's predicted clock (sim retime, "
                                                     "train tune)")
    p.add_argument("retimed", nargs="+", metavar="FILE.jsonl", help="`sim retime --out` or `train tune` JSONL files")
    p.add_argument("--metric", default="auto", help="acc, gap (objective - f*) or loss (default: gap when every "
                   "run's target is on the objective, else acc)")
    p.add_argument("--name", default="tta", help="figure file stem (default: %(default)s)")
    p.set_defaults(handler=_cmd_tta)

    p = sub.add_parser("report", parents=[common], help="one self-contained HTML page for a run")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", metavar="FILE.html", help="where to write it (default: RUN_DIR/report.html)")
    p.set_defaults(handler=None)
    return parser


def _check_outputs(args: argparse.Namespace) -> None:
    """Before any work: the output location must be writable with some free space (one line naming it, exit 2)."""
    try:
        if args.command == "report":
            check_output_file(args.out or Path(args.run_dir) / "report.html", what="report")
        else:
            check_output_dir(args.out_dir, what="--out-dir")
    except OutputError as exc:
        raise InputError(str(exc)) from None


def _run(args: argparse.Namespace) -> dict:
    cfg = RenderConfig(formats=args.formats, dpi=args.dpi)
    _check_outputs(args)
    if args.command == "report":
        from analysis.report import write_report
        path, stems = write_report(args.run_dir, args.out, cfg)
        return {"command": "report", "outputs": [str(path)], "figures": stems}
    figures = args.handler(args, cfg)
    written: dict[str, list[str]] = {}
    bar = tqdm(figures.items(), desc=args.command, unit="fig", file=sys.stderr,
               disable=args.quiet or not sys.stderr.isatty())
    for stem, fig in bar:
        written[stem] = [str(p) for p in save_figure(fig, args.out_dir, stem, cfg)]
    return {"command": args.command, "outputs": [p for ps in written.values() for p in ps],
            "figures": written}


def _missing_dirs(path: Path) -> list[Path]:
    """`path` and its parents that do not exist yet, deepest first (the folders this command may create)."""
    out = []
    while not path.exists() and path != path.parent:
        out.append(path)
        path = path.parent
    return out


def _remove_empty_dirs(dirs: list[Path]) -> None:
    """Remove the folders this command created (deepest first) while they are empty."""
    for d in dirs:
        try:
            d.rmdir()
        except OSError:
            return


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s: %(message)s", stream=sys.stderr)
    new_dirs = [] if args.command == "report" else _missing_dirs(Path(args.out_dir))
    try:
        result = _run(args)
    except OutputError as exc:  # a write failed during the work: its temp file is gone, no folder is left empty
        _remove_empty_dirs(new_dirs)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_OUTPUT
    except (AnalysisError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            for path in result["outputs"]:
                print(path)
        sys.stdout.flush()
    except BrokenPipeError:  # `... | head`: the reader left; the files are written, so not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
