"""Layer tables of the trainer's image models, computed from their architecture: MACs, activation bytes, parameters."""
# Pure Python: the simulator never imports torch. Each table follows train/models/ op for op (convolutions,
# BatchNorm, ReLU, residual additions, concatenations, pooling, the classifier), for one sample of the given input.
# Per layer: forward multiply-accumulates (MACs), the float32 activation bytes it reads and writes, its parameters
# and its parameter tensors. tests/unit/test_sim_layers.py checks parameters and MACs against the torch models.
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from sim.errors import SimError

__all__ = ["Layer", "LayerTable", "layer_table", "LAYER_MODEL_HELP", "canonical_name"]

#: float32 activations and weights
_F = 4
LAYER_MODEL_HELP = "resnetD (D = 6n+2), densenetD-K, wideresnetD-K (or wrnD-K), resnet50"
_RESNET = re.compile(r"resnet(\d+)")
_DENSE = re.compile(r"densenet(\d+)-(\d+)")
_WIDE = re.compile(r"(?:wideresnet|wrn)(\d+)-(\d+)")


@dataclass(frozen=True)
class Layer:
    """One op of the forward pass for one sample: kind, MACs, activation bytes moved, parameters, their tensors."""

    kind: str
    macs: float
    act_bytes: float
    params: int = 0
    tensors: int = 0


@dataclass(frozen=True)
class LayerTable:
    """The ops of a model's forward pass, in order, for inputs of `input_shape` (channels, height, width)."""

    model: str
    input_shape: tuple[int, int, int]
    layers: tuple[Layer, ...]

    @property
    def params(self) -> int:
        return sum(lay.params for lay in self.layers)

    @property
    def macs(self) -> float:
        return sum(lay.macs for lay in self.layers)

    @property
    def tensors(self) -> int:
        return sum(lay.tensors for lay in self.layers)


