"""Multi-layer perceptrons (Hinton 2015's MNIST teacher and student are MLPs)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """Flatten -> [Linear -> ReLU -> Dropout] per hidden width -> Linear.

    Hidden blocks are `hidden.0`, `hidden.1`, ... and the classifier is `head`, so taps can name them.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: Sequence[int] = (256, 256),
        dropout: float = 0.0,
        input_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.input_dropout = nn.Dropout(input_dropout) if input_dropout > 0 else nn.Identity()
        blocks = []
        width = in_features
        for size in hidden:
            layers: list[nn.Module] = [nn.Linear(width, size), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            blocks.append(nn.Sequential(*layers))
            width = size
        self.hidden = nn.ModuleList(blocks)
        self.head = nn.Linear(width, num_classes)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = self.input_dropout(inputs.flatten(1))
        for block in self.hidden:
            x = block(x)
        return self.head(x)


def mlp(num_classes: int, input_shape: Sequence[int], hidden: Sequence[int] = (256, 256),
        dropout: float = 0.0, input_dropout: float = 0.0) -> MLP:
    return MLP(math.prod(input_shape), num_classes, hidden, dropout, input_dropout)
