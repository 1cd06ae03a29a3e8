"""Step time from a model's layers on a device (roofline per layer, launches, per-sample and per-step costs), fitted."""
# One training step of batch B (forward, backward, optimizer) on a device of peak P FLOP/s and memory bandwidth W B/s:
#     t(B) = step_s + sample_s B + launch_s n_launch + 3 sum_l max(2 MACs_l B / P, (act_l B + 4 params_l) / W)
#            + 24 params / W
# Per layer the forward is bound by arithmetic or by the bytes it moves (activations for B samples, its weights
# once); the backward does twice the forward's work (input and weight gradients, or twice the bytes). n_launch counts
# one kernel per forward op, two per backward of a convolution or linear layer and one per other op, and five per
# parameter tensor for zero_grad and SGD with momentum and weight decay (which also moves 24 bytes per parameter).
# sample_s is per-sample work outside the device (the data pipeline), step_s a fixed cost per step.
# The constants are fitted to measured (model, batch, seconds) points by least squares on relative residuals: for
# given (P, W) the model is linear in (step_s, sample_s, launch_s), solved by NNLS; (P, W) by a log grid refined by
# Nelder-Mead. With a device's spec (peak and bandwidth) only their common efficiency is fitted, keeping the ratio.
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim.errors import SimError
from sim.layers import LayerTable

__all__ = ["DeviceConstants", "StepPoint", "DeviceFit", "step_seconds", "features", "fit_device", "LINEAR_TERMS"]

#: The constants the fit solves linearly, in the order of `features`' linear columns.
LINEAR_TERMS = ("step_s", "sample_s", "launch_s")
#: SGD with momentum and weight decay: zero_grad and about four kernels per parameter tensor; bytes per parameter.
_OPT_LAUNCHES, _OPT_BYTES = 5, 24


