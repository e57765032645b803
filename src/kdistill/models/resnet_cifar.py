"""CIFAR ResNets (He et al. 2016, section 4.2): depth 6n+2, three stages.

The narrow family (resnet8 ... resnet110: 16/32/64 channels) uses "option A" shortcuts, a strided
identity zero-padded in channels, and module names that match the widely used pretrained
checkpoints (`conv1`, `bn1`, `layer{1,2,3}.{i}.conv{1,2}`, `linear`). The wide variants
resnet8x4 / resnet32x4 (64/128/256 channels after a 32-channel stem, as in the CRD benchmark
suite) use 1x1-conv "option B" shortcuts where widths change.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class PadShortcut(nn.Module):
    """Option A: subsample by 2 and zero-pad the new channels; no parameters."""

    def __init__(self, extra_channels: int) -> None:
        super().__init__()
        self.extra = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.extra // 2
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, half, self.extra - half))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            if shortcut == "A":
                self.shortcut = PadShortcut(planes - in_planes)
            else:
                self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                              nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10, widths: Sequence[int] = (16, 16, 32, 64),
                 shortcut: str = "A", in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        blocks = (depth - 2) // 6
        stem, *stages = widths
        self.conv1 = nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        planes = stem
        for index, (width, stride) in enumerate(zip(stages, (1, 2, 2), strict=True), start=1):
            layers = []
            for block in range(blocks):
                layers.append(BasicBlock(planes, width, stride if block == 0 else 1, shortcut))
                planes = width
            self.add_module(f"layer{index}", nn.Sequential(*layers))
        self.linear = nn.Linear(planes, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def _narrow(depth: int):
    def build(num_classes: int, input_shape: Sequence[int]) -> CifarResNet:
        return CifarResNet(depth, num_classes, (16, 16, 32, 64), "A", input_shape[0])

    build.__name__ = f"resnet{depth}"
    build.__doc__ = f"CIFAR ResNet-{depth}, 16/32/64 channels, option-A shortcuts."
    return build


def _wide(depth: int):
    def build(num_classes: int, input_shape: Sequence[int]) -> CifarResNet:
        return CifarResNet(depth, num_classes, (32, 64, 128, 256), "B", input_shape[0])

    build.__name__ = f"resnet{depth}x4"
    build.__doc__ = f"CIFAR ResNet-{depth}x4, 64/128/256 channels, 1x1-conv shortcuts."
    return build


NARROW_DEPTHS = (8, 14, 20, 32, 44, 56, 110)
WIDE_DEPTHS = (8, 32)
