"""A batch sampler whose order is a function of (seed, epoch) and which can start mid-epoch.

Starting mid-epoch without fetching the skipped batches is what lets an interrupted run resume
exactly. With several processes each rank takes a strided share of every global batch, so N
processes with per-rank batch B see the same global batches as one process with batch N*B.

Given per-sample lengths (text), the sampler groups samples of similar length into the same batch:
each run of `group_batches` global batches of the shuffled order is sorted by length and cut into
batches, and the batches' order is shuffled again (so long and short batches do not alternate in
a fixed cycle). A padded text batch costs its longest member's length, so this is where the time
goes: on SST-2's transfer set random batches of 32 pad to 49.7 tokens on average, grouped ones to
22.4, for texts of 21.8. The order stays a function of (seed, epoch), so resume and DDP hold.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from kdistill.engine.seed import derive_seed


class EpochBatchSampler(Sampler[list[int]]):
    def __init__(self, num_samples: int, batch_size: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1,
                 lengths: torch.Tensor | None = None, group_batches: int = 50) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if lengths is not None and len(lengths) != num_samples:
            raise ValueError(f"lengths: {len(lengths)} values for {num_samples} samples")
        if group_batches < 1:
            raise ValueError("group_batches must be >= 1")
        self.num_samples = num_samples
        self.batch_size = batch_size  # per process
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.lengths = None if lengths is None else torch.as_tensor(lengths)
        self.group_batches = group_batches
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.global_batch_size)
        # a last global batch too small to give every process a sample is dropped
        keep_rest = rest and not self.drop_last and rest >= self.world_size
        return full + (1 if keep_rest else 0)

    def order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_samples)
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, 17))
        return torch.randperm(self.num_samples, generator=generator)

    def global_batches(self) -> list[torch.Tensor]:
        """This epoch's global batches, in the order they are trained on."""
        order, size, count = self.order(), self.global_batch_size, len(self)
        if self.lengths is None or not self.shuffle:
            return [order[batch * size : (batch + 1) * size] for batch in range(count)]
        span = size * self.group_batches
        grouped = torch.cat([piece[torch.argsort(self.lengths[piece], descending=True, stable=True)]
                             for piece in order.split(span)])
        batches = [grouped[batch * size : (batch + 1) * size] for batch in range(count)]
        full = sum(len(batch) == size for batch in batches)  # a partial last batch stays last
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, 19))
        return [batches[i] for i in torch.randperm(full, generator=generator).tolist()] + batches[full:]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.global_batches()
        for batch in range(self.start_batch, len(self)):
            yield batches[batch][self.rank :: self.world_size].tolist()
