"""A small convolutional network for small images (digits, MNIST, CIFAR)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class SmallCNN(nn.Module):
    """[conv3x3 -> BN -> ReLU -> maxpool] per width, global average pool, linear head.

    Blocks are `features.0`, `features.1`, ...; the classifier is `head`.
    """

    def __init__(self, in_channels: int, num_classes: int, channels: Sequence[int] = (32, 64),
                 dropout: float = 0.0) -> None:
        super().__init__()
        blocks = []
        width = in_channels
        for size in channels:
            blocks.append(nn.Sequential(
                nn.Conv2d(width, size, 3, padding=1, bias=False),
                nn.BatchNorm2d(size),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2, ceil_mode=True),
            ))
            width = size
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(width, num_classes)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(inputs)).flatten(1)
        return self.head(self.dropout(x))


def cnn(num_classes: int, input_shape: Sequence[int], channels: Sequence[int] = (32, 64),
        dropout: float = 0.0) -> SmallCNN:
    return SmallCNN(input_shape[0], num_classes, channels, dropout)