@dataclass(frozen=True, kw_only=True)
class DeviceConstants:
    """Effective peak FLOP/s, memory bytes/s, seconds per kernel launch, per sample, per step."""

    peak_flops: float
    mem_bps: float
    launch_s: float = 0.0
    sample_s: float = 0.0
    step_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("peak_flops", "mem_bps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise SimError(f"device {name} must be a finite number > 0, got {v!r}")
        for name in LINEAR_TERMS:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise SimError(f"device {name} must be a finite number >= 0, got {v!r}")

    def scaled(self, k: float) -> DeviceConstants:
        """Every time k times as long (rates divided by k)."""
        return DeviceConstants(peak_flops=self.peak_flops / k, mem_bps=self.mem_bps / k, launch_s=self.launch_s * k,
                               sample_s=self.sample_s * k, step_s=self.step_s * k)


def _launches(table: LayerTable) -> int:
    back = sum(2 if lay.kind in ("conv", "fc") else 1 for lay in table.layers)
    return len(table.layers) + back + _OPT_LAUNCHES * table.tensors


def features(table: LayerTable, batch: int) -> tuple[tuple[float, float, float], np.ndarray, np.ndarray]:
    """(linear columns (1, B, n_launch), per-layer FLOPs, per-layer bytes) of one step at `batch`; the optimizer's
    bytes are the last entry of the bytes with zero FLOPs."""
    flops = np.array([2.0 * lay.macs * batch for lay in table.layers] + [0.0])
    moved = np.array([lay.act_bytes * batch + 4.0 * lay.params for lay in table.layers]
                     + [_OPT_BYTES * table.params / 3.0])  # / 3: the roofline sum below is taken three times
    return (1.0, float(batch), float(_launches(table))), flops, moved


def _roof(flops: np.ndarray, moved: np.ndarray, peak: float, bw: float) -> float:
    return 3.0 * float(np.maximum(flops / peak, moved / bw).sum())


def step_seconds(table: LayerTable, batch: int, dev: DeviceConstants) -> float:
    """Modelled seconds of one training step of `table` at `batch` on `dev`."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise SimError(f"batch must be an integer >= 1, got {batch!r}")
    lin, flops, moved = features(table, batch)
    return (dev.step_s * lin[0] + dev.sample_s * lin[1] + dev.launch_s * lin[2]
            + _roof(flops, moved, dev.peak_flops, dev.mem_bps))


@dataclass(frozen=True)
class StepPoint:
    """A measured step: the model's layer table, the batch and the seconds per step."""

    table: LayerTable
    batch: int
    seconds: float


@dataclass(kw_only=True)
class DeviceFit:
    """Fitted constants with each point's fitted time and relative residual."""

    constants: DeviceConstants
    rows: list[dict[str, Any]]
    free: tuple[str, ...]
    notes: list[str] = field(default_factory=list)

    @property
    def median_abs_error(self) -> float:
        return float(np.median([abs(r["rel_error"]) for r in self.rows]))


def _solve(points: Sequence[StepPoint], feats: list[Any], peak: float, bw: float, cols: list[int]
           ) -> tuple[float, np.ndarray]:
    """Relative squared residual and the linear coefficients (zero outside cols) for given peak and bandwidth."""
    from scipy.optimize import nnls
    t = np.array([p.seconds for p in points])
    roof = np.array([_roof(f, m, peak, bw) for _, f, m in feats])
    A = np.array([lin for lin, _, _ in feats])
    coef = np.zeros(3)
    if cols:
        c, _ = nnls(A[:, cols] / t[:, None], 1.0 - roof / t)
        coef[cols] = c
    pred = A @ coef + roof
    return float((((pred - t) / t) ** 2).sum()), coef


def fit_device(points: Sequence[StepPoint], *, spec: tuple[float, float] | None = None,
               fixed: dict[str, float] | None = None, rates: tuple[float, float] | None = None) -> DeviceFit:
    """Fit DeviceConstants to measured points.

    spec (peak FLOP/s, bandwidth B/s): fit one efficiency that scales both (their ratio is the device's); else both
    are free. rates (peak FLOP/s, bandwidth B/s): both held (e.g. another device's efficiency on this one's spec).
    fixed: values held for any of step_s, sample_s, launch_s (the rest are fitted, >= 0).
    """
    from scipy.optimize import minimize

    if not points:
        raise SimError("the device fit needs at least one measured step")
    for p in points:
        if not (math.isfinite(p.seconds) and p.seconds > 0):
            raise SimError(f"measured step seconds must be > 0, got {p.seconds!r} for {p.table.model} B={p.batch}")
    fixed = dict(fixed or {})
    for k in fixed:
        if k not in LINEAR_TERMS:
            raise SimError(f"fixed constants must be among {', '.join(LINEAR_TERMS)}, got {k!r}")
    cols = [i for i, k in enumerate(LINEAR_TERMS) if k not in fixed]
    feats = [features(p.table, p.batch) for p in points]
    held = np.array([fixed.get(k, 0.0) for k in LINEAR_TERMS])
    pts = [StepPoint(p.table, p.batch, p.seconds - float(np.dot(held, lin)))
           for p, (lin, _, _) in zip(points, feats)]
    if any(p.seconds <= 0 for p in pts):
        raise SimError("the held constants alone exceed a measured step time")
    t_med = float(np.median([p.seconds for p in points]))
    # a scale: FLOP/s and bytes/s at which the points' largest layer alone would take the median step
    f_max = max(float(f.sum()) for _, f, _ in feats) * 3 / t_med
    m_max = max(float(m.sum()) for _, _, m in feats) * 3 / t_med

    def loss(x: np.ndarray) -> float:
        peak, bw = (spec[0] * math.exp(x[0]), spec[1] * math.exp(x[0])) if spec else \
            (f_max * math.exp(x[0]), m_max * math.exp(x[1]))
        return _solve(pts, feats, peak, bw, cols)[0]

    if rates:
        spec = rates
        grid = [np.zeros(1)]
    elif spec:
        grid = [np.array([g]) for g in np.linspace(math.log(1e-5), 0.0, 241)]
    else:
        axis = np.linspace(math.log(1e-2), math.log(1e4), 61)
        grid = [np.array([a, b]) for a in axis for b in axis]
    best = min(grid, key=loss)
    x = best
    if not rates:
        res = minimize(loss, best, method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-14, "maxiter": 4000})
        x = res.x if res.fun <= loss(best) else best
    peak, bw = (spec[0] * math.exp(x[0]), spec[1] * math.exp(x[0])) if spec else \
        (f_max * math.exp(x[0]), m_max * math.exp(x[1]))
    _, coef = _solve(pts, feats, peak, bw, cols)
    vals = {k: (float(coef[i]) if i in cols else fixed[k]) for i, k in enumerate(LINEAR_TERMS)}
    dev = DeviceConstants(peak_flops=peak, mem_bps=bw, **vals)
    rows = []
    for p in points:
        fit_s = step_seconds(p.table, p.batch, dev)
        rows.append({"model": p.table.model, "batch": p.batch, "seconds": p.seconds, "fit_s": fit_s,
                     "rel_error": fit_s / p.seconds - 1.0})
    rate_terms = () if rates else ("efficiency",) if spec else ("peak_flops", "mem_bps")
    free = rate_terms + tuple(LINEAR_TERMS[i] for i in cols)
    notes = [f"held: {', '.join(f'{k} = {v:g}' for k, v in fixed.items())}"] if fixed else []
    return DeviceFit(constants=dev, rows=rows, free=free, notes=notes)
