"""Compute model: seconds per training iteration as a function of model and batch size (SPEC section 3)."""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any

from sim.errors import SimError

__all__ = ["ModelSpec", "MODELS", "MODEL_ALIASES", "ComputeModel", "get_model", "BYTES_PER_PARAM"]

#: float32 parameters on the wire.
BYTES_PER_PARAM = 4


def _finite(name: str, v: object, minimum: float = 0.0, strict: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
            or v < minimum or (strict and v == minimum):
        op = ">" if strict else ">="
        raise SimError(f"{name} must be a finite number {op} {minimum:g}, got {v!r}")
    return float(v)


@dataclass(kw_only=True, frozen=True)
class ModelSpec:
    """A model from SPEC section 3: parameter count, forward GFLOPs per sample, training-set size."""

    name: str
    params: int
    gflops_per_sample: float
    train_samples: int

    def __post_init__(self) -> None:
        for name in ("params", "train_samples"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise SimError(f"model {name} must be an integer >= 1, got {v!r}")
        _finite("model gflops_per_sample", self.gflops_per_sample, 0.0, strict=True)

    @property
    def bytes(self) -> int:
        """Bytes of one full-model all-reduce (float32)."""
        return self.params * BYTES_PER_PARAM


MODELS: dict[str, ModelSpec] = {m.name: m for m in (
    ModelSpec(name="resnet20", params=270_000, gflops_per_sample=0.041, train_samples=50_000),
    ModelSpec(name="densenet40-12", params=1_060_000, gflops_per_sample=0.28, train_samples=50_000),
    ModelSpec(name="wrn28-10", params=36_480_000, gflops_per_sample=5.24, train_samples=50_000),
    ModelSpec(name="resnet50", params=25_000_000, gflops_per_sample=7.7, train_samples=1_281_167),
)}


#: The trainer's spellings of the same models (`python -m train --model`).
MODEL_ALIASES = {"wideresnet28-10": "wrn28-10"}


def get_model(name: str) -> ModelSpec:
    """The ModelSpec called `name` (or the trainer's name for it), or a one-line error listing the valid names."""
    try:
        return MODELS[MODEL_ALIASES.get(name, name)]
    except KeyError:
        raise SimError(f"model must be one of {', '.join(MODELS)}, got {name!r}") from None


KINDS = ("table", "flops", "fixed")


@dataclass(kw_only=True, frozen=True)
class ComputeModel:
    """Seconds per iteration of forward + backward on one device.

    kind "table": a measured table for `reference_model` (seconds_per_iter at each batch), linearly
    interpolated in the batch and linearly extrapolated from the end segments; other models are scaled
    by their GFLOPs per sample relative to the reference model (an assumption, stated in the README).
    kind "flops": overhead_s + 3 * GFLOPs/sample * B / (tflops * 1e3 * efficiency) (backward = 2 x forward).
    kind "fixed": seconds_per_iter[0] for every batch (tests and paper mode use 0).
    """

    kind: str
    device: str = "unnamed"
    reference_model: str = "resnet20"
    batch: tuple[int, ...] = ()
    seconds_per_iter: tuple[float, ...] = ()
    tflops: float = 0.0
    efficiency: float = 1.0
    overhead_s: float = 0.0
    _cache: dict = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SimError(f"compute kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        object.__setattr__(self, "batch", tuple(self.batch))
        object.__setattr__(self, "seconds_per_iter", tuple(self.seconds_per_iter))
        if self.kind == "table":
            get_model(self.reference_model)
            if len(self.batch) < 2 or len(self.batch) != len(self.seconds_per_iter):
                raise SimError(f"compute table needs >= 2 batch sizes and as many seconds_per_iter, got "
                               f"{len(self.batch)} batch sizes and {len(self.seconds_per_iter)} times")
            for b in self.batch:
                if isinstance(b, bool) or not isinstance(b, int) or b < 1:
                    raise SimError(f"compute table batch sizes must be integers >= 1, got {b!r}")
            if list(self.batch) != sorted(set(self.batch)):
                raise SimError(f"compute table batch sizes must be strictly increasing, got {list(self.batch)}")
            for s in self.seconds_per_iter:
                _finite("compute table seconds_per_iter", s, 0.0, strict=True)
        elif self.kind == "flops":
            _finite("tflops", self.tflops, 0.0, strict=True)
            _finite("efficiency", self.efficiency, 0.0, strict=True)
            _finite("overhead_s", self.overhead_s)
        else:
            if len(self.seconds_per_iter) != 1:
                raise SimError(f"compute kind 'fixed' needs exactly one seconds_per_iter, got "
                               f"{list(self.seconds_per_iter)}")
            _finite("seconds_per_iter", self.seconds_per_iter[0])

    def seconds(self, model: ModelSpec, batch: int) -> float:
        """Seconds of one forward + backward iteration of `model` at local batch `batch`."""
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise SimError(f"batch must be an integer >= 1, got {batch!r}")
        if self.kind == "fixed":
            return self.seconds_per_iter[0]
        if self.kind == "flops":
            return self.overhead_s + 3.0 * model.gflops_per_sample * batch / (self.tflops * 1e3 * self.efficiency)
        xs, ys = self.batch, self.seconds_per_iter
        i = min(max(bisect.bisect_left(xs, batch), 1), len(xs) - 1)
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        t = y0 + (y1 - y0) * (batch - x0) / (x1 - x0)
        if t <= 0:  # a steep table extrapolated far below its first batch: scale proportionally instead
            t = ys[0] * batch / xs[0]
        return t * model.gflops_per_sample / get_model(self.reference_model).gflops_per_sample

    def provenance(self, model: ModelSpec) -> tuple[str, str]:
        """(source, note) of seconds(model, ...): "table" (the table's own model), "extrapolated" (another
        model, scaled by GFLOPs per sample from the table's), "flops-model" (peak TFLOPs x efficiency) or "fixed"."""
        if self.kind == "table":
            if model.name == self.reference_model:
                return "table", f"{self.device} table of {model.name}"
            ratio = model.gflops_per_sample / get_model(self.reference_model).gflops_per_sample
            return "extrapolated", (f"EXTRAPOLATED by FLOPs from {self.reference_model} on {self.device} "
                                    f"(x{ratio:.3g} GFLOPs/sample): an estimate, not a measurement of {model.name}")
        if self.kind == "flops":
            return "flops-model", (f"FLOPs model: {self.tflops:g} TFLOP/s x efficiency {self.efficiency:g} on "
                                   f"{self.device}, not a measurement")
        return "fixed", f"fixed seconds per step on {self.device}"

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored under "compute" in a topology file."""
        if self.kind == "table":
            return {"kind": "table", "device": self.device, "reference_model": self.reference_model,
                    "batch": list(self.batch), "seconds_per_iter": list(self.seconds_per_iter)}
        if self.kind == "flops":
            return {"kind": "flops", "device": self.device, "tflops": self.tflops,
                    "efficiency": self.efficiency, "overhead_s": self.overhead_s}
        return {"kind": "fixed", "device": self.device, "seconds_per_iter": list(self.seconds_per_iter)}

    @classmethod
    def from_json(cls, obj: object, where: str = "compute") -> ComputeModel:
        """Build from the JSON object of a topology file; unknown keys are an error."""
        if not isinstance(obj, dict):
            raise SimError(f"{where} must be a JSON object, got {type(obj).__name__}")
        allowed = {"kind", "device", "reference_model", "batch", "seconds_per_iter", "tflops",
                   "efficiency", "overhead_s"}
        extra = sorted(set(obj) - allowed)
        if extra:
            raise SimError(f"unknown key {extra[0]!r} in {where}; valid keys: {', '.join(sorted(allowed))}")
        if "kind" not in obj:
            raise SimError(f"{where}: missing key 'kind' (one of {', '.join(KINDS)})")
        return cls(**obj)
