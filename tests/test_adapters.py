"""Learned adapters: the right module for each shape pair, and clear errors for the rest."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdistill.methods.adapters import Resize2d, build_adapter, feature_tensor, resize_map


def test_vectors_get_a_linear_layer():
    adapter = build_adapter((4, 6), (4, 10))
    assert isinstance(adapter, nn.Linear)
    assert (adapter.in_features, adapter.out_features) == (6, 10)
    assert adapter(torch.randn(3, 6)).shape == (3, 10)


def test_equal_vectors_learned_by_default_identity_on_request():
    assert isinstance(build_adapter((4, 6), (4, 6)), nn.Linear)
    assert isinstance(build_adapter((4, 6), (4, 6), learn_when_equal=False), nn.Identity)


def test_tokens_get_a_linear_on_the_last_dimension():
    adapter = build_adapter((2, 5, 8), (2, 5, 12))
    assert isinstance(adapter, nn.Linear)
    x = torch.randn(2, 5, 8)
    out = adapter(x)
    assert out.shape == (2, 5, 12)
    # each token is mapped on its own: token 3 of the output depends only on token 3 of the input
    x2 = x.clone()
    x2[:, 0] += 1.0
    assert torch.allclose(adapter(x2)[:, 3], out[:, 3])


def test_token_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match=r"sequence lengths differ \(5 vs 7\)"):
        build_adapter((2, 5, 8), (2, 7, 8), "enc:0", "bert:last_hidden_state")


def test_maps_with_channel_change_get_conv1x1_and_batchnorm():
    adapter = build_adapter((2, 8, 4, 4), (2, 16, 4, 4))
    convs = [m for m in adapter.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in adapter.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == 1 and convs[0].kernel_size == (1, 1) and convs[0].out_channels == 16
    assert len(norms) == 1 and norms[0].num_features == 16
    assert not any(isinstance(m, Resize2d) for m in adapter.modules())
    assert adapter(torch.randn(3, 8, 4, 4)).shape == (3, 16, 4, 4)


def test_larger_student_map_is_average_pooled():
    adapter = build_adapter((2, 4, 8, 8), (2, 4, 4, 4), learn_when_equal=False)
    assert isinstance(adapter, nn.Sequential) and isinstance(adapter[0], Resize2d) and len(adapter) == 1
    x = torch.randn(2, 4, 8, 8)
    expected = x.reshape(2, 4, 4, 2, 4, 2).mean(dim=(3, 5))  # 2x2 block means, written out
    assert torch.allclose(adapter(x), expected, atol=1e-6)


def test_smaller_student_map_is_interpolated_up_and_projected():
    adapter = build_adapter((2, 4, 2, 2), (2, 6, 8, 8))
    assert isinstance(adapter[0], Resize2d)
    assert adapter(torch.randn(3, 4, 2, 2)).shape == (3, 6, 8, 8)
    # bilinear interpolation keeps a constant map constant
    up = resize_map(torch.full((1, 1, 2, 2), 3.0), (8, 8))
    assert up.shape == (1, 1, 8, 8) and torch.allclose(up, torch.full_like(up, 3.0))


def test_mixed_resize_pools_one_dimension_and_interpolates_the_other():
    out = resize_map(torch.randn(1, 2, 8, 2), (4, 6))
    assert out.shape == (1, 2, 4, 6)


def test_equal_maps_identity_when_not_learned():
    assert isinstance(build_adapter((2, 4, 4, 4), (2, 4, 4, 4), learn_when_equal=False), nn.Identity)
    learned = build_adapter((2, 4, 4, 4), (2, 4, 4, 4))
    assert any(isinstance(m, nn.Conv2d) for m in learned.modules())


def test_adapter_parameters_receive_gradients():
    adapter = build_adapter((2, 3, 4, 4), (2, 5, 2, 2))
    x = torch.randn(4, 3, 4, 4, requires_grad=True)
    adapter(x).pow(2).mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for param in adapter.parameters():
        assert param.grad is not None


def test_rank_mismatch_names_shapes_taps_and_a_fix():
    with pytest.raises(ValueError) as info:
        build_adapter((8, 64, 4, 4), (8, 256), "layer3", "linear:input")
    message = str(info.value)
    assert "(8, 64, 4, 4)" in message and "(8, 256)" in message
    assert "'layer3'" in message and "'linear:input'" in message
    assert "4-D and a 2-D" in message
    assert "Tap layers" in message and "sp, rkd, pkt" in message


def test_five_d_tensors_are_refused():
    with pytest.raises(ValueError, match="5-D tensors are not supported"):
        build_adapter((2, 3, 4, 4, 4), (2, 3, 4, 4, 4))


def test_feature_tensor_rejects_tuples_with_a_selector_hint():
    assert torch.is_tensor(feature_tensor(torch.zeros(1), "x", "student"))
    with pytest.raises(ValueError, match=r"'encoder:0'"):
        feature_tensor((torch.zeros(1),), "encoder", "student")


def test_non_integer_downsampling_uses_adaptive_average_windows():
    x = torch.arange(36.0).reshape(1, 1, 6, 6)
    windows = [(0, 2), (1, 3), (3, 5), (4, 6)]  # floor(i*6/4) .. ceil((i+1)*6/4)
    expected = torch.tensor([[x[0, 0, a:b, c:d].mean() for c, d in windows] for a, b in windows])
    assert torch.allclose(resize_map(x, (4, 4))[0, 0], expected)
