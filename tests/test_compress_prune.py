"""Structured pruning of CIFAR ResNets (option-A shortcuts) and unstructured magnitude pruning."""

from __future__ import annotations

import pytest
import torch
import torch_pruning as tp
from torch import nn

from kdistill.compress.prune import (
    StructuredPruning,
    UnstructuredPruning,
    prune_to_target,
    residual_shapes_consistent,
    sparsity,
)
from kdistill.compress.shortcuts import ChannelShortcut, ChannelShortcutPruner, replace_pad_shortcuts
from kdistill.errors import BadInput
from kdistill.evaluate.profile import count_parameters, flops
from kdistill.models import build_model


def resnet(depth: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return build_model(f"resnet{depth}", 10, (3, 32, 32)).eval()


def test_channel_shortcut_computes_the_option_a_shortcut_exactly():
    model = resnet(20)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        assert replace_pad_shortcuts(model) == 2  # the first block of stages 2 and 3
        assert torch.equal(model(x), before)


def test_shortcut_pruner_rewrites_the_gather_map_by_hand():
    layer = ChannelShortcut([-1, -1, 0, 1, 2, 3, -1, -1], in_channels=4)
    pruner = ChannelShortcutPruner()
    pruner.prune_in_channels(layer, [1])  # input 1 gone: its output is zero, inputs 2, 3 move down to 1, 2
    assert layer.source.tolist() == [-1, -1, 0, -1, 1, 2, -1, -1] and layer.in_channels == 3
    pruner.prune_out_channels(layer, [0, 4])
    assert layer.source.tolist() == [-1, 0, -1, 2, -1, -1]
    x = torch.arange(3.0).view(1, 3, 1, 1).repeat(1, 1, 2, 2)
    assert layer(x)[0, :, 0, 0].tolist() == [0.0, 0.0, 0.0, 2.0, 0.0, 0.0]


def test_torch_pruning_alone_breaks_option_a_resnets():
    """Why compress.shortcuts exists: Torch-Pruning 1.6 traces F.pad as element-wise."""
    model = resnet(8)
    x = torch.randn(2, 3, 32, 32)
    tp.pruner.MetaPruner(model, x, tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.5,
                         ignored_layers=[model.linear]).step()
    with pytest.raises(RuntimeError):
        model(x)


@pytest.mark.parametrize("depth", [8, 20])
def test_structured_pruning_shrinks_a_cifar_resnet_and_keeps_residuals_consistent(depth):
    model = resnet(depth)
    x = torch.randn(4, 3, 32, 32)
    params, work = count_parameters(model), flops(model, x[:1])
    pruning = StructuredPruning(model, x[:2], ratio=0.5)
    pruning.step()
    assert pruning.finished
    assert count_parameters(model) < 0.4 * params  # widths halve: conv weights shrink ~4x
    assert flops(model, x[:1]) < 0.4 * work
    assert model(x).shape == (4, 10)
    assert residual_shapes_consistent(model, x)
    assert model.conv1.out_channels == 8 and model.layer3[0].conv2.out_channels == 32
    assert model.linear.out_features == 10  # the classifier keeps its classes


def test_iterative_steps_reach_the_ratio():
    model = resnet(8)
    x = torch.randn(2, 3, 32, 32)
    pruning = StructuredPruning(model, x, ratio=0.75, steps=3)
    widths = []
    while not pruning.finished:
        pruning.step()
        widths.append(model.layer1[0].conv1.out_channels)
    assert widths == [12, 8, 4]
    with pytest.raises(RuntimeError):
        pruning.step()


def test_prune_to_a_flops_target():
    model = resnet(8)
    x = torch.randn(2, 3, 32, 32)
    start = flops(model, x[:1])
    reached = prune_to_target(model, x, lambda m: flops(m, x[:1]), 0.5 * start, granularity=20)
    assert 0.3 * start < reached <= 0.5 * start  # fine steps: it stops soon after the target
    assert reached == flops(model, x[:1]) and residual_shapes_consistent(model, x)


def test_unstructured_pruning_zeroes_the_smallest_weights_and_leaves_no_masks():
    torch.manual_seed(0)
    model = build_model("mlp", 10, (1, 8, 8), {"hidden": [32, 32]})
    head = model.head.weight.detach().clone()
    pruning = UnstructuredPruning(model, sparsity=0.6, steps=2)
    pruning.step()
    assert sparsity(model) == pytest.approx(0.3, abs=0.01)
    pruning.step()
    assert sparsity(model) == pytest.approx(0.6, abs=0.01)
    assert model.hidden[0][0].weight.flatten()[model.hidden[0][0].weight_orig.abs().flatten().argmin()] == 0
    pruning.finalize()
    assert not any(m._forward_pre_hooks for m in model.modules())
    assert sparsity(model) == pytest.approx(0.6, abs=0.01)
    assert torch.equal(model.head.weight, head)  # the classifier is never pruned


@pytest.mark.parametrize("ratio", [0.0, 1.0, 1.5, -0.2])
def test_ratio_outside_zero_one_is_refused(ratio):
    with pytest.raises(BadInput, match="between 0 and 1"):
        StructuredPruning(resnet(8), torch.randn(2, 3, 32, 32), ratio)
