"""Data loaders whose order is a function of (seed, epoch): what exact resume and DDP rely on."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset, default_collate

from kdistill.data.base import InMemoryDataset, as_in_memory, batch_collate
from kdistill.engine.distributed import World
from kdistill.engine.sampler import EpochBatchSampler
from kdistill.engine.user_loader import shard_user_loader
from kdistill.errors import BadInput

LOG = logging.getLogger("kdistill")
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name))


def own_process_group(worker_id: int) -> None:
    """A DataLoader worker in a process group of its own. Stops are sent to the training process's
    group (torchrun's agent, `timeout`, schedulers); torch's workers die on a SIGTERM their parent did
    not send, and the training process would then fail mid-step instead of stopping after it and
    keeping a checkpoint. Out of the group, the workers are ended by their parent as usual.

    The worker starts with the stops blocked (`StopSafeLoader`): a stop sent to the old group before
    it left is waiting here, and is dropped, since the parent got it too."""
    if hasattr(os, "setpgid"):
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
    if hasattr(signal, "pthread_sigmask"):
        for _ in signal.sigpending() & set(STOP_SIGNALS):
            signal.sigtimedwait(STOP_SIGNALS, 0)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


class StopSafeLoader(DataLoader):
    """A DataLoader whose workers start with the stop signals blocked until they have left the
    training process's group (`own_process_group`). Without it, a stop arriving between a worker's
    fork and its `worker_init_fn` (each evaluation forks new workers) killed the worker, and the run
    failed with "DataLoader worker exited unexpectedly" instead of keeping a checkpoint (seen in CI)."""

    def _get_iterator(self):
        if self.num_workers == 0 or not hasattr(signal, "pthread_sigmask"):
            return super()._get_iterator()
        before = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            return super()._get_iterator()
        finally:  # a stop that came meanwhile reaches this process's handler now
            signal.pthread_sigmask(signal.SIG_SETMASK, before)


class EvaluationLoaders:
    """The validation set's loader, kept for the length of a fit, its workers forked as the fit starts.

    A new loader per evaluation forked new workers at each epoch's end, just after the last step's
    gradient exchange, when torch's own threads enter and leave Python. On CPython before 3.12 (3.11.7
    here) a fork at such a moment can hang the new worker for ever in its after-fork code: the
    interpreter's thread-list lock is copied locked (CPython gh-112275). Seen here in a two-process
    test stopped after its first epoch: 3 hangs in 14 runs with a loader per evaluation, 2 in 17 with
    the loader kept but forked at the first evaluation, none in 20 as now. So the validation workers
    are forked before training starts, next to the training ones, and end with the fit (`close`)."""

    def __init__(self) -> None:
        self.data: Dataset | None = None
        self.loader: DataLoader | None = None

    def open(self, data: Dataset | DataLoader | None, build: Callable[[], DataLoader], num_workers: int) -> None:
        """Keep `data`'s evaluation loader until `close`, its workers forked now (a first iterator)."""
        self.close()
        if data is not None and num_workers > 0 and not isinstance(data, DataLoader):
            self.loader = build()
            iter(self.loader)
            self.data = data

    def close(self) -> None:
        self.data, self.loader = None, None

    def get(self, data: Dataset | DataLoader, build: Callable[[], DataLoader]) -> DataLoader:
        return self.loader if self.loader is not None and data is self.data else build()


def training_lengths(data: Dataset | DataLoader) -> torch.Tensor:
    """Each training sample's length, for `group_by_length`: a kdistill text data set has them."""
    lengths = getattr(data, "lengths", None)
    if isinstance(data, DataLoader) or lengths is None or len(lengths) != len(data):
        what = "a DataLoader (kdistill cannot re-batch it)" if isinstance(data, DataLoader) else \
            f"a {type(data).__name__} without a `lengths` tensor of one length per sample"
        raise BadInput(f"group_by_length (data.group_by_length in a config) needs a data set with per-sample "
                       f"lengths, as kdistill's text data sets have; got {what}. Turn group_by_length off, or "
                       f"give the data set a `lengths` attribute.")
    return torch.as_tensor(lengths)


