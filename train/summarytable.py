"""The human summary table that rank 0 prints at the end of a run (from summary.json's content)."""
from __future__ import annotations

from typing import Any

from train.launch import resume_command

__all__ = ["format_summary"]


def _fmt_s(v: Any) -> str:
    return "-" if v is None else f"{v:.2f} s"


def format_summary(s: dict[str, Any]) -> str:
    """The human summary table printed by rank 0 at the end of a run."""
    fin, mean, tt = s["final"], s["totals_mean"], s["time_to_target"]
    acc = "-" if fin.get("test_acc") is None else f"{100 * fin['test_acc']:.2f} %"
    best = "-" if s["best_test_acc"] is None else f"{100 * s['best_test_acc']:.2f} %"
    rows = [
        ("run", f"{s['algorithm']} | {s['model']} on {s['dataset']} | K={s['world_size']}"
                + (" (virtual)" if s.get("engine") == "virtual" else "") + f" | {s['status']}"
                + (f" by {s['signal']}" if s.get("signal") else "")),
        ("steps", f"{s['steps_done']} / {s['total_steps']} per worker ({s['epochs_done']:.2f} epochs)"),
        ("wall time", f"{s['wall_s']:.2f} s ({s['samples_per_s'] or 0:.0f} samples/s)"
                      + ("" if s.get("startup_s") is None else f" after {s['startup_s']:.2f} s of start-up")),
        ("test acc (final/best)", f"{acc} / {best}   test loss {fin.get('test_loss') or float('nan'):.4f}"),
        ("train loss (last epoch)", f"{fin.get('train_loss') or float('nan'):.4f}"),
        ("compute (mean/rank)", _fmt_s(mean.get("compute_s"))),
        ("comm global / block", f"{_fmt_s(mean.get('comm_s_global'))} / {_fmt_s(mean.get('comm_s_block'))}"),
        ("waiting global / block", f"{_fmt_s(mean.get('wait_s_global'))} / {_fmt_s(mean.get('wait_s_block'))}"),
    ]
    if s.get("engine") == "virtual":  # one process: no communication, its compute is all K workers'
        rows[-3:] = [("compute (all workers)", _fmt_s(mean.get("compute_s"))),
                     ("comm / waiting", "not applicable (engine virtual: syncs are means in memory)")]
    rows += [
        ("syncs global / block", (f"{s['syncs']['global']} / {s['syncs']['block']} "
                                  f"(schedule: {s['expected_syncs']['global']} / {s['expected_syncs']['block']})")),
        ("bytes per sync", f"{s['payload_bytes']:,}"),
    ]
    mem = s.get("memory") or {}
    if mem.get("peak_rss_bytes_sum"):
        from train.memory import fmt_bytes
        n = s.get("processes") or 1
        est, est_n = mem.get("estimate_bytes"), mem.get("estimate_processes") or n
        # the guard checks one machine: its ranks there (all of them on one machine, fewer across nodes)
        of = "" if est_n == n else f" for the {est_n} ranks of one machine"
        rows.append(("peak memory", f"{fmt_bytes(mem['peak_rss_bytes_sum'])}"
                                    + (f" (sum over {n} ranks)" if n > 1 else "")
                                    + ("" if est is None else f" (the guard estimated {fmt_bytes(est)}{of})")))
    comp = s.get("compression") or {}
    if comp.get("scheme", "none") != "none":
        sent = comp["bytes_sent"]["global"] + comp["bytes_sent"]["block"]
        full, small = comp["uncompressed_bytes"], comp["payload_bytes"]
        rows.append(("compression", (f"{comp['scheme']}: {small:,} B per sync instead of {full:,} "
                                     f"(1/{full / small:.2f}); {sent:,} B sent by rank 0")))
    if s["target_acc"] is not None:
        rows.append((f"time to {100 * s['target_acc']:.1f} %",
                     "not reached" if tt is None else f"{tt['wall_s']:.2f} s (epoch {tt['epoch']:.2f})"))
    if s.get("target_loss") is not None:
        tl, fs = s.get("time_to_target_loss"), s.get("fstar") or {}
        rows.append((f"time to f - f* <= {s['target_loss']:g}",
                     ("not reached" if tl is None else f"{tl['wall_s']:.2f} s (epoch {tl['epoch']:.2f})")
                     + (f"   f* {fs['value']:.15g} ({fs['source']})" if fs else "")))
    pred = s.get("prediction")
    if isinstance(pred, dict) and pred.get("wall_s") and s.get("engine") == "virtual":  # not this run's clock
        rows.append(("prediction", (f"{pred['wall_s']:.2f} s for this run on {s['world_size']} MPI ranks there "
                                    f"(engine virtual measures no ranks to compare with)")))
    elif isinstance(pred, dict) and pred.get("wall_s") and s["status"] == "completed" and s["wall_s"] > 0:
        err = 100 * (pred["wall_s"] - s["wall_s"]) / s["wall_s"]
        rows.append(("prediction", (f"predicted {pred['wall_s']:.2f} s, measured {s['wall_s']:.2f} s "
                                   f"(error {err:+.1f} %)")))
    rows.append(("run folder", s["run_dir"]))
    if s["status"] in ("paused", "interrupted"):
        rows.append(("continue with", resume_command(s["run_dir"], s["world_size"], s.get("engine", "mpi"))))
    else:
        rows.append(("next", f"python -m analysis report {s['run_dir']}   (curves, timings, an HTML page)"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
