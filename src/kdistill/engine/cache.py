"""Teacher-output cache: run the teacher once, reuse its logits every epoch.

The logits live in `.npy` files opened as memory maps, so a cache may exceed RAM. A cache is
valid only for what it was computed from: the teacher's weights, the data (contents and order),
the preprocessing (normalisation, augmentation and its seed), the number of views, the storage
format. All of it goes into the cache key; a change gives a new key and a new cache, and a cache
is used only when its `meta.json` (written last, atomically) says it is complete for that key.

With random augmentation the teacher would see other inputs every epoch. The cache stores K
augmented views per sample, and training replays them: epoch e uses view e mod K, with exactly
the crop and flip the cache was computed on (augmentation is a pure function of seed, epoch and
sample index; see `kdistill.data.transforms`). Never are outputs used that were computed on
other inputs. K defaults to the number of epochs: a smaller K is a cycle the run must ask for
(`views: K`), because it gives the distilled student K fixed crops per image where a student
trained without the cache sees a fresh one every epoch; the run notes it in its report.

With `features: true` the outputs of the teacher layers that methods tap are cached too, one
memory-mapped array per tap (float16 by default): a ResNet's last stage on CIFAR is 8 KiB per
image and view, so a cache of 50,000 images is 0.4 GiB per view, on disk rather than in RAM.

For many classes `top_k` keeps the k largest logits per sample and one fill value for the rest,
chosen so the remaining classes keep their total probability mass at the distillation
temperature T: `fill = T * (logsumexp(rest / T) - log(C - k))`. At T the reconstruction is exact
for the top-k probabilities and the rest's total mass; only the spread inside the rest is lost
(measured: top-20 of 100 classes within 1.3 % of the full soft-target loss at T=4, see tests).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdistill.collectives import broadcast_object
from kdistill.data.transforms import Augment, Normalize
from kdistill.digest import model_digest
from kdistill.errors import BadInput
from kdistill.settings import CacheSettings  # the cache's settings live with the config's (one schema)

CACHE_FORMAT = 1


def require_fingerprint(dataset: Any) -> None:
    """The cache is keyed by the data set's identity (contents and order), which it must be able to give."""
    if not hasattr(dataset, "fingerprint"):
        raise BadInput(f"the teacher cache needs to identify the data set; {type(dataset).__name__} has no "
                       "fingerprint(). Use an InMemoryDataset or give your data set a fingerprint() method (a digest "
                       "of contents and order)")


def dataset_digest(dataset: Any) -> str:
    require_fingerprint(dataset)
    return dataset.fingerprint()


