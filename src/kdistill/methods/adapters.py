"""Learned adapters: map a student feature onto the shape of the teacher feature it is compared with.

`build_adapter(student_shape, teacher_shape, ...)` picks the adapter from the two shapes of one
batch (the batch dimension is ignored):

- vectors `(B, Ds) -> (B, Dt)`: `nn.Linear(Ds, Dt)`;
- token sequences `(B, L, Ds) -> (B, L, Dt)`: `nn.Linear(Ds, Dt)` on the last dimension (the
  sequence lengths must agree);
- maps `(B, Cs, Hs, Ws) -> (B, Ct, Ht, Wt)`: a spatial resize when the sizes differ
  (`adaptive_avg_pool2d` down to the teacher's size when the student map is larger, bilinear
  interpolation up when it is smaller), then a 1x1 convolution (no bias) + `BatchNorm2d`.

Equal shapes: with `learn_when_equal=True` (the default, what FitNets' regressor does: the hint is
matched through a learned projection even when the widths agree) a square Linear / 1x1 conv + BN
is still learned; with `learn_when_equal=False` the adapter is `nn.Identity()` (or only the resize
when only the spatial size differs). Combinations that cannot be adapted (different ranks, token
lengths that differ, 5-D tensors...) raise a ValueError naming both shapes and both taps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Resize2d(nn.Module):
    """Resize a (B, C, H, W) map to `size`: average-pool down, bilinear up (per dimension)."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = (int(size[0]), int(size[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize_map(x, self.size)

    def extra_repr(self) -> str:
        return f"size={self.size}"


def resize_map(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Average-pool the dimensions that are larger than `size`, interpolate the smaller ones up."""
    h, w = x.shape[-2:]
    th, tw = size
    if (h, w) == (th, tw):
        return x
    # pool first where larger (cheap, what AT/NST do), then interpolate where smaller
    pooled = (min(h, th), min(w, tw))
    if pooled != (h, w):
        x = F.adaptive_avg_pool2d(x, pooled)
    if pooled != (th, tw):
        x = F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False)
    return x


class MapAdapter(nn.Sequential):
    """(B, Cs, Hs, Ws) -> (B, Ct, Ht, Wt): optional resize, then 1x1 conv + BatchNorm2d."""


def _shape_error(student_shape: Sequence[int], teacher_shape: Sequence[int], student_tap: str,
                 teacher_tap: str, why: str) -> ValueError:
    return ValueError(
        f"cannot adapt student '{student_tap}' of shape {tuple(student_shape)} to teacher '{teacher_tap}' of "
        f"shape {tuple(teacher_shape)}: {why}. Tap layers whose outputs have the same kind of shape on both "
        "sides (two feature maps (B, C, H, W), two vectors (B, D) such as the penultimate embedding "
        "'linear:input', or two token sequences (B, L, D)), or use a relation-based method (sp, rkd, pkt) "
        "that compares samples with each other and needs no adapter"
    )


def build_adapter(student_shape: Sequence[int], teacher_shape: Sequence[int], student_tap: str = "student",
                  teacher_tap: str = "teacher", learn_when_equal: bool = True) -> nn.Module:
    """An adapter mapping a student feature of `student_shape` onto `teacher_shape` (see module doc)."""
    s, t = tuple(int(d) for d in student_shape), tuple(int(d) for d in teacher_shape)
    if len(s) != len(t):
        raise _shape_error(s, t, student_tap, teacher_tap, f"a {len(s)}-D and a {len(t)}-D tensor")
    if len(s) == 2:
        if s[1] == t[1] and not learn_when_equal:
            return nn.Identity()
        return nn.Linear(s[1], t[1])
    if len(s) == 3:
        if s[1] != t[1]:
            raise _shape_error(s, t, student_tap, teacher_tap,
                               f"the sequence lengths differ ({s[1]} vs {t[1]})")
        if s[2] == t[2] and not learn_when_equal:
            return nn.Identity()
        return nn.Linear(s[2], t[2])
    if len(s) == 4:
        layers: list[nn.Module] = []
        if s[2:] != t[2:]:
            layers.append(Resize2d((t[2], t[3])))
        if s[1] != t[1] or learn_when_equal:
            layers += [nn.Conv2d(s[1], t[1], kernel_size=1, bias=False), nn.BatchNorm2d(t[1])]
        if not layers:
            return nn.Identity()
        return MapAdapter(*layers)
    raise _shape_error(s, t, student_tap, teacher_tap, f"{len(s)}-D tensors are not supported")


def feature_tensor(value: object, tap: str, owner: str) -> torch.Tensor:
    """The tapped output as a tensor, or an error that names the tap and suggests a selector."""
    if torch.is_tensor(value):
        return value
    raise ValueError(
        f"{owner} tap '{tap}' gave a {type(value).__name__}, not a tensor; narrow it with a selector, "
        f"e.g. '{tap}:0' or '{tap}:last_hidden_state'"
    )


__all__ = ["MapAdapter", "Resize2d", "build_adapter", "feature_tensor", "resize_map"]
