"""Input preparation for a training step: the batch on the device, uint8 -> float, augmentation
(replaying the cached view when the teacher's outputs come from the cache), channels-last; and the
teacher's outputs read from the cache instead of running the teacher."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from kdistill.data.transforms import Augment, to_float
from kdistill.engine.batch import class_labels, split_batch, to_device
from kdistill.engine.cache import CacheSettings, TeacherCache
from kdistill.engine.loss import Participant, TeacherOutputs
from kdistill.methods.base import Method


def prepare_inputs(batch: Any, epoch: int, train: bool, *, device: torch.device, augment: Augment,
                   cache: TeacherCache | None, channels_last: bool) -> tuple[Any, Any, Any]:
    """(inputs, labels, sample indices) of a batch, ready for the models; labels as `class_labels` makes
    them (int64 class ids, float (B, C) rows kept as class probabilities; a (B, 1) column is squeezed
    where the logits are known, in `DistillationLoss.context`)."""
    batch = to_device(batch, device, non_blocking=True)
    inputs, labels, indices = split_batch(batch)
    labels = class_labels(labels)
    if torch.is_tensor(inputs):
        inputs = to_float(inputs)
        if train and augment.active:
            if indices is None:
                raise ValueError("augmentation needs sample indices; yield an 'index' with each sample")
            # with a cache of K views, epoch e replays view e mod K: the inputs the teacher saw
            view = epoch % cache.settings.views if cache is not None else epoch
            inputs = augment(inputs, indices, view)
        if channels_last and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
    return inputs, labels, indices


def cached_teacher_outputs(cache: TeacherCache | None, teacher: Participant | None, indices: torch.Tensor | None,
                           epoch: int, device: torch.device) -> TeacherOutputs | None:
    """The teacher's logits and tapped features from the cache; None without one."""
    if cache is None:
        return None
    if indices is None:
        raise ValueError("the teacher cache needs sample indices; yield an 'index' with each sample")
    taps = teacher.taps if teacher is not None else None
    wanted = [str(t) for t in taps.taps] if taps is not None else []
    features = cache.lookup_features(indices, epoch, device, wanted) if wanted else {}
    return [cache.lookup(indices, epoch, device)], [features]


def check_cache_use(settings: CacheSettings | None, teachers: Sequence[Participant], methods: Sequence[Method]) -> None:
    """The cache serves one teacher, and the layers the methods tap only when it holds features."""
    if settings is None:
        return
    if len(teachers) != 1:
        raise ValueError(f"the teacher cache holds one teacher's outputs; this run has {len(teachers)}. Turn the "
                         "cache off, or, when only the teachers' mixture is read (logit methods) and they take the "
                         "same normalised input, pass them as one teacher: "
                         "kdistill.strategies.TeacherEnsemble(teachers, temperature=T)")
    tapping = [m.label for m in methods if m.teacher_taps()]
    if tapping and not settings.features:
        raise ValueError(f"the teacher cache holds logits only, but {tapping} read teacher layers; "
                         "cache them too (features: true) or turn the cache off")


__all__ = ["cached_teacher_outputs", "check_cache_use", "prepare_inputs"]
