"""Option-A residual shortcuts in a form Torch-Pruning can prune.

The CIFAR ResNets' option-A shortcut (`models.resnet_cifar.PadShortcut`) subsamples and zero-pads
channels with `F.pad`. Torch-Pruning 1.6 traces `F.pad` as an element-wise op, so it maps output
channel i to input channel i and prunes the residual stream inconsistently (the pruned network
fails with a shape error). `ChannelShortcut` computes the same function as a channel gather: output
channel k is input channel `source[k]`, or zero where `source[k] == -1`. Its pruner keeps that map
exact when either side loses channels, so the residual sum stays consistent after any pruning.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch_pruning as tp
from torch import nn

from kdistill.models.resnet_cifar import PadShortcut


class ChannelShortcut(nn.Module):
    """Subsample by `stride` and gather channels by `source` (-1: a zero channel); no parameters."""

    def __init__(self, source: Sequence[int], in_channels: int, stride: int = 2) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.stride = stride
        self.register_buffer("source", torch.tensor(list(source), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        zero = x.new_zeros(x.shape[0], 1, *x.shape[2:])
        index = torch.where(self.source < 0, torch.full_like(self.source, x.shape[1]), self.source)
        return torch.cat([x, zero], dim=1).index_select(1, index)


def from_pad_shortcut(shortcut: PadShortcut, in_channels: int) -> ChannelShortcut:
    """The `ChannelShortcut` computing exactly what `shortcut` computes on `in_channels` channels."""
    half = shortcut.extra // 2
    source = [-1] * half + list(range(in_channels)) + [-1] * (shortcut.extra - half)
    return ChannelShortcut(source, in_channels)


def replace_pad_shortcuts(model: nn.Module) -> int:
    """Swap every option-A `PadShortcut` of a CIFAR ResNet block for a `ChannelShortcut` (same
    outputs); returns how many were swapped. The block's `conv1` gives the input width."""
    swapped = 0
    for block in model.modules():
        shortcut = getattr(block, "shortcut", None)
        if isinstance(shortcut, PadShortcut):
            block.shortcut = from_pad_shortcut(shortcut, block.conv1.in_channels)
            swapped += 1
    return swapped


class ChannelShortcutPruner(tp.pruner.function.BasePruningFunc):
    """Torch-Pruning's view of a `ChannelShortcut`: input and output channels pruned separately
    (they are not the same channels), the gather map rewritten to match."""

    TARGET_MODULES = ChannelShortcut

    def prune_out_channels(self, layer: ChannelShortcut, idxs: Sequence[int]) -> ChannelShortcut:
        dropped = set(int(i) for i in idxs)
        keep = [k for k in range(len(layer.source)) if k not in dropped]
        layer.source = layer.source[keep].clone()
        return layer

    def prune_in_channels(self, layer: ChannelShortcut, idxs: Sequence[int]) -> ChannelShortcut:
        dropped = torch.tensor(sorted(set(int(i) for i in idxs)), dtype=torch.long)
        source = layer.source.clone()
        gone = torch.isin(source, dropped)
        shift = (dropped.view(1, -1) < source.view(-1, 1)).sum(dim=1)  # dropped channels below each source
        source = torch.where(gone | (source < 0), torch.full_like(source, -1), source - shift)
        layer.source = source
        layer.in_channels -= len(dropped)
        return layer

    def get_out_channels(self, layer: ChannelShortcut) -> int:
        return len(layer.source)

    def get_in_channels(self, layer: ChannelShortcut) -> int:
        return layer.in_channels
