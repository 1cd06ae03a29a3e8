"""Model zoo: parameter counts against the SPEC table, output shapes, initialisation and no-decay names."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from train.errors import TrainError
from train.models import build_model, check_model_name, no_decay_names

CIFAR = (3, 32, 32)


@pytest.mark.parametrize("name, shape, classes, spec_millions, tol", [
    ("resnet20", CIFAR, 10, 0.27, 0.03),          # SPEC section 3 table
    ("densenet40-12", CIFAR, 10, 1.06, 0.05),
    ("wideresnet28-10", CIFAR, 10, 36.48, 0.01),
    ("resnet50", (3, 224, 224), 1000, 25.00, 0.03),
])
def test_train_model_sizes_match_spec(name: str, shape: tuple, classes: int, spec_millions: float,
                                      tol: float) -> None:
    model = build_model(name, input_shape=shape, num_classes=classes)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(n - spec_millions) <= tol * spec_millions, f"{name}: {n:.3f} M parameters"


def test_train_resnet_family_forward_shapes() -> None:
    for depth in (8, 14, 20):
        m = build_model(f"resnet{depth}", input_shape=(3, 16, 16), num_classes=7, width=4)
        assert m(torch.zeros(2, 3, 16, 16)).shape == (2, 7)
        convs = [x for x in m.modules() if isinstance(x, nn.Conv2d) and x.kernel_size == (3, 3)]
        assert len(convs) == depth - 1  # the stem and 6n block convolutions; the fc layer makes depth 6n + 2
    small = build_model("densenet10-4", input_shape=(3, 8, 8), num_classes=3)
    assert small(torch.zeros(2, 3, 8, 8)).shape == (2, 3)
    wide = build_model("wideresnet10-1", input_shape=(3, 8, 8), num_classes=3)
    assert wide(torch.zeros(2, 3, 8, 8)).shape == (2, 3)


def test_train_lstm_and_logreg() -> None:
    lm = build_model("lstm", input_shape=(30,), num_classes=50, dropout=0.5)
    assert lm(torch.zeros(2, 30, dtype=torch.long)).shape == (2, 30, 50)
    assert lm.lstm.num_layers == 3 and lm.lstm.hidden_size == 650
    lr = build_model("logreg", input_shape=(300,), num_classes=2)
    assert sum(p.numel() for p in lr.parameters()) == 602
    assert lr(torch.ones(4, 300)).shape == (4, 2)


def test_train_init_and_no_decay() -> None:
    torch.manual_seed(0)
    m = build_model("resnet20", input_shape=CIFAR, num_classes=100)
    assert abs(m.fc.weight.std().item() - 0.01) < 0.001 and torch.all(m.fc.bias == 0)
    w = m.conv.weight  # kaiming normal, fan_out = 16 * 9: std sqrt(2 / 144)
    assert abs(w.std().item() - (2 / 144) ** 0.5) < 0.03
    skip = no_decay_names(m)
    bn = {f"{n}.{p}" for n, mod in m.named_modules() if isinstance(mod, nn.BatchNorm2d) for p in ("weight", "bias")}
    assert skip == bn and len(bn) == 2 * 21  # stem + 2 per block (9 blocks) + 2 projection shortcuts = 21 BNs


def test_train_bad_model_names() -> None:
    for bad in ("resnet9", "resnet", "densenet40", "vgg16", "wideresnet27-10"):
        with pytest.raises(TrainError, match=f"got '{bad}'"):
            check_model_name(bad)
    with pytest.raises(TrainError, match="needs image inputs"):
        build_model("resnet20", input_shape=(300,), num_classes=2)
