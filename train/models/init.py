"""Weight initialisation shared by every model: He for convolutions, N(0, 0.01) for fully connected layers."""
from __future__ import annotations

from torch import nn

__all__ = ["init_weights"]


def init_weights(model: nn.Module) -> nn.Module:
    """Initialise in place as SPEC section 3 says and return the model.

    Convolutions: kaiming normal (fan_out, ReLU gain), no bias. Linear layers: zero-mean Gaussian with std 0.01
    and zero bias. BatchNorm: weight 1, bias 0. Embeddings and LSTMs keep their own initialisers.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model
