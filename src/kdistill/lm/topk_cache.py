"""The teacher's top-k next-token logits, computed once and memory-mapped, so a student epoch costs
what the student costs.

A language model's full logits are V floats per position (a 50k vocabulary: 200 KB per token), too
many to keep. The cache keeps each position's k largest logits and one fill value for the other
V - k tokens, chosen so they keep their total probability at temperature T, spread evenly
(`fill = T (logsumexp(rest / T) - log(V - k))`, as the vision cache does): the reconstructed
teacher is exact on its top k and on the tail's total mass. `lookup` returns dense (B, V, T)
scores, what the token-level losses read; from a live teacher they compute the same value with
`top_k=k` (methods/token_level.py).

Same rules as the vision cache (engine/cache.py): the key is a digest of everything the values
depend on (the teacher's weights and class, the blocks' contents and order, k, the temperature of
the fill, the storage dtype, the format); the arrays are written in a private staging directory,
`meta.json` is written last and atomically, and the directory is published under its key with one
rename. A directory whose `meta.json` is missing, incomplete or names another key is never read:
`load` refuses it, and `open_topk_cache` builds the cache afresh. One process builds (no DDP share-out here).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdistill.digest import model_digest
from kdistill.engine.cache import dataset_digest
from kdistill.errors import BadInput
from kdistill.lm.models import token_scores

CACHE_FORMAT = 1
DTYPES = {"float16": np.float16, "float32": np.float32}


class TopKCache:
    """Top-k teacher logits per (block, position): values (N, T, k), token ids (N, T, k) and the
    fill of the other tokens (N, T)."""

    def __init__(self, directory: str | Path, key: str, num_samples: int, block_size: int, vocab_size: int,
                 k: int, dtype: str = "float16", temperature: float = 1.0) -> None:
        if dtype not in DTYPES:
            raise BadInput(f"dtype: must be one of {', '.join(DTYPES)} (got {dtype!r})")
        if k < 1:
            raise BadInput(f"top_k: must be >= 1 (got {k})")
        self.key, self.num_samples, self.block_size, self.vocab_size = key, num_samples, block_size, vocab_size
        self.k, self.dtype, self.temperature = min(k, vocab_size), dtype, float(temperature)
        self.path = Path(directory) / key
        self._values: np.ndarray | None = None
        self._indices: np.ndarray | None = None
        self._fill: np.ndarray | None = None

    @staticmethod
    def make_key(teacher: nn.Module, dataset: Any, k: int, dtype: str, temperature: float = 1.0) -> str:
        parts = {"format": CACHE_FORMAT, "kind": "lm-top-k", "teacher": model_digest(teacher),
                 "teacher_class": type(teacher).__qualname__, "data": dataset_digest(dataset), "top_k": k,
                 "dtype": dtype, "temperature": float(temperature)}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]

    # state on disk ---------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any] | None:
        path = self.path / "meta.json"
        try:
            return json.loads(path.read_text()) if path.is_file() else None
        except (OSError, json.JSONDecodeError):
            return None

    def is_complete(self) -> bool:
        meta = self.meta()
        return meta is not None and meta.get("key") == self.key and meta.get("complete") is True

    def _index_dtype(self) -> type:
        return np.int16 if self.vocab_size < 2**15 else np.int32

    def load(self) -> TopKCache:
        """Open the arrays read-only (memory maps); a cache that is not complete for this key is refused."""
        meta = self.meta()
        if meta is None or meta.get("complete") is not True:
            raise BadInput(f"{self.path}: the top-k cache is incomplete (no complete meta.json); build it with "
                           "open_topk_cache(), which rebuilds an incomplete cache")
        if meta.get("key") != self.key:
            raise BadInput(f"{self.path}: the cache was built for key {meta.get('key')}, not {self.key} (another "
                           "teacher, data or k); open_topk_cache() builds the one this run needs")
        self._values = np.load(self.path / "values.npy", mmap_mode="r")
        self._indices = np.load(self.path / "indices.npy", mmap_mode="r")
        self._fill = np.load(self.path / "fill.npy", mmap_mode="r")
        expected = (self.num_samples, self.block_size, self.k)
        if self._values.shape != expected or self._indices.shape != expected:
            raise BadInput(f"{self.path}: arrays of shape {self._values.shape}, expected {expected}; delete the "
                           "directory to rebuild it")
        return self

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.glob("*.npy"))

    # build -----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def build(self, teacher: nn.Module, dataset: Any, batch_size: int = 64,
              device: torch.device | str = "cpu") -> TopKCache:
        """Run the teacher once over every block (in order), write the top-k of each position, publish."""
        final = self.path
        staging = final.parent / f".{final.name}.building-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
        try:
            shape = (self.num_samples, self.block_size, self.k)
            values = np.lib.format.open_memmap(staging / "values.npy", mode="w+", dtype=DTYPES[self.dtype], shape=shape)
            indices = np.lib.format.open_memmap(staging / "indices.npy", mode="w+", dtype=self._index_dtype(),
                                                shape=shape)
            fills = np.lib.format.open_memmap(staging / "fill.npy", mode="w+", dtype=np.float32, shape=shape[:2])
            was_training = teacher.training
            teacher.eval().to(device)
            written = 0
            for start in range(0, self.num_samples, batch_size):
                rows = list(range(start, min(start + batch_size, self.num_samples)))
                batch = [dataset[i] for i in rows]
                ids = torch.stack([b["input_ids"] for b in batch]).to(device)
                mask = torch.stack([b["attention_mask"] for b in batch]).to(device)
                scores = token_scores(teacher, ids, mask).float()  # (B, V, T)
                if scores.shape[1] != self.vocab_size:
                    raise BadInput(f"the teacher scores {scores.shape[1]} tokens, the cache expects {self.vocab_size}")
                top_values, top_ids = scores.topk(self.k, dim=1)  # (B, k, T)
                values[start:start + len(rows)] = top_values.transpose(1, 2).cpu().numpy()
                indices[start:start + len(rows)] = top_ids.transpose(1, 2).cpu().numpy()
                fills[start:start + len(rows)] = self._fill_of(scores, top_ids).cpu().numpy()
                written += len(rows)
            teacher.train(was_training)
            if written != self.num_samples:
                raise RuntimeError(f"the cache build wrote {written} of {self.num_samples} blocks")
            for array in (values, indices, fills):
                array.flush()
            del values, indices, fills
            meta = {"key": self.key, "complete": True, "num_samples": self.num_samples, "block_size": self.block_size,
                    "vocab_size": self.vocab_size, "top_k": self.k, "dtype": self.dtype,
                    "temperature": self.temperature}
            (staging / "meta.json.tmp").write_text(json.dumps(meta))
            os.replace(staging / "meta.json.tmp", staging / "meta.json")
            self.path = staging
            if not final.exists() or not _complete_for(final, self.key):
                shutil.rmtree(final, ignore_errors=True)  # an incomplete leftover under our key
                os.rename(staging, final)
            else:  # another builder published first: use its copy
                shutil.rmtree(staging, ignore_errors=True)
            self.path = final
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            self.path = final
            raise
        return self.load()

    def _fill_of(self, scores: torch.Tensor, top_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) logit of each token outside the top k: the rest's mass at T, spread evenly."""
        rest_count = self.vocab_size - self.k
        if rest_count == 0:
            return torch.full((scores.shape[0], scores.shape[2]), float("-inf"))
        rest = scores.scatter(1, top_ids, float("-inf")) / self.temperature
        return self.temperature * (torch.logsumexp(rest, dim=1) - math.log(rest_count))

    # reading ---------------------------------------------------------------------------------------
    def lookup(self, indices: torch.Tensor, epoch: int = 0, device: torch.device | str = "cpu") -> torch.Tensor:
        """(B, V, T) float32 teacher scores of blocks `indices`: the top-k logits, the fill elsewhere.
        (`epoch` is unused: text has one view; the signature is the Distiller's cache interface.)"""
        if self._values is None:
            self.load()
        idx = indices.cpu().numpy()
        values = torch.from_numpy(self._values[idx].astype(np.float32))  # (B, T, k)
        top = torch.from_numpy(self._indices[idx].astype(np.int64))
        fill = torch.from_numpy(self._fill[idx].astype(np.float32))  # (B, T)
        dense = fill[:, :, None].expand(len(idx), self.block_size, self.vocab_size).clone()
        dense.scatter_(2, top, values)
        return dense.transpose(1, 2).to(device)

    def lookup_features(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        return {}


def _complete_for(path: Path, key: str) -> bool:
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return meta.get("key") == key and meta.get("complete") is True


def open_topk_cache(directory: str | Path, teacher: nn.Module, dataset: Any, vocab_size: int, k: int,
                    dtype: str = "float16", batch_size: int = 64, device: torch.device | str = "cpu",
                    temperature: float = 1.0) -> TopKCache:
    """The complete cache for this teacher, data, k, dtype and fill temperature (the methods'):
    loaded if one exists, else built."""
    if not temperature > 0:
        raise BadInput(f"temperature: must be > 0 (got {temperature})")
    key = TopKCache.make_key(teacher, dataset, k, dtype, temperature)
    cache = TopKCache(directory, key, len(dataset), dataset.block_size, vocab_size, k, dtype, temperature)
    return cache.load() if cache.is_complete() else cache.build(teacher, dataset, batch_size, device)


def use_cache(distiller: Any, cache: TopKCache) -> None:
    """Serve the Distiller's teacher outputs from `cache` (the teacher is never run): the loop reads
    teacher outputs through `cache.lookup(indices, epoch, device)`, the interface the vision cache has."""
    if len(distiller.teachers) != 1:
        raise BadInput(f"the top-k cache holds one teacher's outputs; this run has {len(distiller.teachers)}")
    if any(m.teacher_taps() for m in distiller.methods):
        raise BadInput("the top-k cache holds logits only; methods that tap teacher layers need the teacher live")
    distiller.cache = cache


__all__ = ["TopKCache", "open_topk_cache", "use_cache"]
