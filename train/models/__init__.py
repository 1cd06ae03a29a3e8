"""Model registry: build a model by name (resnet20, densenet40-12, wideresnet28-10, resnet50, lstm, logreg)."""
from __future__ import annotations

import re

from torch import nn

from train.errors import TrainError
from train.models.densenet import DenseNet
from train.models.init import init_weights
from train.models.resnet_cifar import CifarResNet, WideResNet
from train.models.resnet_imagenet import ResNet50
from train.models.small import BinaryLogisticRegression, LogisticRegression, LSTMLanguageModel

__all__ = ["MODEL_HELP", "build_model", "check_model_name", "is_sequence_model", "no_decay_names"]

MODEL_HELP = ("resnetD (D = 6n+2: resnet8, resnet20, resnet32, ..., except 50), resnet50 (ImageNet bottleneck), "
              "densenetD-K (densenet40-12), wideresnetD-K (wideresnet28-10), lstm (3 x 650), lstmH (hidden size H, "
              "e.g. lstm64), logreg, logreg-binary "
              "(one weight vector, no bias, w0 = 0: the convex problem)")
_RESNET = re.compile(r"resnet(\d+)")
_DENSE = re.compile(r"densenet(\d+)-(\d+)")
_WIDE = re.compile(r"wideresnet(\d+)-(\d+)")
_LSTM = re.compile(r"lstm(\d*)")


def check_model_name(name: str) -> None:
    """Raise TrainError unless `name` is a model this registry can build (structure checked, nothing allocated)."""
    bad = TrainError(f"model must be one of {MODEL_HELP}, got {name!r}")
    if name in ("resnet50", "lstm", "logreg", "logreg-binary"):
        return
    if m := _LSTM.fullmatch(name):
        if not 1 <= int(m.group(1)) <= 8192:
            raise bad
        return
    if m := _RESNET.fullmatch(name):
        d = int(m.group(1))
        if d < 8 or (d - 2) % 6:
            raise bad
        return
    if m := _DENSE.fullmatch(name):
        if int(m.group(1)) < 7 or (int(m.group(1)) - 4) % 3 or int(m.group(2)) < 1:
            raise bad
        return
    if m := _WIDE.fullmatch(name):
        if int(m.group(1)) < 10 or (int(m.group(1)) - 4) % 6 or int(m.group(2)) < 1:
            raise bad
        return
    raise bad


def is_sequence_model(name: str) -> bool:
    """Whether the model takes token sequences (the LSTM) rather than feature tensors."""
    return _LSTM.fullmatch(name) is not None


def build_model(name: str, *, input_shape: tuple[int, ...], num_classes: int, width: int = 16,
                dropout: float = 0.0) -> nn.Module:
    """Build and initialise model `name` for inputs of `input_shape` (without the batch) and `num_classes` outputs.

    For the LSTM, `num_classes` is the vocabulary size. `width` is the base width of the resnetD family.
    """
    check_model_name(name)
    image = len(input_shape) == 3
    if name not in ("logreg", "logreg-binary") and not is_sequence_model(name) and not image:
        raise TrainError(f"model {name!r} needs image inputs (C, H, W), got input shape {input_shape}; "
                         f"use logreg for feature vectors")
    if m := _LSTM.fullmatch(name):
        return init_weights(LSTMLanguageModel(num_classes, hidden=int(m.group(1) or 650), dropout=dropout))
    if name in ("logreg", "logreg-binary"):
        n_in = 1
        for s in input_shape:
            n_in *= s
        if name == "logreg-binary":
            if num_classes != 2:
                raise TrainError(f"model logreg-binary needs 2 classes, got {num_classes}")
            return BinaryLogisticRegression(n_in)
        return init_weights(LogisticRegression(n_in, num_classes))
    c_in = input_shape[0]
    if name == "resnet50":
        return init_weights(ResNet50(num_classes, in_channels=c_in))
    if m := _RESNET.fullmatch(name):
        return init_weights(CifarResNet(int(m.group(1)), num_classes, width, in_channels=c_in))
    if m := _DENSE.fullmatch(name):
        return init_weights(DenseNet(int(m.group(1)), int(m.group(2)), num_classes, in_channels=c_in))
    m = _WIDE.fullmatch(name)
    assert m is not None
    return init_weights(WideResNet(int(m.group(1)), int(m.group(2)), num_classes, dropout, in_channels=c_in))


def no_decay_names(model: nn.Module) -> set[str]:
    """Names of the parameters that get no weight decay: those of BatchNorm layers (SPEC section 3)."""
    names: set[str] = set()
    for mod_name, mod in model.named_modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            for p_name, _ in mod.named_parameters(recurse=False):
                names.add(f"{mod_name}.{p_name}" if mod_name else p_name)
    return names
