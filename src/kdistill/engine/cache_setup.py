"""Opening the teacher cache for a run: how many views, which layers, what temperature."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from kdistill.data.transforms import Augment, to_float
from kdistill.engine.batch import call_model, logits_of, split_batch, to_device
from kdistill.engine.cache import CacheSettings, TeacherCache, open_cache, require_fingerprint
from kdistill.engine.distributed import World
from kdistill.engine.loss import DistillationLoss
from kdistill.engine.progress import progress_bar
from kdistill.errors import BadInput
from kdistill.taps import LayerTaps


def replayable(augment: Augment) -> bool:
    """Whether a cached view could be replayed: not for augmentation drawn per batch (MixUp)."""
    return not augment.active or getattr(augment, "replayable", True)


def check_cacheable(dataset: Dataset, augment: Augment) -> None:
    """The cache keeps the teacher's outputs per sample index of an identified data set: a stream has
    no indices, and a data set without a fingerprint no identity; both are refused before any work
    (the fingerprint only where the cache would be used: not under augmentation it cannot replay,
    where the teacher runs live)."""
    if isinstance(dataset, IterableDataset):
        raise BadInput(f"the teacher cache keeps the teacher's outputs per sample index, and the training data "
                       f"({type(dataset).__name__}) is an IterableDataset, whose samples have none: run without "
                       "the cache (teacher_cache=None; in a config, no teacher.cache), or pass a map-style Dataset")
    if replayable(augment):
        require_fingerprint(dataset)


def cache_views(settings: CacheSettings, augment: Augment, epochs: int, note: Callable[[str], None]) -> int:
    """One augmented view per epoch unless a shorter cycle was asked for (and then noted)."""
    if not augment.active:
        return 1
    if settings.views is None:
        return epochs
    if settings.views < epochs:
        note(f"teacher.cache.views = {settings.views} < {epochs} epochs: the cache replays a cycle of "
             f"{settings.views} augmented view(s) per image, so the distilled student sees {settings.views} "
             "fixed crop(s) per image where a student trained without the cache sees a fresh one every epoch")
    return settings.views


def open_teacher_cache(loss: DistillationLoss, settings: CacheSettings, in_order: DataLoader, augment: Augment,
                       epochs: int, device: torch.device, world: World, progress: bool,
                       note: Callable[[str], None]) -> TeacherCache | None:
    """Load the complete cache for this teacher, data and preprocessing, or build it (under DDP every
    process builds its share of the batches, so no process waits long in a collective). None,
    noted, when the augmentation's views depend on the batch (mixing ops such as MixUp): no cache
    could replay them, so the teacher runs live."""
    if not replayable(augment):
        note(f"teacher.cache is off for this run: the augmentation {augment!r} draws per batch (it mixes samples "
             "or is batch-level), so no cached view can be replayed exactly; the teacher runs live every step")
        return None
    teacher = loss.teachers[0]
    inputs, _, _ = split_batch(to_device(next(iter(in_order)), device))
    with torch.inference_mode():
        num_classes = logits_of(call_model(teacher.model, teacher.normalize(to_float(inputs)))).shape[1]
    updates: dict[str, Any] = {"views": cache_views(settings, augment, epochs, note)}
    if settings.temperature is None:  # the top-k fill keeps the rest's mass at the methods' temperature
        temperatures = [float(m.temperature) for m in loss.methods if hasattr(m, "temperature")]
        updates["temperature"] = max(temperatures, default=1.0)
    settings = _replace(settings, updates)
    build_taps = teacher.taps
    if settings.features and settings.extra_taps:  # the union: one cache serves runs of other methods too
        tapped = [str(t) for t in teacher.taps.taps] if teacher.taps is not None else []
        build_taps = LayerTaps(teacher.model, sorted({*tapped, *settings.extra_taps}), "teacher 0 (cache)")
    # every rank: rank 0's finding (complete or not) decides, and a build is shared out over the ranks
    with progress_bar(progress and world.is_main) as bar:
        return open_cache(settings, teacher.model, in_order.dataset, in_order, teacher.normalize, augment,
                          num_classes, device, bar, build_taps)


def _replace(settings: CacheSettings, updates: dict[str, Any]) -> CacheSettings:
    """A copy with `updates` (the settings are frozen: a dataclass or a pydantic model)."""
    if hasattr(settings, "model_copy"):
        return settings.model_copy(update=updates)
    import dataclasses

    return dataclasses.replace(settings, **updates)
