"""Building a teacher cache, by one process or shared out over the processes of a DDP run.

The build writes into a private staging directory and publishes it under the cache key with one
rename after `meta.json` (written last, atomically) says it is complete, so processes that build
the same cache at once (a benchmark's parallel runs) never see or damage each other's halves.

Under DDP every rank computes its share of the in-order batches (batch b of each view goes to
rank b mod N) into the same memory-mapped arrays, which rank 0 created: the build takes 1/N of
the time a single builder took while the others waited, which on a large data set could exceed
the process group's timeout. Each rank computes the same batches one process would, so the
arrays are the same bytes. Then the ranks agree that every sample of every view was written and
that no rank failed, and rank 0 alone marks the cache complete and publishes it. (Processes on
several machines do not share a memory map safely: there rank 0 builds alone; see `_one_machine`.)
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from kdistill.collectives import all_reduce_sum, broadcast_object, current_world
from kdistill.data.transforms import Augment, Normalize, to_float
from kdistill.engine.batch import call_model, logits_of, split_batch, to_device
from kdistill.engine.progress import bar_task

LOG = logging.getLogger("kdistill")


def rank_batches(loader: Any, rank: int, world_size: int) -> Any:
    """This rank's share of the loader's batches (b mod N == rank), fetching no other batch.
    A loader without a batch sampler is iterated whole and filtered."""
    if world_size == 1:
        return loader
    sampler = getattr(loader, "batch_sampler", None)
    if isinstance(loader, DataLoader) and sampler is not None:
        batches = [batch for b, batch in enumerate(sampler) if b % world_size == rank]
        # its own generator: an iterator would otherwise draw from the global RNG, and rank 0's RNG
        # (from which the methods' parts are built and broadcast) would differ from one process's
        return DataLoader(loader.dataset, batch_sampler=batches, collate_fn=loader.collate_fn,
                          num_workers=loader.num_workers, pin_memory=loader.pin_memory, generator=torch.Generator(),
                          worker_init_fn=loader.worker_init_fn)
    return [batch for b, batch in enumerate(loader) if b % world_size == rank]


def _forward(cache: Any, teacher: nn.Module, batch: Any, view: int, normalize: Normalize, augment: Augment,
             device: torch.device, layer_taps: Any) -> tuple[np.ndarray, torch.Tensor, dict[str, torch.Tensor]]:
    """(sample indices, logits, tapped features) of one batch's view `view`."""
    inputs, _, indices = split_batch(to_device(batch, device))
    if indices is None:
        raise ValueError("the teacher cache needs sample indices; yield an 'index' with each sample")
    inputs = to_float(inputs)
    if augment.active:
        inputs = augment(inputs, indices, view)
    if layer_taps is not None:
        layer_taps.clear()
    logits = logits_of(call_model(teacher, normalize(inputs)))
    features = layer_taps.collect() if cache.taps else {}
    return indices.cpu().numpy(), logits, features


def _feature_shapes(cache: Any, teacher: nn.Module, loader: Any, normalize: Normalize, augment: Augment,
                    device: torch.device, layer_taps: Any) -> dict[str, tuple[int, ...]]:
    """The per-sample shape of each tapped layer, from the first batch (every rank gets the same)."""
    if not cache.taps:
        return {}
    _, _, features = _forward(cache, teacher, next(iter(loader)), 0, normalize, augment, device, layer_taps)
    return {tap: tuple(features[tap].shape[1:]) for tap in cache.taps}


def _compute(cache: Any, teacher: nn.Module, loader: Any, normalize: Normalize, augment: Augment,
             device: torch.device, progress: Any, layer_taps: Any, views: int) -> np.ndarray:
    """Write this rank's batches of every view; returns how often each sample was written."""
    seen = np.zeros(cache.num_samples, dtype=np.int64)
    with bar_task(progress, "caching teacher outputs", views * len(loader)) as advance:
        for view in range(views):
            for batch in loader:
                rows, logits, features = _forward(cache, teacher, batch, view, normalize, augment, device, layer_taps)
                cache.store(view, rows, logits, features)
                np.add.at(seen, rows, 1)
                advance()
    return seen


