"""Batch-level input preprocessing: scaling, standard augmentations, normalisation.

Augmentation runs on whole batches (on the training device) and draws each sample's parameters
from a counter-based generator keyed by (seed, epoch, sample index, draw) instead of a stateful
RNG. So the same sample in the same epoch gets the same crop and flip whatever the batch order,
the number of loader workers, or an interruption and resume: runs reproduce, and a teacher-output
cache can replay exactly the views it was computed on. The key goes through a full-avalanche
integer mixer, so the draws behave like independent ones: across epochs (a sample visits all of
its crops), across neighbouring indices and between a sample's parameters (tested against the
statistics of independent draws). An earlier affine function of (index, epoch) did not: a sample
saw 10 of its 25 jitter offsets in 80 epochs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kdistill.errors import BadInput

_MASK32 = 0xFFFF_FFFF
# a fixed odd constant per key part, so (seed, epoch, index) and its permutations hash apart
_PART_SALTS = (0x9E37_79B9, 0x85EB_CA6B, 0xC2B2_AE35, 0x27D4_EB2F)


def _mul32(x: torch.Tensor, constant: int) -> torch.Tensor:
    """x * constant mod 2^32 for int64 tensors in [0, 2^32), with no intermediate above 2^49
    (a plain product could pass 2^63, and signed overflow is not something to rely on)."""
    low = x * (constant & 0xFFFF)
    high = ((x * (constant >> 16)) & 0xFFFF) << 16
    return (low + high) & _MASK32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit integer hash with full avalanche (Wellons' "lowbias32" constants)."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB_352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846C_A68B)
    return x ^ (x >> 16)


def hash_uniform_ints(seed: int, epoch: int, indices: torch.Tensor, draws: int) -> torch.Tensor:
    """(N, draws) pseudo-random ints in [0, 2^32), a pure function of the arguments.

    Each key part is folded in through the mixer in turn (a sponge-like chain), so changing any
    one of seed, epoch, index or draw number changes every output bit with probability 1/2.
    """
    indices = indices.long().reshape(-1)
    state = mix32(torch.tensor((seed & _MASK32) ^ _PART_SALTS[0], dtype=torch.long))
    state = mix32(state ^ ((epoch & _MASK32) ^ _PART_SALTS[1]))
    per_sample = mix32(state ^ (indices & _MASK32) ^ _PART_SALTS[2])
    per_sample = mix32(per_sample ^ ((indices >> 32) & _MASK32))
    return torch.stack([mix32(per_sample ^ mix32(torch.tensor(draw ^ _PART_SALTS[3]))) for draw in range(draws)],
                       dim=1)


def uniform_below(values: torch.Tensor, bound: int) -> torch.Tensor:
    """Map 32-bit uniform ints to [0, bound) by the high bits (Lemire's multiply-shift)."""
    return (values * bound) >> 32


@dataclass(frozen=True)
class Augment:
    """Random crop with zero padding and horizontal flip (the CIFAR recipe), per sample."""

    crop_padding: int = 0
    horizontal_flip: bool = False
    seed: int = 0

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.horizontal_flip

    def parameters(self, indices: torch.Tensor, epoch: int) -> torch.Tensor:
        """(N, 3) ints: row offset, column offset, flip; what a replay needs to redo a view."""
        draws = hash_uniform_ints(self.seed, epoch, indices, 3)
        span = 2 * self.crop_padding + 1
        flips = uniform_below(draws[:, 2], 2) * int(self.horizontal_flip)
        return torch.stack([uniform_below(draws[:, 0], span), uniform_below(draws[:, 1], span), flips], 1)

    def __call__(self, images: torch.Tensor, indices: torch.Tensor, epoch: int) -> torch.Tensor:
        if not self.active:
            return images
        params = self.parameters(indices.cpu(), epoch).to(images.device)
        return apply_augmentation(images, params, self.crop_padding)


def apply_augmentation(images: torch.Tensor, params: torch.Tensor, padding: int) -> torch.Tensor:
    batch, _, height, width = images.shape
    if padding > 0:
        padded = F.pad(images, (padding, padding, padding, padding))
        rows = params[:, 0, None] + torch.arange(height, device=images.device)  # (B, H)
        cols = params[:, 1, None] + torch.arange(width, device=images.device)  # (B, W)
        b = torch.arange(batch, device=images.device)[:, None, None]
        images = padded.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    flip = params[:, 2].bool()
    if flip.any():
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    return images.contiguous()


def to_float(inputs: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [0, 1]; float inputs and non-tensors (token dicts) pass through."""
    if torch.is_tensor(inputs) and inputs.dtype == torch.uint8:
        return inputs.float().div_(255.0)
    return inputs


class Normalize(torch.nn.Module):
    """Per-channel (x - mean) / std; each model (teacher or student) has its own."""

    def __init__(self, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        super().__init__()
        self.enabled = mean is not None and std is not None
        self.register_buffer("mean", torch.tensor(mean or [0.0]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std or [1.0]).view(1, -1, 1, 1), persistent=False)
        if 1 < self.mean.numel() != self.std.numel() > 1:
            raise BadInput(f"the normalisation has {self.mean.numel()} mean values but {self.std.numel()} std "
                           "values; give as many of each (1, or one per channel)")

    def same_as(self, other: Normalize) -> bool:
        """True when both do the same thing (so one normalised tensor can serve both models)."""
        if not (self.enabled or other.enabled):
            return True
        if not (self.enabled and other.enabled) or self.mean.shape != other.mean.shape:
            return False
        return torch.equal(self.mean.cpu(), other.mean.cpu()) and torch.equal(self.std.cpu(), other.std.cpu())

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if not self.enabled or not torch.is_tensor(inputs) or not inputs.is_floating_point():
            return inputs
        if inputs.dim() < 2:
            raise ValueError(f"normalisation needs a batch of shape (B, C, ...), got {tuple(inputs.shape)}")
        values = max(self.mean.numel(), self.std.numel())
        if values > 1 and values != inputs.shape[1]:  # would broadcast the batch to `values` channels
            raise BadInput(f"the normalisation has {values} channel values (mean/std) for inputs with "
                           f"{inputs.shape[1]} channel{'s' if inputs.shape[1] != 1 else ''}; give 1 value or one "
                           f"per channel (inputs of shape {tuple(inputs.shape)})")
        shape = (1, -1) + (1,) * (inputs.dim() - 2)  # per channel (dim 1) for maps, vectors and sequences
        return (inputs - self.mean.view(shape).to(inputs.device)) / self.std.view(shape).to(inputs.device)


def as_normalize(norm: Normalize | tuple | None) -> Normalize:
    """A `Normalize` from one, from a `(mean, std)` pair, or a no-op from None."""
    if isinstance(norm, Normalize):
        return norm
    if norm is None:
        return Normalize(None, None)
    mean, std = norm
    return Normalize(mean, std)
