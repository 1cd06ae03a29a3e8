"""Compute model: seconds per training iteration as a function of model and batch size (SPEC section 3)."""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any

from sim.errors import SimError

__all__ = ["ModelSpec", "MODELS", "MODEL_ALIASES", "ComputeModel", "get_model", "BYTES_PER_PARAM", "KINDS",
           "COMPUTE_SOURCES"]

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
    """The ModelSpec called `name` (or the trainer's name for it); other members of the trainer's image families
    (resnetD, densenetD-K, wideresnetD-K) get their parameters and MACs from their layer table (CIFAR-10)."""
    key = MODEL_ALIASES.get(name, name)
    if key in MODELS:
        return MODELS[key]
    from sim.layers import layer_table
    try:
        table = layer_table(name)
    except SimError:
        raise SimError(f"model must be one of {', '.join(MODELS)} or another of the trainer's image models "
                       f"(resnetD with D = 6n+2, densenetD-K, wideresnetD-K), got {name!r}") from None
    return ModelSpec(name=table.model, params=table.params, gflops_per_sample=table.macs / 1e9,
                     train_samples=1_281_167 if table.input_shape[1] > 64 else 50_000)


KINDS = ("table", "flops", "fixed", "layers")
#: Where a step time comes from (`provenance`): a measurement at that batch, a measured model between or beyond its
#: measured batches, the layer model, a measured model scaled by FLOPs, the FLOPs model, or a fixed figure.
COMPUTE_SOURCES = ("measured", "measured-interpolated", "layer-model", "extrapolated", "flops-model", "fixed",
                   "table")


def _interp(xs: tuple[int, ...], ys: tuple[float, ...], batch: int) -> float:
    """Linear interpolation in the batch, linear extrapolation from the end segments (proportional below zero)."""
    if len(xs) == 1:
        return ys[0] * batch / xs[0]
    i = min(max(bisect.bisect_left(xs, batch), 1), len(xs) - 1)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    t = y0 + (y1 - y0) * (batch - x0) / (x1 - x0)
    return t if t > 0 else ys[0] * batch / xs[0]


def _measured(obj: object) -> dict[str, tuple[tuple[int, ...], tuple[float, ...]]]:
    """{model: (batches, seconds)} from {model: {"batch": [...], "seconds_per_iter": [...]}}, checked."""
    if not isinstance(obj, dict):
        raise SimError(f"compute measured must be a JSON object of model: {{batch, seconds_per_iter}}, got {obj!r}")
    out = {}
    for name, v in obj.items():
        if not isinstance(v, dict) or set(v) != {"batch", "seconds_per_iter"}:
            raise SimError(f"compute measured[{name!r}] must have exactly the keys batch and seconds_per_iter")
        xs, ys = tuple(v["batch"]), tuple(v["seconds_per_iter"])
        if not xs or len(xs) != len(ys):
            raise SimError(f"compute measured[{name!r}] needs >= 1 batch size and as many seconds_per_iter, got "
                           f"{len(xs)} and {len(ys)}")
        for b in xs:
            if isinstance(b, bool) or not isinstance(b, int) or b < 1:
                raise SimError(f"compute measured[{name!r}] batch sizes must be integers >= 1, got {b!r}")
        if list(xs) != sorted(set(xs)):
            raise SimError(f"compute measured[{name!r}] batch sizes must be strictly increasing, got {list(xs)}")
        for y in ys:
            _finite(f"compute measured[{name!r}] seconds_per_iter", y, 0.0, strict=True)
        out[str(name)] = (xs, tuple(float(y) for y in ys))
    return out


