"""A user's own training DataLoader under DDP: re-batched so each process takes its share.

Passed through unchanged, every process would train on every batch: N times the data per step,
and not the run one process makes. Where the loader's batches are plain (a torch BatchSampler
over a RandomSampler or SequentialSampler), it is rebuilt on the same data set, collate_fn,
workers and drop_last with kdistill's own sampler: its batch size is the global batch, split over
the processes as `Distiller(batch_size=...)` is, so N processes see the batches one process would.
Shuffling then follows kdistill's (seed, epoch) order, which is what makes a run resumable
mid-epoch; a sequential loader keeps its order. A loader that is already sharded
(DistributedSampler) passes through. Anything else (a custom sampler or batch sampler, an
IterableDataset) cannot be split exactly, and is refused with the fix: pass the Dataset.
"""

from __future__ import annotations

import logging

import torch
from torch.utils.data import BatchSampler, DataLoader, IterableDataset, RandomSampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler

from kdistill.collectives import World
from kdistill.engine.sampler import EpochBatchSampler
from kdistill.errors import BadInput

LOG = logging.getLogger("kdistill")
PASS_DATASET = "pass the Dataset to fit() instead (kdistill shards it), or shard the loader yourself with a " \
               "DistributedSampler"


def _refusal(loader: DataLoader, world: World) -> str | None:
    """Why this loader cannot be re-batched exactly over the processes, or None."""
    what = f"fit(train=DataLoader) under DDP ({world.world_size} processes)"
    if isinstance(loader.dataset, IterableDataset):
        return f"{what}: an IterableDataset cannot be split into per-process shards by kdistill; {PASS_DATASET}"
    if loader.batch_size is None:
        return f"{what}: it yields unbatched samples (batch_size=None), which cannot be split; {PASS_DATASET}"
    if type(loader.batch_sampler) is not BatchSampler:
        return (f"{what}: its batch_sampler {type(loader.batch_sampler).__name__} decides the batches itself, so "
                f"they cannot be split over the processes exactly; {PASS_DATASET}")
    sampler = loader.sampler
    if type(sampler) not in (RandomSampler, SequentialSampler):
        return (f"{what}: its sampler {type(sampler).__name__} cannot be split over the processes exactly; "
                f"{PASS_DATASET}")
    if isinstance(sampler, RandomSampler) and (sampler.replacement or sampler.num_samples != len(loader.dataset)):
        return (f"{what}: its RandomSampler draws with replacement or another number of samples, which kdistill's "
                f"per-epoch order cannot reproduce; {PASS_DATASET}")
    if loader.batch_size % world.world_size:
        return (f"{what}: its batch_size {loader.batch_size} is the global batch and must be divisible by the "
                f"{world.world_size} processes; use a multiple of {world.world_size}")
    return None


def shard_user_loader(loader: DataLoader, *, seed: int, world: World) -> DataLoader:
    """The loader itself on one process or when already sharded; else its per-process rebuild
    (see the module doc), or BadInput where that cannot be exact."""
    if not world.distributed or isinstance(loader.sampler, DistributedSampler):
        return loader
    if isinstance(loader.batch_sampler, EpochBatchSampler) and loader.batch_sampler.world_size == world.world_size:
        return loader  # kdistill's own, already per process
    problem = _refusal(loader, world)
    if problem is not None:
        raise BadInput(problem)
    shuffle = isinstance(loader.sampler, RandomSampler)
    sampler = EpochBatchSampler(len(loader.dataset), loader.batch_size // world.world_size, shuffle=shuffle,
                                seed=seed, drop_last=loader.drop_last, rank=world.rank, world_size=world.world_size)
    if world.is_main:
        order = f"shuffled each epoch from seed {seed} (kdistill's order)" if shuffle else "in order"
        LOG.warning("kdistill: the training DataLoader is re-batched for %d processes: each takes %d of every %d "
                    "samples, %s", world.world_size, sampler.batch_size, loader.batch_size, order)
    extra = {"prefetch_factor": loader.prefetch_factor} if loader.num_workers > 0 else {}
    return DataLoader(loader.dataset, batch_sampler=sampler, collate_fn=loader.collate_fn,
                      num_workers=loader.num_workers, pin_memory=loader.pin_memory, timeout=loader.timeout,
                      worker_init_fn=loader.worker_init_fn, multiprocessing_context=loader.multiprocessing_context,
                      persistent_workers=loader.persistent_workers, generator=torch.Generator().manual_seed(seed),
                      **extra)