def make_loader(data: Dataset | DataLoader, *, train: bool, batch_size: int, eval_batch_size: int, seed: int,
                world: World, device: torch.device, num_workers: int = 0, drop_last: bool = False,
                group_by_length: bool = False) -> DataLoader:
    """A training loader (shuffled per epoch, each process its share of the global batch) or an
    evaluation loader (in order; every process evaluates the whole set). A DataLoader passes through,
    except a training one under DDP, which is re-batched per process or refused (user_loader.py).
    `group_by_length` batches training samples of similar length together (the data set's `lengths`)."""
    data = as_in_memory(data)
    lengths = training_lengths(data) if train and group_by_length else None
    if isinstance(data, DataLoader):
        check_collate(data)
        return shard_user_loader(data, seed=seed, world=world) if train else data
    if train:
        if batch_size % world.world_size:
            raise ValueError(f"batch_size {batch_size} (global) must be divisible by the "
                             f"{world.world_size} processes")
        sampler = EpochBatchSampler(len(data), batch_size // world.world_size, shuffle=True, seed=seed,
                                    drop_last=drop_last, rank=world.rank, world_size=world.world_size,
                                    lengths=lengths)
    else:
        sampler = EpochBatchSampler(len(data), eval_batch_size, shuffle=False, seed=seed)
    return StopSafeLoader(
        data,
        batch_sampler=sampler,
        collate_fn=batch_collate,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0,
        worker_init_fn=own_process_group if num_workers > 0 else None,
        # its own generator: creating an iterator must not draw from the global RNG, or a run resumed
        # mid-epoch would shift every later dropout mask by one draw
        generator=torch.Generator().manual_seed(seed),
    )


def check_collate(loader: DataLoader) -> None:
    """A user's DataLoader over a kdistill in-memory data set (or torch's Subset of one) with torch's
    default collate_fn fails at its first batch with a bare `KeyError: 0`: say why, and the fix."""
    base = loader.dataset
    while isinstance(base, Subset):
        base = base.dataset
    if isinstance(base, InMemoryDataset) and loader.batch_size is not None and loader.collate_fn is default_collate:
        raise BadInput("the DataLoader is over a kdistill in-memory data set, which makes each batch whole "
                       "(__getitems__), and torch's default collate_fn cannot take a made batch; give "
                       "DataLoader(..., collate_fn=kdistill.data.batch_collate), or pass the data set itself")


def _generators(loader: DataLoader) -> list[torch.Generator]:
    """The torch generators a loader's order may draw from: its own, its sampler's, its batch sampler's
    and the sampler inside that (also where a BatchSampler is passed as `sampler` with batch_size None)."""
    holders = (loader, loader.sampler, loader.batch_sampler, getattr(loader.batch_sampler, "sampler", None),
               getattr(loader.sampler, "sampler", None))
    found = {id(g): g for g in (getattr(h, "generator", None) for h in holders) if isinstance(g, torch.Generator)}
    return list(found.values())


def user_loader_rng(loader: DataLoader) -> list[torch.Tensor]:
    """The states of a user's loader's generators, which a checkpoint keeps: the loader a resumed run
    builds starts them from the user's seed again, and would replay the first epochs' shuffles and
    workers' seeds. kdistill's own loader orders by (seed, epoch) and keeps none. Under DDP rank 0
    writes the checkpoint, so every rank gets rank 0's states back: exact where each rank's loader
    was given the same generator seed, as with torch's DistributedSampler (which draws its order from
    seed and epoch, so the generator seeds only the workers)."""
    if isinstance(loader.batch_sampler, EpochBatchSampler):
        return []
    return [g.get_state() for g in _generators(loader)]


def restore_user_loader_rng(loader: DataLoader, states: list[torch.Tensor] | None) -> None:
    """Put a user's loader's generators where the checkpoint left them (None: a checkpoint from before
    they were kept, which resumes as it did)."""
    if states is None or isinstance(loader.batch_sampler, EpochBatchSampler):
        return
    generators = _generators(loader)
    if len(generators) != len(states):
        raise ValueError(f"the checkpoint holds the state of {len(states)} generator(s) of the training DataLoader "
                         f"(its own, its sampler's), this one has {len(generators)}: resume with the same DataLoader "
                         "(shuffle and generator) the run was started with")
    for generator, state in zip(generators, states, strict=True):
        generator.set_state(state)
    if loader.num_workers > 0 and loader.persistent_workers:
        LOG.warning("kdistill: resuming with the training DataLoader's persistent workers started afresh: the order "
                    "of the batches is the uninterrupted run's, but random draws inside the workers (random "
                    "transforms in the data set) are not; without persistent_workers they are")


NO_BATCH = ("the training data gives no batch: it is empty, or smaller than the batch size with drop_last; give "
            "more samples or a smaller batch size")


def first_batch(loader: DataLoader) -> Any:
    """kdistill's own loader's first batch, leaving its generator (the workers' seeds) as it was: its
    sampler orders by (seed, epoch) alone, so reading a batch before training changes no epoch's
    order, and a run resumed mid-epoch starts its pass where it stopped."""
    generators = _generators(loader)
    states = [g.get_state() for g in generators]
    try:
        return next(iter(loader))
    except StopIteration:
        raise BadInput(NO_BATCH) from None
    finally:
        for g, state in zip(generators, states, strict=True):
            g.set_state(state)


