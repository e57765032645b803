"""A batch sampler whose order is a function of (seed, epoch) and which can start mid-epoch.

Starting mid-epoch without fetching the skipped batches is what lets an interrupted run resume
exactly. With several processes each rank takes a strided share of every global batch, so N
processes with per-rank batch B see the same global batches as one process with batch N*B.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from kdistill.engine.seed import derive_seed


class EpochBatchSampler(Sampler[list[int]]):
    def __init__(self, num_samples: int, batch_size: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.num_samples = num_samples
        self.batch_size = batch_size  # per process
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
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

    def __iter__(self) -> Iterator[list[int]]:
        order = self.order()
        size = self.global_batch_size
        for batch in range(self.start_batch, len(self)):
            global_batch = order[batch * size : (batch + 1) * size]
            yield global_batch[self.rank :: self.world_size].tolist()