@dataclass(kw_only=True, frozen=True)
class ComputeModel:
    """Seconds per iteration of forward + backward on one device.

    kind "table": a measured table for `reference_model` (seconds_per_iter at each batch), linearly
    interpolated in the batch and linearly extrapolated from the end segments; other models are scaled
    by their GFLOPs per sample relative to the reference model (an assumption, stated in the README).
    kind "flops": overhead_s + 3 * GFLOPs/sample * B / (tflops * 1e3 * efficiency) (backward = 2 x forward).
    kind "fixed": seconds_per_iter[0] for every batch (tests and paper mode use 0).
    kind "layers": the measured step times of `measured` models (interpolated in the batch), and for any other model
    sim/layermodel.py's step time from its layer table on this device: peak `tflops` x `efficiency` FLOP/s,
    `mem_GBps` x `efficiency` GB/s, `launch_s` per kernel, `sample_s` per sample, `step_s` per step (`fit` says how
    they were fitted).
    """

    kind: str
    device: str = "unnamed"
    reference_model: str = "resnet20"
    batch: tuple[int, ...] = ()
    seconds_per_iter: tuple[float, ...] = ()
    tflops: float = 0.0
    efficiency: float = 1.0
    overhead_s: float = 0.0
    mem_GBps: float = 0.0
    launch_s: float = 0.0
    sample_s: float = 0.0
    step_s: float = 0.0
    measured: Any = ()   # {model: {"batch": [...], "seconds_per_iter": [...]}}; kept as ((model, batches, s), ...)
    fit: str = ""
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
        elif self.kind == "layers":
            _finite("tflops", self.tflops, 0.0, strict=True)
            _finite("mem_GBps", self.mem_GBps, 0.0, strict=True)
            _finite("efficiency", self.efficiency, 0.0, strict=True)
            for name in ("launch_s", "sample_s", "step_s"):
                _finite(name, getattr(self, name))
            meas = _measured({m: {"batch": b, "seconds_per_iter": t} for m, b, t in self.measured}
                             if isinstance(self.measured, tuple) else self.measured)
            object.__setattr__(self, "measured", tuple((m, b, t) for m, (b, t) in meas.items()))
            object.__setattr__(self, "_cache", {"measured": meas})
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
        if self.kind == "layers":
            return self._layers_seconds(model, batch)
        t = _interp(self.batch, self.seconds_per_iter, batch)
        return t * model.gflops_per_sample / get_model(self.reference_model).gflops_per_sample

    def scaled(self, k: float, device: str) -> ComputeModel:
        """The same model with every step k times as long (tables, measured times, per-launch/sample/step costs;
        rates divided by k), renamed `device`."""
        _finite("scale", k, 0.0, strict=True)
        if self.kind == "layers":
            return ComputeModel(kind="layers", device=device, tflops=self.tflops, mem_GBps=self.mem_GBps,
                                efficiency=self.efficiency / k, launch_s=self.launch_s * k,
                                sample_s=self.sample_s * k, step_s=self.step_s * k,
                                measured=tuple((m, b, tuple(v * k for v in t)) for m, b, t in self.measured),
                                fit=f"{self.fit}; then every time x{k:.4g}")
        if self.kind == "flops":
            return ComputeModel(kind="flops", device=device, tflops=self.tflops, efficiency=self.efficiency / k,
                                overhead_s=self.overhead_s * k)
        return ComputeModel(kind=self.kind, device=device, reference_model=self.reference_model, batch=self.batch,
                            seconds_per_iter=tuple(v * k for v in self.seconds_per_iter))

    def device_constants(self) -> Any:
        """The layer model's sim.layermodel.DeviceConstants of a "layers" compute model."""
        from sim.layermodel import DeviceConstants
        return DeviceConstants(peak_flops=self.tflops * 1e12 * self.efficiency,
                               mem_bps=self.mem_GBps * 1e9 * self.efficiency, launch_s=self.launch_s,
                               sample_s=self.sample_s, step_s=self.step_s)

    def _own(self, model: ModelSpec) -> tuple[tuple[int, ...], tuple[float, ...]] | None:
        from sim.layers import canonical_name
        meas = self._cache["measured"]
        return meas.get(model.name) or meas.get(canonical_name(model.name)) or meas.get(
            MODEL_ALIASES.get(model.name, model.name))

    def _table(self, model: ModelSpec) -> Any:
        from sim.layers import layer_table
        try:
            return layer_table(model.name)
        except SimError:
            return None

    def _layers_seconds(self, model: ModelSpec, batch: int) -> float:
        own = self._own(model)
        if own is not None:
            return _interp(own[0], own[1], batch)
        table = self._table(model)
        if table is not None:
            from sim.layermodel import step_seconds
            return step_seconds(table, batch, self.device_constants())
        if not self._cache["measured"]:
            raise SimError(f"model {model.name!r} has no layer table and the compute model of {self.device} no "
                           f"measured model to scale from")
        ref, (xs, ys) = next(iter(self._cache["measured"].items()))
        return _interp(xs, ys, batch) * model.gflops_per_sample / get_model(ref).gflops_per_sample

    def provenance(self, model: ModelSpec, batch: int | None = None) -> tuple[str, str]:
        """(source, note) of seconds(model, batch), one of COMPUTE_SOURCES: "table" (the table's own model),
        "measured" / "measured-interpolated" (a measured model at / away from a measured batch), "layer-model",
        "extrapolated" (another model, scaled by GFLOPs per sample from a measured one), "flops-model" or "fixed"."""
        if self.kind == "layers":
            own = self._own(model)
            if own is not None:
                if batch is None or batch in own[0]:
                    return "measured", f"measured step times of {model.name} on {self.device}"
                return "measured-interpolated", (f"measured step times of {model.name} on {self.device} at batch "
                                                 f"{', '.join(map(str, own[0]))}, interpolated to {batch}")
            if self._table(model) is not None:
                return "layer-model", (f"MODELLED from {model.name}'s layers on {self.device} (peak "
                                       f"{self.tflops * self.efficiency:.3g} TFLOP/s, "
                                       f"{self.mem_GBps * self.efficiency:.3g} GB/s, "
                                       f"{1e6 * self.launch_s:.3g} us per kernel, "
                                       f"{1e6 * self.sample_s:.3g} us per sample), not a measurement")
            return "extrapolated", f"EXTRAPOLATED by FLOPs from a measured model on {self.device}"
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
        if self.kind == "layers":
            return {"kind": "layers", "device": self.device, "tflops": self.tflops, "mem_GBps": self.mem_GBps,
                    "efficiency": self.efficiency, "launch_s": self.launch_s, "sample_s": self.sample_s,
                    "step_s": self.step_s, "measured": {m: {"batch": list(b), "seconds_per_iter": list(t)}
                                                        for m, b, t in self.measured}, "fit": self.fit}
        return {"kind": "fixed", "device": self.device, "seconds_per_iter": list(self.seconds_per_iter)}

    @classmethod
    def from_json(cls, obj: object, where: str = "compute") -> ComputeModel:
        """Build from the JSON object of a topology file; unknown keys are an error."""
        if not isinstance(obj, dict):
            raise SimError(f"{where} must be a JSON object, got {type(obj).__name__}")
        allowed = {"kind", "device", "reference_model", "batch", "seconds_per_iter", "tflops",
                   "efficiency", "overhead_s", "mem_GBps", "launch_s", "sample_s", "step_s", "measured", "fit"}
        extra = sorted(set(obj) - allowed)
        if extra:
            raise SimError(f"unknown key {extra[0]!r} in {where}; valid keys: {', '.join(sorted(allowed))}")
        if "kind" not in obj:
            raise SimError(f"{where}: missing key 'kind' (one of {', '.join(KINDS)})")
        return cls(**obj)