class TeacherCache:
    """Cached logits of one teacher on one data set, addressed by (view, sample index)."""

    def __init__(self, settings: CacheSettings, key: str, num_samples: int, num_classes: int,
                 taps: list[str] | None = None) -> None:
        self.settings = settings
        self.taps = list(taps or [])
        self.key = key
        self.path = Path(settings.directory) / key
        self.num_samples = num_samples
        self.num_classes = num_classes
        self._arrays: dict[str, np.ndarray] = {}

    # key ------------------------------------------------------------------------------------------
    @staticmethod
    def make_key(settings: CacheSettings, teacher: nn.Module, dataset: Any, normalize: Normalize,
                 augment: Augment, taps: list[str] | None = None) -> str:
        parts = {
            "format": CACHE_FORMAT,
            "teacher": model_digest(teacher),
            "teacher_class": type(teacher).__qualname__,
            "data": dataset_digest(dataset),
            "normalize": [normalize.enabled, normalize.mean.flatten().tolist(), normalize.std.flatten().tolist()],
            "augment": augment_key(augment) if augment.active else None,
            "views": settings.views if augment.active else 1,
            "dtype": settings.dtype,
            "top_k": settings.top_k,
            "temperature": settings.temperature if settings.top_k is not None else None,
            "taps": sorted(taps or []),
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]

    # storage --------------------------------------------------------------------------------------
    def _file(self, name: str) -> Path:
        return self.path / f"{name}.npy"

    def _feature_name(self, tap: str) -> str:
        return "feature-" + hashlib.sha256(tap.encode()).hexdigest()[:12]

    def _open_features(self, mode: str, shapes: dict[str, tuple[int, ...]] | None = None) -> None:
        """Feature arrays: created from the layers' per-sample shapes (w+), or opened from disk (r, r+)."""
        dtype = np.float16 if self.settings.dtype == "float16" else np.float32
        for tap in self.taps:
            name = self._feature_name(tap)
            if mode == "w+":
                shape = (self.settings.views, self.num_samples, *shapes[tap])
                self._arrays[name] = np.lib.format.open_memmap(self._file(name), mode="w+", dtype=dtype, shape=shape)
            else:
                self._arrays[name] = np.load(self._file(name), mmap_mode=mode)

    def is_complete(self) -> bool:
        meta = self.path / "meta.json"
        if not meta.exists():
            return False
        info = json.loads(meta.read_text())
        return info.get("key") == self.key and info.get("complete") is True

    def _open(self, mode: str) -> None:
        views = self.settings.views
        dtype = np.float16 if self.settings.dtype == "float16" else np.float32
        if self.settings.top_k is None:
            shapes = {"logits": ((views, self.num_samples, self.num_classes), dtype)}
        else:
            k = min(self.settings.top_k, self.num_classes)
            index_dtype = np.int16 if self.num_classes < 2**15 else np.int32
            shapes = {"values": ((views, self.num_samples, k), dtype),
                      "indices": ((views, self.num_samples, k), index_dtype),
                      "fill": ((views, self.num_samples), np.float32)}
        for name, (shape, dtype_) in shapes.items():
            if mode == "w+":
                self._arrays[name] = np.lib.format.open_memmap(self._file(name), mode="w+", dtype=dtype_, shape=shape)
            else:
                self._arrays[name] = np.load(self._file(name), mmap_mode=mode)

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.glob("*.npy"))

    # writing (the build itself: cache_build.py) ------------------------------------------------------
    def create(self, feature_shapes: dict[str, tuple[int, ...]]) -> None:
        """Create every array in `self.path` (one process does, before the others open them)."""
        self._open("w+")
        if self.taps:
            self._open_features("w+", feature_shapes)

    def open_for_writing(self) -> None:
        """Open the arrays another process created, to write this process's rows into them."""
        self._open("r+")
        self._open_features("r+")

    def store(self, view: int, rows: np.ndarray, logits: torch.Tensor, features: dict[str, torch.Tensor]) -> None:
        """Write one batch's logits (or their top-k form) and tapped features at their sample rows."""
        self._store(view, rows, logits)
        for tap in self.taps:
            array, value = self._arrays[self._feature_name(tap)], features[tap]
            if tuple(value.shape[1:]) != tuple(array.shape[2:]):
                raise BadInput(f"teacher cache: layer '{tap}' gave per-sample shape {tuple(value.shape[1:])} here "
                               f"and {tuple(array.shape[2:])} on the first batch; cached teacher layers need one "
                               "fixed shape (text: pad every batch to one length, data.options.padding: max_length)")
            array[view, rows] = value.float().cpu().numpy()

    def _store(self, view: int, indices: np.ndarray, logits: torch.Tensor) -> None:
        logits = logits.float().cpu()
        if self.settings.top_k is None:
            self._arrays["logits"][view, indices] = logits.numpy()
            return
        k = self._arrays["values"].shape[2]
        values, top = logits.topk(k, dim=1)
        rest_count = self.num_classes - k
        if rest_count > 0:
            temperature = self.settings.temperature or 1.0
            masked = logits.scatter(1, top, float("-inf"))
            fill = temperature * (torch.logsumexp(masked / temperature, dim=1) - math.log(rest_count))
        else:
            fill = torch.full((logits.shape[0],), float("-inf"))
        self._arrays["values"][view, indices] = values.numpy()
        self._arrays["indices"][view, indices] = top.numpy()
        self._arrays["fill"][view, indices] = fill.numpy()

    def flush(self) -> None:
        for array in self._arrays.values():
            array.flush()

    def close(self) -> None:
        self._arrays.clear()

    def mark_complete(self, views: int) -> None:
        """`meta.json`, written last and atomically: from now on the cache may be used."""
        tmp = self.path / "meta.json.tmp"
        tmp.write_text(json.dumps({"key": self.key, "complete": True, "num_samples": self.num_samples,
                                   "num_classes": self.num_classes, "views": views,
                                   "dtype": self.settings.dtype, "top_k": self.settings.top_k}))
        os.replace(tmp, self.path / "meta.json")

    def build(self, teacher: nn.Module, loader: Any, normalize: Normalize, augment: Augment,
              device: torch.device, progress: Any = None, layer_taps: Any = None) -> None:
        """Compute every view of every sample (shared out over the processes of a DDP run, which
        all call this), publish the cache under its key, and load it (see cache_build.py)."""
        from kdistill.engine.cache_build import build_cache

        build_cache(self, teacher, loader, normalize, augment, device, progress, layer_taps)

    def load(self) -> None:
        self._open("r")
        self._open_features("r")

    # reading --------------------------------------------------------------------------------------
    def lookup(self, indices: torch.Tensor, epoch: int, device: torch.device) -> torch.Tensor:
        """Float32 logits (B, C) of the cached view for `epoch` of the given samples."""
        view = epoch % self.settings.views
        idx = indices.cpu().numpy()
        if self.settings.top_k is None:
            return torch.from_numpy(self._arrays["logits"][view, idx].astype(np.float32)).to(device)
        values = torch.from_numpy(self._arrays["values"][view, idx].astype(np.float32))
        top = torch.from_numpy(self._arrays["indices"][view, idx].astype(np.int64))
        fill = torch.from_numpy(self._arrays["fill"][view, idx])
        logits = fill[:, None].expand(len(idx), self.num_classes).clone()
        logits.scatter_(1, top, values)
        return logits.to(device)

    def lookup_features(self, indices: torch.Tensor, epoch: int, device: torch.device,
                        taps: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Float32 tapped teacher outputs of the cached view for `epoch`, by tap (all, or `taps`)."""
        view, idx = epoch % self.settings.views, indices.cpu().numpy()
        return {tap: torch.from_numpy(self._arrays[self._feature_name(tap)][view, idx].astype(np.float32)).to(device)
                for tap in (self.taps if taps is None else taps)}


def augment_key(augment: Any) -> Any:
    """The augmentation's part of the key: the built-in crop, flip and seed (as it always was), or
    what a pipeline says defines its views (`cache_key()`: ops, arguments, seed, library version)."""
    if hasattr(augment, "cache_key"):
        return augment.cache_key()
    return [augment.crop_padding, augment.horizontal_flip, augment.seed]


def open_cache(settings: CacheSettings, teacher: nn.Module, dataset: Any, loader: Any, normalize: Normalize,
               augment: Augment, num_classes: int, device: torch.device, progress: Any = None,
               layer_taps: Any = None) -> TeacherCache:
    """The valid cache for this teacher, data and preprocessing: loaded if complete, else built
    (under DDP every rank calls this, and they build it together).

    `layer_taps` (a `LayerTaps` on the teacher) are cached too when `settings.features` is set."""
    if not settings.enabled:
        raise ValueError("teacher_cache: enabled is False; pass teacher_cache=None to run the teacher live")
    if settings.directory is None:
        raise ValueError("teacher_cache.directory: required; where the cache is kept, e.g. "
                         "CacheSettings('runs/teacher-cache')")
    taps = [str(t) for t in layer_taps.taps] if (settings.features and layer_taps is not None) else []
    if augment.active and settings.views is None:
        raise ValueError("teacher.cache.views: the number of augmented views must be resolved (one per epoch) "
                         "before the cache is opened")
    key = TeacherCache.make_key(settings, teacher, dataset, normalize, augment, taps)
    views = settings.views if augment.active else 1
    cache = TeacherCache(settings.model_copy(update={"views": views}), key, len(dataset), num_classes, taps)
    if broadcast_object(cache.is_complete()):  # rank 0's answer: every rank loads, or every rank builds
        cache.load()
    else:
        if taps:
            layer_taps.attach()
        try:
            cache.build(teacher, loader, normalize, augment, device, progress, layer_taps if taps else None)
        finally:
            if taps:
                layer_taps.detach()
    return cache