@dataclass
class BegunPass:
    """Epoch 0's pass over a user's loader, begun by the build: its batches (the build's first, then
    the rest) and the global RNG state its first batch left, where epoch 0's training goes on."""

    batches: Iterator[Any]
    rng_state: torch.Tensor


def first_pass_batch(loader: DataLoader, epoch_seed: int) -> tuple[Any, BegunPass]:
    """A user's loader's first batch, and epoch 0's pass with that batch put back in front: the
    batch the methods' parts are built from is the first of the pass epoch 0 trains on, so the run
    reads the loader exactly as the user's own loop over it does. A separate read before training
    would not: a shuffled loader draws its epoch's order from its generator when iterated (every
    epoch one permutation ahead), persistent workers keep the seed of their first iterator, a
    one-shot stream (a queue, a socket) would lose that batch, and a data set drawing from Python's
    or NumPy's random state would be one batch of draws ahead. The pass begins under the epoch's
    seed, as an epoch's own pass does (the epoch told to the sampler, then torch's global generator
    for what draws from it: a shuffle without a generator, the workers' seeds, random transforms),
    and epoch 0 goes on from the state its first batch left; the build gets the global generator
    back as it was."""
    state = torch.get_rng_state()
    torch.manual_seed(epoch_seed)
    try:
        start_epoch(loader, 0)
        iterator = iter(loader)
        batch = next(iterator)
        begun = BegunPass(itertools.chain([batch], iterator), torch.get_rng_state())
    except StopIteration:
        raise BadInput(NO_BATCH) from None
    finally:
        torch.set_rng_state(state)
    return batch, begun


def build_batch(loader: DataLoader, epoch_seed: int) -> tuple[Any, BegunPass | None]:
    """The batch the Distiller builds the methods' parts from, and for a user's loader the pass it
    began, which epoch 0 continues (None for kdistill's own loader, which can be read again)."""
    if isinstance(loader.batch_sampler, EpochBatchSampler):
        start_epoch(loader, 0)
        return first_batch(loader), None
    return first_pass_batch(loader, epoch_seed)


def epoch_batches(loader: DataLoader, epoch: int, start_step: int, begun: BegunPass | None) -> Iterable[Any]:
    """One epoch's batches. Epoch 0 of a user's loader goes on from the pass the build began, with the
    global RNG where that pass's first batch left it; any other epoch, and a resumed run's first,
    starts a pass of its own, the sampler told the epoch (and kdistill's own, the step; a user's
    loader resumed mid-epoch is refused there, unless the stop came after the epoch's last step)."""
    if start_step and not isinstance(loader.batch_sampler, EpochBatchSampler) \
            and start_step == batches_per_epoch(loader):
        return []  # stopped after the epoch's last step, before its end: no batch of the pass is left
    if begun is None or epoch != 0 or start_step:
        start_epoch(loader, epoch, start_step)
        return loader
    torch.set_rng_state(begun.rng_state)
    return begun.batches


def batches_per_epoch(loader: DataLoader) -> int:
    """The number of batches an epoch gives, which the learning-rate schedule, the progress bar and
    the fractional epoch that methods' schedules read all count in."""
    try:
        return len(loader)
    except TypeError:  # torch's DataLoader asks the data set (a stream) or the sampler for the length
        if isinstance(loader.dataset, IterableDataset):
            what = (f"{type(loader.dataset).__name__} is an IterableDataset without __len__; give the data set a "
                    "__len__ (its samples per epoch), or pass a map-style Dataset")
        else:
            sampler = loader.batch_sampler if loader.batch_sampler is not None else loader.sampler
            what = (f"its {type(sampler).__name__} has no __len__ (an endless sampler?); give it one (the samples "
                    "or batches per epoch)")
        raise BadInput(f"the training data has no length: {what}. kdistill counts the learning-rate schedule and "
                       "the progress of an epoch in batches") from None


def start_epoch(loader: DataLoader, epoch: int, start_step: int = 0) -> None:
    """Tell the loader's sampler the epoch (and kdistill's own, the step to start from). A user's
    sampler or batch sampler with `set_epoch` is told too, as torch's DistributedSampler (and
    bucketing batch samplers) need: otherwise they shuffle every epoch the same way; so is an
    IterableDataset with `set_epoch` (Hugging Face's streaming data sets reshuffle through it)."""
    if isinstance(loader.batch_sampler, EpochBatchSampler):
        loader.batch_sampler.set_epoch(epoch, start_step)
        return
    if start_step:
        raise RuntimeError("mid-epoch resume needs kdistill's own loader; pass a Dataset to fit()")
    candidates = (loader.sampler, loader.batch_sampler, getattr(loader.batch_sampler, "sampler", None),
                  loader.dataset if isinstance(loader.dataset, IterableDataset) else None)
    for sampler in {id(s): s for s in candidates}.values():
        if callable(getattr(sampler, "set_epoch", None)):
            sampler.set_epoch(epoch)