@torch.inference_mode()
def build_cache(cache: Any, teacher: nn.Module, loader: Any, normalize: Normalize, augment: Augment,
                device: torch.device, progress: Any = None, layer_taps: Any = None) -> None:
    """Build `cache` (a `TeacherCache`) from `loader` (in order, whole data set) on every rank of
    the current world together, publish it, and leave it loaded on every rank."""
    world = current_world()
    final = cache.path
    staging = final.parent / f".{final.name}.building-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    cache.path = Path(broadcast_object(str(staging)))  # rank 0's name: one directory for all ranks
    teacher.eval()
    views = cache.settings.views if augment.active else 1
    failure: BaseException | None = None
    try:
        shapes = _feature_shapes(cache, teacher, loader, normalize, augment, device, layer_taps)
        if world.is_main:
            cache.path.mkdir(parents=True)
            cache.create(shapes)
    except BaseException as error:  # the others must hear of it, or they wait in the next collective
        failure = error
    if not _agree(failure is None, device) and failure is None:
        failure = RuntimeError("another process failed to create the teacher cache; see its error")
    seen = None
    if failure is None:
        builders = world.world_size if _one_machine() else 1  # ranks 0 .. builders-1 compute
        try:
            if not world.is_main and builders > 1:
                cache.open_for_writing()
            share = rank_batches(loader, world.rank, builders) if world.rank < builders else []
            seen = _compute(cache, teacher, share, normalize, augment, device, progress, layer_taps, views)
            cache.flush()
        except BaseException as error:
            failure = error
        if not _agree(failure is None, device) and failure is None:
            failure = RuntimeError("another process failed while building the teacher cache; see its error")
    cache.close()
    if failure is None:
        counts = all_reduce_sum(torch.from_numpy(seen).to(device)).cpu().numpy()
        if not np.all(counts == views):
            failure = RuntimeError("the cache loader did not visit every sample exactly once per view")
    if failure is not None:
        if world.is_main:
            shutil.rmtree(cache.path, ignore_errors=True)
        cache.path = final
        raise failure
    published = str(_publish(cache, final, views)) if world.is_main else None
    cache.path = Path(broadcast_object(published))
    cache.load()


def _one_machine() -> bool:
    """Whether every process runs on this machine. Processes on one machine share the memory map
    through the page cache; on several machines over a network file system they do not (each
    writes back whole pages, and rows of two ranks may share one), so there rank 0 builds alone
    while the others wait, as before, which a very large cache may need a longer process-group
    timeout for (or a first run with one process that builds it)."""
    world = current_world()
    if not world.distributed:
        return True
    hosts: list = [None] * world.world_size
    dist.all_gather_object(hosts, socket.gethostname())
    if len(set(hosts)) == 1:
        return True
    if world.is_main:
        LOG.warning("kdistill: the processes run on %d machines: rank 0 builds the teacher cache alone (a memory "
                    "map is not shared safely across machines); the others wait for it", len(set(hosts)))
    return False


def _agree(ok: bool, device: torch.device) -> bool:
    """True on every rank when it is true on all (a failed rank still takes part, so none hangs)."""
    failed = all_reduce_sum(torch.tensor([0.0 if ok else 1.0], device=device))
    return bool(failed.item() == 0)


def _publish(cache: Any, final: Path, views: int) -> Path:
    """Mark the staging directory complete and rename it to the key; where another builder
    published first, its copy is used. Returns where the cache now lies."""
    cache.mark_complete(views)
    staging = cache.path
    cache.path = final
    if final.exists() and cache.is_complete():  # another process finished first: use its copy
        shutil.rmtree(staging, ignore_errors=True)
        return final
    shutil.rmtree(final, ignore_errors=True)  # an incomplete leftover (a crash) under our key
    try:
        os.rename(staging, final)
    except OSError:  # a concurrent builder published between the two lines above
        if cache.is_complete():
            shutil.rmtree(staging, ignore_errors=True)
            return final
        return staging  # keep ours where it is
    return final
