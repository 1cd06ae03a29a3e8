"""The tuner's ranked table: one row per finalist (time to target over seeds and what it took), and its text."""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from train.tunehalving import SeedResult

__all__ = ["result_rows", "format_table"]


def _median(vals: list[float]) -> float | None:
    return statistics.median(vals) if vals else None


def result_rows(ranked: Sequence[SeedResult], seeds: dict[str, list[dict[str, Any]]], cands: dict[str, Any],
                engine: str, metric: str) -> list[dict[str, Any]]:
    """The ranked rows: predicted time to target (median over seeds, min, max), steps, syncs and bytes to the
    target and the final metric (medians over the seeds that reached it / ran), the engine, the run's flags."""
    rows = []
    for i, r in enumerate(ranked, 1):
        runs = seeds[r.cid]
        hit = [rt["target"] for rt in runs if rt["target"]["reached"]]
        fin_key = "test_acc" if metric == "test_acc" else "objective_gap"
        finals = [rt["final"].get(fin_key) for rt in runs if rt["final"].get(fin_key) is not None]
        c = cands[r.cid]
        lo_hi = r.spread
        rows.append({
            "rank": i, "cid": r.cid, "label": c.label, "axes": c.axes, "engine": runs[0].get("engine") or engine,
            "seeds": len(runs), "seeds_reached": len(hit),
            "tta_median_s": None if math.isinf(r.median_s) else r.median_s,
            "tta_min_s": lo_hi[0] if lo_hi else None, "tta_max_s": lo_hi[1] if lo_hi else None,
            "tta_s": r.tta_s, "steps": _median([t["steps"] for t in hit]),
            "syncs_global": _median([t["syncs_global"] for t in hit]),
            "syncs_block": _median([t["syncs_block"] for t in hit]),
            "bytes_sent": _median([t["bytes_sent"] for t in hit]),
            "final": _median(finals), "final_metric": fin_key,
            "final_epochs": _median([rt["final"].get("epoch") or 0.0 for rt in runs]),
            "predicted_wall_s": _median([rt["predicted_wall_s"] for rt in runs]),
            "flags": c.flags})
    return rows


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def _bytes(v: float | None) -> str:
    if v is None:
        return "-"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if v >= size:
            return f"{v / size:.3g} {unit}"
    return f"{v:.0f} B"


def format_table(result: dict[str, Any], cands: dict[str, Any], figure: str | None) -> str:
    """The human report: ranked finalists, candidates that reached the target but were not finalists, those
    stopped early (with the reason), the pick and how to run it."""
    tg = result["target"]
    what = f"test acc >= {tg['value']:g}" if tg["metric"] == "test_acc" else f"f - f* <= {tg['value']:g}"
    lines = [f"tune on {result['cluster']}: {what}; rungs at {', '.join(f'{e:g}' for e in result['rungs'])} epochs; "
             f"{result['run_s']:.0f} s of runs here" + (" (budget spent)" if result["budget_spent"] else "")]
    head = ("rank", "candidate", "engine", "time to target (s)", "seeds", "steps", "syncs g+b", "bytes/worker",
            "final")
    body = []
    for r in result["ranked"]:
        tt = "not reached" if r["tta_median_s"] is None else \
            f"{_s(r['tta_median_s'])} [{_s(r['tta_min_s'])}-{_s(r['tta_max_s'])}]"
        fin = "-" if r["final"] is None else (f"{100 * r['final']:.2f} %" if r["final_metric"] == "test_acc"
                                              else f"gap {r['final']:.3g}")
        syncs = "-" if r["syncs_global"] is None else f"{r['syncs_global']:g}+{r['syncs_block']:g}"
        body.append((str(r["rank"]), f"{r['cid']} {r['label']}", r["engine"], tt,
                     f"{r['seeds_reached']}/{r['seeds']}", _s(r["steps"]), syncs, _bytes(r["bytes_sent"]), fin))
    if body:
        widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
        for row in [head, *body]:
            lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    else:
        lines.append("no candidate reached the target")
    if result["finished_not_final"]:
        lines.append("reached the target, not a finalist (seed 0): " + ", ".join(
            f"{cid} {cands[cid].label} {t:.4g} s" for cid, t in sorted(result["finished_not_final"].items(),
                                                                       key=lambda x: x[1])))
    if result["stopped"]:
        lines.append("stopped early:")
        lines += [f"  {s['cid']} {s['label']} (rung {s['rung']}): {s['reason']}" for s in result["stopped"]]
    if result["ranked"] and result["ranked"][0]["tta_median_s"] is not None:
        top = result["ranked"][0]
        lines.append(f"pick: {top['cid']} {top['label']}; run it with: mpirun -n {top['axes']['K']} python -m train "
                     + " ".join(top["flags"]))
    lines.append(f"log {result['out']}/tune.jsonl, curves {result['out']}/curves.jsonl"
                 + (f", figure {figure}" if figure else ""))
    return "\n".join(lines)
