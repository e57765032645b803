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
depend on (the teacher's weights, class and Hugging Face config -- two teachers with the same
weights but another head count or activation score differently --, the blocks' contents and order,
k, the temperature of the fill, the storage dtype, the format); the arrays are written in a private
staging directory, `meta.json` is written last and atomically, and the directory is published under
its key with one rename. A directory whose `meta.json` is missing, incomplete or names another key
is never read: `load` refuses it, and `open_topk_cache` builds the cache afresh, so a cache of
another teacher is never reused (`use_cache` also refuses a cache whose recorded teacher is not the
Distiller's).

One fill serves one temperature: a method at another temperature would see a tail of the wrong
mass, so `fill_temperature` refuses methods of different temperatures sharing a cache with k < V
(with k = V there is no tail and every temperature is exact).

Under DDP (engine/cache_build.py's scheme) every process computes its share of the in-order
batches (batch b goes to rank b mod N) into the memory maps rank 0 created: the same batches one
process computes, so the same bytes; the ranks agree that every block was written and none
failed, and rank 0 alone marks the cache complete and publishes it.
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

from kdistill.collectives import all_reduce_sum, broadcast_object, current_world
from kdistill.digest import model_digest
from kdistill.engine.cache import dataset_digest
from kdistill.engine.cache_build import _one_machine
from kdistill.engine.device import move_model
from kdistill.errors import BadInput
from kdistill.lm.models import token_scores, unwrap

CACHE_FORMAT = 2  # 2: the teacher's config in the key, the teacher's identity in meta.json
DTYPES = {"float16": np.float16, "float32": np.float32}
# not what the scores depend on: where the model was read from, and what `save_pretrained` fills in
# (`architectures`, `dtype`: the weights' dtype is in their digest); a saved teacher keeps its key
VOLATILE_CONFIG_KEYS = ("_name_or_path", "transformers_version", "_commit_hash", "architectures", "dtype",
                        "torch_dtype")


def teacher_identity(teacher: nn.Module) -> dict[str, str]:
    """What the teacher's scores depend on: its weights, its class, and its Hugging Face config
    (layer count, heads, activation, ... which the weights alone do not fix); a digest of each."""
    config = getattr(unwrap(teacher), "config", None)
    config_digest = None
    if config is not None and hasattr(config, "to_dict"):
        fields = {k: v for k, v in config.to_dict().items() if k not in VOLATILE_CONFIG_KEYS}
        config_digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"weights": model_digest(teacher)[:16], "class": type(teacher).__qualname__, "config": config_digest}


def fill_temperature(methods: Any, k: int, vocab_size: int, configured: float | None = None) -> float:
    """The one temperature the fill keeps the tail's mass at: that of every method reading the
    teacher. Methods of different temperatures (or a configured one that differs from theirs) would
    see a tail of the wrong mass: refused while the cache has a tail (k < V)."""
    temperatures = sorted({float(m.temperature) for m in methods if m.needs_teacher and hasattr(m, "temperature")})
    if k < vocab_size:
        if len(temperatures) > 1:
            raise BadInput(f"teacher.cache: methods at temperatures {temperatures} share one top-k cache, whose fill "
                           "keeps the tail's mass at one temperature; give them one temperature, or top_k: null "
                           "(the whole vocabulary, exact at every temperature)")
        if configured is not None and temperatures and float(configured) != temperatures[0]:
            raise BadInput(f"teacher.cache.temperature: {configured} differs from the methods' temperature "
                           f"{temperatures[0]}; the fill must keep the tail's mass at the temperature the methods "
                           "read, so leave it unset (or top_k: null)")
    if configured is not None:
        return float(configured)
    return temperatures[0] if temperatures else 1.0


class TopKCache:
    """Top-k teacher logits per (block, position): values (N, T, k), token ids (N, T, k) and the
    fill of the other tokens (N, T)."""

    def __init__(self, directory: str | Path, key: str, num_samples: int, block_size: int, vocab_size: int,
                 k: int, dtype: str = "float16", temperature: float = 1.0,
                 teacher: dict[str, Any] | None = None) -> None:
        if dtype not in DTYPES:
            raise BadInput(f"dtype: must be one of {', '.join(DTYPES)} (got {dtype!r})")
        if k < 1:
            raise BadInput(f"top_k: must be >= 1 (got {k})")
        self.key, self.num_samples, self.block_size, self.vocab_size = key, num_samples, block_size, vocab_size
        self.k, self.dtype, self.temperature = min(k, vocab_size), dtype, float(temperature)
        self.path = Path(directory) / key
        self.teacher = teacher  # the identity of the teacher it is (to be) built from (`teacher_identity`)
        self._values: np.ndarray | None = None
        self._indices: np.ndarray | None = None
        self._fill: np.ndarray | None = None

    @staticmethod
    def make_key(teacher: nn.Module, dataset: Any, k: int, dtype: str, temperature: float = 1.0,
                 vocab_size: int | None = None, identity: dict[str, Any] | None = None) -> str:
        """With k >= `vocab_size` there is no tail: the values do not depend on the temperature.
        `identity`: the teacher's `teacher_identity`, when already computed (a digest of every weight)."""
        no_tail = vocab_size is not None and k >= vocab_size
        parts = {"format": CACHE_FORMAT, "kind": "lm-top-k", "teacher": identity or teacher_identity(teacher),
                 "data": dataset_digest(dataset), "top_k": k, "dtype": dtype,
                 "temperature": None if no_tail else float(temperature)}
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
        self.teacher = meta.get("teacher")
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
    def _arrays(self, folder: Path, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(values, indices, fill) memory maps in `folder`: created (w+) or opened for writing (r+)."""
        shape = (self.num_samples, self.block_size, self.k)
        if mode == "r+":
            return tuple(np.load(folder / f"{name}.npy", mmap_mode="r+") for name in ("values", "indices", "fill"))
        return (np.lib.format.open_memmap(folder / "values.npy", mode="w+", dtype=DTYPES[self.dtype], shape=shape),
                np.lib.format.open_memmap(folder / "indices.npy", mode="w+", dtype=self._index_dtype(), shape=shape),
                np.lib.format.open_memmap(folder / "fill.npy", mode="w+", dtype=np.float32, shape=shape[:2]))

    def _compute(self, arrays: tuple[np.ndarray, ...], teacher: nn.Module, dataset: Any, batch_size: int,
                 device: torch.device | str, rank: int, builders: int) -> int:
        """Write this rank's batches (b mod builders == rank) of the in-order blocks; the rows written."""
        values, indices, fills = arrays
        written = 0
        for batch_number, start in enumerate(range(0, self.num_samples, batch_size)):
            if batch_number % builders != rank:
                continue
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
        for array in arrays:
            array.flush()
        return written

    @torch.inference_mode()
    def build(self, teacher: nn.Module, dataset: Any, batch_size: int = 64,
              device: torch.device | str = "cpu") -> TopKCache:
        """Run the teacher once over every block (in order), write the top-k of each position, publish.
        Under DDP every process of the run calls it and computes its share (see the module's docstring)."""
        world = current_world()
        final = self.path
        name = f".{final.name}.building-{os.getpid()}-{uuid.uuid4().hex[:8]}" if world.is_main else None
        staging = final.parent / str(broadcast_object(name))  # rank 0's name: one directory for all ranks
        builders = world.world_size if _one_machine() else 1  # over several machines rank 0 builds alone
        was_training = teacher.training
        move_model(teacher.eval(), device)
        failure: BaseException | None = None
        written = 0
        try:
            if world.is_main:
                staging.mkdir(parents=True)
                created = self._arrays(staging, "w+")
                for array in created:
                    array.flush()
                del created
        except BaseException as error:  # the others must hear of it, or they wait in the next collective
            failure = error
        failure = _agreed(failure, device, "create")
        if failure is None:
            try:
                if world.rank < builders:
                    written = self._compute(self._arrays(staging, "r+"), teacher, dataset, batch_size, device,
                                            world.rank, builders)
            except BaseException as error:
                failure = error
            failure = _agreed(failure, device, "write")
        teacher.train(was_training)
        if failure is None:
            total = int(all_reduce_sum(torch.tensor([written], dtype=torch.long, device=device)).item())
            if total != self.num_samples:
                failure = RuntimeError(f"the cache build wrote {total} of {self.num_samples} blocks")
        if failure is not None:
            if world.is_main:
                shutil.rmtree(staging, ignore_errors=True)
            raise failure
        published = str(self._publish(staging, final, teacher)) if world.is_main else None
        self.path = Path(str(broadcast_object(published)))
        return self.load()

    def _publish(self, staging: Path, final: Path, teacher: nn.Module) -> Path:
        """Write meta.json last (atomically), then rename the staging directory to the key; where
        another builder published first, its copy is used. Returns where the cache lies."""
        meta = {"key": self.key, "complete": True, "num_samples": self.num_samples, "block_size": self.block_size,
                "vocab_size": self.vocab_size, "top_k": self.k, "dtype": self.dtype, "temperature": self.temperature,
                "teacher": self.teacher or teacher_identity(teacher)}
        (staging / "meta.json.tmp").write_text(json.dumps(meta))
        os.replace(staging / "meta.json.tmp", staging / "meta.json")
        if final.exists() and _complete_for(final, self.key):  # another builder published first: use its copy
            shutil.rmtree(staging, ignore_errors=True)
            return final
        shutil.rmtree(final, ignore_errors=True)  # an incomplete leftover under our key
        try:
            os.rename(staging, final)
        except OSError:  # a concurrent builder published between the two lines above
            if _complete_for(final, self.key):
                shutil.rmtree(staging, ignore_errors=True)
                return final
            return staging
        return final

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


def _agreed(failure: BaseException | None, device: torch.device | str, step: str) -> BaseException | None:
    """This rank's failure, or one naming another rank's, when any rank failed (every rank takes
    part, so none waits forever in the next collective)."""
    failed = all_reduce_sum(torch.tensor([0.0 if failure is None else 1.0], device=device))
    if failed.item() > 0 and failure is None:
        return RuntimeError(f"another process failed to {step} the LM top-k cache; see its error")
    return failure


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
    identity = teacher_identity(teacher)
    key = TopKCache.make_key(teacher, dataset, k, dtype, temperature, vocab_size, identity)
    cache = TopKCache(directory, key, len(dataset), dataset.block_size, vocab_size, k, dtype, temperature, identity)
    complete = broadcast_object(cache.is_complete() if current_world().is_main else None)  # rank 0 decides
    return cache.load() if complete else cache.build(teacher, dataset, batch_size, device)


def use_cache(distiller: Any, cache: TopKCache) -> None:
    """Serve the Distiller's teacher outputs from `cache` (the teacher is never run): the loop reads
    teacher outputs through `cache.lookup(indices, epoch, device)`, the interface the vision cache has."""
    if len(distiller.teachers) != 1:
        raise BadInput(f"the top-k cache holds one teacher's outputs; this run has {len(distiller.teachers)}")
    if any(m.teacher_taps() for m in distiller.methods):
        raise BadInput("the top-k cache holds logits only; methods that tap teacher layers need the teacher live")
    meta = cache.meta()
    if meta is None:
        cache.load()  # refused: an incomplete cache
    built_from, teacher = meta.get("teacher"), teacher_identity(distiller.teachers[0].model)
    if built_from != teacher:
        raise BadInput(f"{cache.path}: the top-k cache was built from another teacher ({built_from}, this run's: "
                       f"{teacher}); open_topk_cache() with this run's teacher builds the right one")
    distiller.cache = cache


__all__ = ["TopKCache", "fill_temperature", "open_topk_cache", "teacher_identity", "use_cache"]
