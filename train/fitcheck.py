"""Does a machine file's fit explain its own measurements? The rule `train calibrate` and `--predict` apply."""
from __future__ import annotations

from typing import Any

__all__ = ["RULE", "STEP_R2_MIN", "STEP_RESIDUAL_MAX", "SYNC_RESIDUAL_MAX", "LINK_R2_MIN", "assess",
           "quality_warning"]

#: The step fit (t_K = u max(cores, K + L_K)) carries most of every prediction: it must explain the probes' measured
#: step times with R^2 >= 0.8 and no probe off by more than 25 %.
STEP_R2_MIN = 0.8
STEP_RESIDUAL_MAX = 0.25
#: The sync probes' fit (message rounds x (alpha s + scheduling wait)): no probe off by more than a factor 1.5.
SYNC_RESIDUAL_MAX = 0.5
#: The 2-rank link fit (alpha, beta, gamma over the bench's sizes).
LINK_R2_MIN = 0.5
RULE = (f"step fit R^2 >= {STEP_R2_MIN:g} and every probe within {100 * STEP_RESIDUAL_MAX:g} %, sync probes within "
        f"{100 * SYNC_RESIDUAL_MAX:g} %, link fit R^2 >= {LINK_R2_MIN:g}")


def _r2(measured: list[float], fitted: list[float]) -> float | None:
    if len(measured) < 2:
        return None
    mean = sum(measured) / len(measured)
    total = sum((m - mean) ** 2 for m in measured)
    resid = sum((m - f) ** 2 for m, f in zip(measured, fitted))
    return 1.0 - resid / total if total > 0 else (1.0 if resid == 0 else float("-inf"))


def _worst(measured: list[float], fitted: list[float]) -> tuple[float, int]:
    """The largest |fitted - measured| / measured and its index (0.0, -1 when there is nothing to compare)."""
    rel = [abs(f - m) / m for m, f in zip(measured, fitted) if m > 0]
    if not rel:
        return 0.0, -1
    i = max(range(len(rel)), key=rel.__getitem__)
    return rel[i], i


def assess(machine: dict[str, Any]) -> dict[str, Any]:
    """{"ok", "rule", "step_r2", "step_worst_residual", "sync_worst_residual", "link_r2", "problems": [lines]}."""
    probes, syncs = machine.get("probes") or [], machine.get("sync_probes") or []
    t = [float(p["seconds_per_step"]) for p in probes]
    f = [float(p["fit_s"]) for p in probes]
    step_r2 = _r2(t, f)
    step_worst, i = _worst(t, f)
    sync_worst, j = _worst([float(p["seconds_per_sync"]) for p in syncs], [float(p["fit_s"]) for p in syncs])
    link_r2 = (machine.get("fit") or {}).get("r2")
    problems = []
    if step_r2 is not None and step_r2 < STEP_R2_MIN:
        problems.append(f"the step fit explains the probes' step times with R^2 {step_r2:.3f} (needs >= "
                        f"{STEP_R2_MIN:g})")
    if step_worst > STEP_RESIDUAL_MAX:
        p = probes[i]
        problems.append(f"on {p['ranks']} rank(s) the step fit says {1e3 * float(p['fit_s']):.3g} ms, "
                        f"{1e3 * float(p['seconds_per_step']):.3g} ms was measured ({100 * step_worst:.0f} % off, "
                        f"allowed {100 * STEP_RESIDUAL_MAX:g} %)")
    if sync_worst > SYNC_RESIDUAL_MAX:
        p = syncs[j]
        problems.append(f"on {p['ranks']} ranks the sync fit says {1e3 * float(p['fit_s']):.3g} ms, "
                        f"{1e3 * float(p['seconds_per_sync']):.3g} ms was measured ({100 * sync_worst:.0f} % off)")
    if isinstance(link_r2, (int, float)) and link_r2 < LINK_R2_MIN:
        problems.append(f"the 2-rank link fit has R^2 {link_r2:.3f} (needs >= {LINK_R2_MIN:g})")
    return {"ok": not problems, "rule": RULE, "step_r2": step_r2, "step_worst_residual": step_worst,
            "sync_worst_residual": sync_worst, "link_r2": link_r2, "problems": problems}


def quality_warning(machine: dict[str, Any], spec: str) -> str | None:
    """One line for --predict when the machine file's fit failed the rule (None when it passed or predates it)."""
    q = machine.get("quality")
    if not isinstance(q, dict) or q.get("ok", True):
        return None
    first = (q.get("problems") or ["its fit failed the rule"])[0]
    return (f"machine file {spec!r} does not explain its own measurements ({first}): predictions from it are "
            f"unreliable; recalibrate on a quieter machine")
