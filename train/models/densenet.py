"""DenseNet-L-k for CIFAR (Huang et al. 2017), the basic variant without bottlenecks: DenseNet-40-12."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["DenseNet"]


class _Layer(nn.Module):
    """BN-ReLU-conv3x3 producing `growth` new channels, concatenated to its input."""

    def __init__(self, c_in: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(c_in)
        self.conv = nn.Conv2d(c_in, growth, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(F.relu(self.bn(x)))], 1)


class _Transition(nn.Module):
    """BN-ReLU-conv1x1 then 2x2 average pooling between dense blocks."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(c)
        self.conv = nn.Conv2d(c, c, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet(nn.Module):
    """Three dense blocks of (depth - 4) / 3 layers each, growth rate k, 16 initial channels."""

    def __init__(self, depth: int = 40, growth: int = 12, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if depth < 7 or (depth - 4) % 3 != 0:
            raise ValueError(f"DenseNet depth must be 3n+4 with n >= 1 (7, 10, ..., 40, ...), got {depth}")
        n = (depth - 4) // 3
        c = 16
        blocks: list[nn.Module] = [nn.Conv2d(in_channels, c, 3, 1, 1, bias=False)]
        for b in range(3):
            for _ in range(n):
                blocks.append(_Layer(c, growth))
                c += growth
            if b < 2:
                blocks.append(_Transition(c))
        self.features = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.features(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))