class _Builder:
    """Appends ops while tracking the activation shape (c, h, w)."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        self.c, self.h, self.w = shape
        self.ops: list[Layer] = []

    @property
    def n(self) -> int:
        return self.c * self.h * self.w

    def bn(self) -> None:
        self.ops.append(Layer("bn", 0.0, float(_F * 3 * self.n), 2 * self.c, 2))

    def relu(self) -> None:
        self.ops.append(Layer("relu", 0.0, float(_F * 2 * self.n)))

    def add(self) -> None:
        self.ops.append(Layer("add", 0.0, float(_F * 3 * self.n)))

    def pool(self, k: int, stride: int, pad: int = 0, kind: str = "pool") -> None:
        n_in = self.n
        self.h = (self.h + 2 * pad - k) // stride + 1
        self.w = (self.w + 2 * pad - k) // stride + 1
        self.ops.append(Layer(kind, 0.0, float(_F * (n_in + self.n))))

    def global_pool(self) -> None:
        n_in = self.n
        self.h = self.w = 1
        self.ops.append(Layer("pool", 0.0, float(_F * (n_in + self.n))))

    def fc(self, out: int) -> None:
        params = self.c * out + out
        n_in = self.c
        self.c = out
        self.ops.append(Layer("fc", float(n_in * out), float(_F * (n_in + out)), params, 2))


def _conv(b: _Builder, c_out: int, k: int, stride: int = 1, pad: int | None = None) -> None:
    """A bias-free k x k convolution (as every conv of train/models)."""
    pad = k // 2 if pad is None else pad
    c_in, n_in = b.c, b.n
    b.h = (b.h + 2 * pad - k) // stride + 1
    b.w = (b.w + 2 * pad - k) // stride + 1
    b.c = c_out
    params = c_out * c_in * k * k
    b.ops.append(Layer("conv", float(params * b.h * b.w), float(_F * (n_in + b.n)), params, 1))


def _shortcut(b: _Builder, block_in: tuple[int, int, int], c_out: int, stride: int, *, bn: bool) -> None:
    """The 1 x 1 projection shortcut on the block's input (channels, height, width), where the block changes its
    shape; the builder's current shape (the block's output) is left as it was."""
    c_in = block_in[0]
    if stride == 1 and c_in == c_out:
        return
    out = (b.c, b.h, b.w)
    b.c, b.h, b.w = block_in
    _conv(b, c_out, 1, stride, 0)
    if bn:
        b.bn()
    b.c, b.h, b.w = out


def _cifar_resnet(depth: int, width: int, shape: tuple[int, int, int], classes: int) -> list[Layer]:
    n = (depth - 2) // 6
    b = _Builder(shape)
    _conv(b, width, 3)
    b.bn()
    b.relu()
    for stage, c_out in enumerate((width, 2 * width, 4 * width)):
        for i in range(n):
            stride = 2 if (stage > 0 and i == 0) else 1
            c_in, h, w = b.c, b.h, b.w
            _conv(b, c_out, 3, stride)
            b.bn()
            b.relu()
            _conv(b, c_out, 3)
            b.bn()
            _shortcut(b, (c_in, h, w), c_out, stride, bn=True)
            b.add()
            b.relu()
    b.global_pool()
    b.fc(classes)
    return b.ops


def _wide_resnet(depth: int, widen: int, shape: tuple[int, int, int], classes: int) -> list[Layer]:
    n = (depth - 4) // 6
    b = _Builder(shape)
    _conv(b, 16, 3)
    for stage, c_out in enumerate((16 * widen, 32 * widen, 64 * widen)):
        for i in range(n):
            stride = 2 if (stage > 0 and i == 0) else 1
            c_in, h, w = b.c, b.h, b.w
            b.bn()
            b.relu()
            _conv(b, c_out, 3, stride)
            b.bn()
            b.relu()
            _conv(b, c_out, 3)
            _shortcut(b, (c_in, h, w), c_out, stride, bn=False)
            b.add()
    b.bn()
    b.relu()
    b.global_pool()
    b.fc(classes)
    return b.ops


def _densenet(depth: int, growth: int, shape: tuple[int, int, int], classes: int) -> list[Layer]:
    n = (depth - 4) // 3
    b = _Builder(shape)
    _conv(b, 16, 3)
    for block in range(3):
        for _ in range(n):
            c_in = b.c
            b.bn()
            b.relu()
            _conv(b, growth, 3)
            b.c = c_in + growth   # concatenation: both inputs copied into the output
            b.ops.append(Layer("cat", 0.0, float(_F * 2 * b.n)))
        if block < 2:
            b.bn()
            b.relu()
            _conv(b, b.c, 1, 1, 0)
            b.pool(2, 2)
    b.bn()
    b.relu()
    b.global_pool()
    b.fc(classes)
    return b.ops


def _resnet50(shape: tuple[int, int, int], classes: int) -> list[Layer]:
    b = _Builder(shape)
    _conv(b, 64, 7, 2, 3)
    b.bn()
    b.relu()
    b.pool(3, 2, 1)
    for stage, (planes, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3))):
        for i in range(blocks):
            stride = 2 if (stage > 0 and i == 0) else 1
            c_in, h, w = b.c, b.h, b.w
            _conv(b, planes, 1, 1, 0)
            b.bn()
            b.relu()
            _conv(b, planes, 3, stride)
            b.bn()
            b.relu()
            _conv(b, 4 * planes, 1, 1, 0)
            b.bn()
            if stride != 1 or c_in != 4 * planes:
                out = (b.c, b.h, b.w)
                b.c, b.h, b.w = c_in, h, w
                _conv(b, 4 * planes, 1, stride, 0)
                b.bn()
                b.c, b.h, b.w = out
            b.add()
            b.relu()
    b.global_pool()
    b.fc(classes)
    return b.ops


def canonical_name(name: str) -> str:
    """The trainer's spelling of a model name (wrnD-K -> wideresnetD-K)."""
    m = _WIDE.fullmatch(name)
    return f"wideresnet{m.group(1)}-{m.group(2)}" if m else name


@functools.lru_cache(maxsize=64)
def layer_table(name: str, input_shape: tuple[int, int, int] | None = None, classes: int | None = None,
                width: int = 16) -> LayerTable:
    """The layer table of model `name` (the trainer's names; wrnD-K too) for CIFAR-10 inputs (ImageNet for
    resnet50) unless `input_shape` and `classes` are given."""
    name = canonical_name(name)
    imagenet = name == "resnet50"
    shape = input_shape or ((3, 224, 224) if imagenet else (3, 32, 32))
    k = classes or (1000 if imagenet else 10)
    if name == "resnet50":
        ops = _resnet50(shape, k)
    elif (m := _RESNET.fullmatch(name)) and int(m.group(1)) >= 8 and (int(m.group(1)) - 2) % 6 == 0:
        ops = _cifar_resnet(int(m.group(1)), width, shape, k)
    elif (m := _DENSE.fullmatch(name)) and int(m.group(1)) >= 7 and (int(m.group(1)) - 4) % 3 == 0 \
            and int(m.group(2)) >= 1:
        ops = _densenet(int(m.group(1)), int(m.group(2)), shape, k)
    elif (m := _WIDE.fullmatch(name)) and int(m.group(1)) >= 10 and (int(m.group(1)) - 4) % 6 == 0 \
            and int(m.group(2)) >= 1:
        ops = _wide_resnet(int(m.group(1)), int(m.group(2)), shape, k)
    else:
        raise SimError(f"model must be one of {LAYER_MODEL_HELP} for a layer table, got {name!r}")
    return LayerTable(model=name, input_shape=shape, layers=tuple(ops))
