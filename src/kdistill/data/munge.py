"""MUNGE (Bucila, Caruana & Niculescu-Mizil 2006, "Model Compression"): synthetic tabular rows for a
transfer set, so that a student can match its teacher beyond the training rows.

Distillation only makes the student agree with the teacher where it is shown the teacher's
outputs. With a small table that is the training rows alone, and a student that already fits them
learns nothing new (NSL-KDD, docs/benchmarks.md). Bucila et al. label extra, synthetic rows with
the teacher: MUNGE draws each one from a training row e and its nearest neighbour e' (distance on
standardised features), attribute by attribute: with probability `swap_prob` a continuous value is
drawn from a normal around the neighbour's value with standard deviation |e_a - e'_a| / `spread`,
and a nominal value (a one-hot block) is the neighbour's; otherwise e's value is kept. The rows stay
on the data's manifold (between neighbours), unlike independent per-attribute draws, which the
paper found too broad. One synthetic row per training row and pass here; `copies` passes.

Labels: synthetic rows have none; only methods that read the teacher (soft targets) may train on
them. Draws come from one seeded `torch.Generator`: the same arguments give the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kdistill.errors import BadInput


def nominal_groups(features: Sequence[str]) -> list[list[int]]:
    """The one-hot blocks of encoded feature names (`column=value`, as kdistill.data.tabular names
    them): each block is one nominal attribute."""
    blocks: dict[str, list[int]] = {}
    for index, name in enumerate(features):
        if "=" in name:
            blocks.setdefault(name.split("=", 1)[0], []).append(index)
    return list(blocks.values())


def nearest_neighbours(points: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """Index of each row's nearest other row (Euclidean), computed in chunks to bound memory."""
    found = torch.empty(len(points), dtype=torch.long)
    for start in range(0, len(points), chunk):
        distances = torch.cdist(points[start:start + chunk], points)
        rows = torch.arange(start, min(start + chunk, len(points)))
        distances[torch.arange(len(rows)), rows] = float("inf")  # not itself
        found[rows] = distances.argmin(1)
    return found


def munge(inputs: torch.Tensor, copies: int = 4, swap_prob: float = 0.5, spread: float = 1.0,
          nominal: Sequence[Sequence[int]] = (), seed: int = 0) -> torch.Tensor:
    """`copies` x N synthetic rows from the (N, F) float `inputs`; `nominal`: the column indices of
    each one-hot block (swapped whole)."""
    if inputs.dim() != 2 or not inputs.is_floating_point():
        raise BadInput(f"munge: needs (rows, features) float inputs, got {tuple(inputs.shape)} {inputs.dtype}")
    if len(inputs) < 2:
        raise BadInput("munge: needs at least two rows (each row is paired with its nearest neighbour)")
    if copies < 1 or not 0 <= swap_prob <= 1 or spread <= 0:
        raise BadInput(f"munge: copies >= 1, swap_prob in [0, 1], spread > 0 (got {copies}, {swap_prob}, {spread})")
    blocks = [list(block) for block in nominal]
    in_blocks = {column for block in blocks for column in block}
    if in_blocks and (min(in_blocks) < 0 or max(in_blocks) >= inputs.shape[1]):
        raise BadInput(f"munge: nominal columns outside the {inputs.shape[1]} features")
    continuous = [c for c in range(inputs.shape[1]) if c not in in_blocks]
    x = inputs.double()
    std = x.std(0, unbiased=False)
    scaled = (x - x.mean(0)) / torch.where(std > 1e-12, std, torch.ones_like(std))
    neighbour = x[nearest_neighbours(scaled)]
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(copies):
        row = x.clone()
        if continuous:
            cols = torch.tensor(continuous)
            swap = torch.rand(len(x), len(cols), generator=generator, dtype=torch.float64) < swap_prob
            noise = torch.randn(len(x), len(cols), generator=generator, dtype=torch.float64)
            drawn = neighbour[:, cols] + noise * (x[:, cols] - neighbour[:, cols]).abs() / spread
            row[:, cols] = torch.where(swap, drawn, x[:, cols])
        for block in blocks:
            swap = torch.rand(len(x), 1, generator=generator, dtype=torch.float64) < swap_prob
            row[:, block] = torch.where(swap, neighbour[:, block], x[:, block])
        rows.append(row)
    return torch.cat(rows).to(inputs.dtype)


__all__ = ["munge", "nearest_neighbours", "nominal_groups"]
