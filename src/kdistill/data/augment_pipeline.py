"""Augmentation pipelines from kornia (`kornia.augmentation`), replayable per sample.

A pipeline is a list of kornia augmentation classes by name with their keyword arguments, e.g.
`[{"name": "RandomResizedCrop", "size": [32, 32], "scale": [0.5, 1.0]}, {"name": "ColorJitter",
"brightness": 0.2, "p": 0.8}, {"name": "RandomHorizontalFlip"}]`, run on whole batches on the
training device after the built-in crop and flip (if those are set too).

Like the built-in `Augment`, each sample's random parameters are a pure function of (seed, epoch,
sample index): for every op and sample, kornia draws them (`forward_parameters`) under a forked
RNG seeded from `hash_uniform_ints(seed, epoch, index)`, and the batch is transformed with the
concatenated parameters (`op(x, params=...)`). So a sample gets the same view whatever the batch
composition, order, worker count or an interruption and resume, and the teacher cache can replay
the views exactly. Parameters that kornia draws once per batch (ColorJitter's order of its four
adjustments) are grouped: samples that drew the same one are transformed together.

Ops that mix samples (MixUp, CutMix, Mosaic, ...: `kornia.augmentation.MixAugmentationBaseV2`),
the auto-augment policies (`kornia.augmentation.auto`: RandAugment, AutoAugment, TrivialAugment)
and anything with `same_on_batch: true` draw their parameters per batch instead, seeded from
(seed, epoch, the batch's sample indices in order): runs still reproduce and resume exactly, but a
view depends on its batch, so the teacher cache cannot replay it and the teacher runs live
(`replayable` is False; the run notes it). Mixing ops mix the images only: the labels stay each
image's own, so the recipe they fit is distillation from the teacher's soft targets on the mixed
image (a hard-label term would see the first image's label).

kornia is an optional dependency: `pip install "kdistill[augment]"`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from kdistill.data.transforms import Augment, hash_uniform_ints

INSTALL_HINT = 'kornia is not installed; install the extra: pip install "kdistill[augment]"'
_SEED_SALT = 0x4B4F524E  # the pipeline's draws are independent of the built-in crop and flip's
_NOT_TENSOR_OPS = ("AugmentationSequential", "ImageSequential", "VideoSequential", "ManyToManyAugmentationDispather",
                   "ManyToOneAugmentationDispather", "PatchSequential")


def _kornia() -> Any:
    try:
        import kornia.augmentation as augmentation
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    return augmentation


def resolve_op(name: str) -> type:
    """The kornia augmentation class called `name` (in `kornia.augmentation` or its `auto` module)."""
    augmentation = _kornia()
    from kornia.augmentation import auto, base

    cls = getattr(augmentation, name, None) or getattr(auto, name, None)
    bases = (base._BasicAugmentationBase, auto.PolicyAugmentBase)
    if not isinstance(cls, type) or not issubclass(cls, bases) or name in _NOT_TENSOR_OPS or name.startswith("_") \
            or inspect.isabstract(cls) or "Base" in name or name.endswith("3D"):
        known = sorted(n for n in dir(augmentation) if n.startswith("Random") and not n.endswith("3D"))
        raise ValueError(f"unknown kornia augmentation {name!r}; use a 2D class of kornia.augmentation "
                         f"(e.g. {', '.join(known[:8])}, ColorJitter, Normalize) or kornia.augmentation.auto "
                         "(RandAugment, AutoAugment, TrivialAugment)")
    return cls


def _plain(value: Any) -> Any:
    """YAML lists -> tuples (kornia wants tuples for sizes and ranges)."""
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    return value


def split_entry(entry: Mapping[str, Any] | tuple) -> tuple[str, dict[str, Any]]:
    """(name, kwargs) of a pipeline entry: `{"name": ..., **kwargs}` or `(name, kwargs)`."""
    if isinstance(entry, tuple) and len(entry) == 2:
        return str(entry[0]), dict(entry[1])
    if not isinstance(entry, Mapping) or "name" not in entry:
        raise ValueError("each pipeline entry is a mapping with the kornia class's name and its arguments, "
                         "e.g. {name: RandomHorizontalFlip, p: 0.5}")
    kwargs = {k: v for k, v in entry.items() if k != "name"}
    return str(entry["name"]), kwargs


def build_op(name: str, kwargs: Mapping[str, Any]) -> torch.nn.Module:
    """The kornia op, or a ValueError naming the bad argument."""
    cls = resolve_op(name)
    parameters = inspect.signature(cls).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        unknown = [k for k in kwargs if k not in parameters]
        if unknown:
            raise ValueError(f"{name}: unknown argument {unknown[0]!r}; its arguments: "
                             f"{', '.join(p for p in parameters if p not in ('self', 'args', 'kwargs'))}")
    try:
        return cls(**{k: _plain(v) for k, v in kwargs.items()})
    except Exception as error:  # kornia's own checks of the values
        raise ValueError(f"kornia.augmentation.{name}({kwargs}) failed: {str(error).splitlines()[0]}") from None


def _is_batch_level(op: torch.nn.Module) -> bool:
    augmentation = _kornia()
    from kornia.augmentation import auto

    return isinstance(op, (augmentation.MixAugmentationBaseV2, auto.PolicyAugmentBase)) \
        or bool(getattr(op, "same_on_batch", False))


class KorniaAugment:
    """A kornia pipeline, optionally after the built-in crop and flip; the Distiller's `augment=`.

    `KorniaAugment([{"name": "RandomResizedCrop", "size": (32, 32)}, {"name": "ColorJitter",
    "brightness": 0.2}], seed=0, crop_padding=0, horizontal_flip=False)`.
    """

    def __init__(self, pipeline: Sequence[Mapping[str, Any] | tuple], seed: int = 0, crop_padding: int = 0,
                 horizontal_flip: bool = False) -> None:
        self.entries = [split_entry(entry) for entry in pipeline]
        self.seed = seed
        self.crop_padding, self.horizontal_flip = crop_padding, horizontal_flip
        self.base = Augment(crop_padding, horizontal_flip, seed)
        self.ops = [build_op(name, kwargs) for name, kwargs in self.entries]
        self.batch_level = [_is_batch_level(op) for op in self.ops]
        self._per_sample_keys: dict[tuple[int, tuple[int, ...]], set[str]] = {}

    @property
    def active(self) -> bool:
        return bool(self.ops) or self.base.active

    @property
    def replayable(self) -> bool:
        """True when every view is a function of (seed, epoch, index) alone, so a cache can replay it."""
        return not any(self.batch_level)

    @property
    def mixes_samples(self) -> bool:
        """True when an op blends images (MixUp, CutMix, Mosaic): the labels are not mixed with them."""
        augmentation = _kornia()
        return any(isinstance(op, augmentation.MixAugmentationBaseV2) for op in self.ops)

    def cache_key(self) -> dict[str, Any]:
        """What the teacher cache's key must hold: the built-in part, the ops with their arguments,
        the seed and kornia's version (its samplers define the views)."""
        import kornia

        return {"builtin": [self.crop_padding, self.horizontal_flip], "seed": self.seed, "kornia": kornia.__version__,
                "pipeline": [[name, json.loads(json.dumps(kwargs, sort_keys=True, default=repr))]
                             for name, kwargs in self.entries]}

    def __repr__(self) -> str:
        return f"KorniaAugment({[{'name': n, **k} for n, k in self.entries]}, seed={self.seed}, " \
               f"crop_padding={self.crop_padding}, horizontal_flip={self.horizontal_flip})"

    # applying ------------------------------------------------------------------------------------
    def __call__(self, images: torch.Tensor, indices: torch.Tensor, epoch: int) -> torch.Tensor:
        if not self.active:
            return images
        images = self.base(images, indices, epoch)
        indices = indices.cpu().long().reshape(-1)
        seeds = hash_uniform_ints(self.seed ^ _SEED_SALT, epoch, indices, len(self.ops)).tolist() if self.ops else []
        with torch.random.fork_rng(devices=[]):
            for position, op in enumerate(self.ops):
                if self.batch_level[position]:
                    images = self._apply_batch_level(op, images, indices, epoch, position)
                else:
                    images = self._apply_per_sample(op, images, [row[position] for row in seeds], position)
        return images.contiguous()

    def _apply_batch_level(self, op: torch.nn.Module, images: torch.Tensor, indices: torch.Tensor, epoch: int,
                           position: int) -> torch.Tensor:
        digest = hashlib.sha256(json.dumps([self.seed, epoch, position, indices.tolist()]).encode()).digest()
        torch.default_generator.manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
        params = op.forward_parameters(images.shape)
        return op(images, params=_to_device(params, images.device))

    def _keys_per_sample(self, op: torch.nn.Module, position: int, shape: tuple[int, ...]) -> set[str]:
        """The parameter entries kornia draws one per sample (their first dim is the batch size)."""
        key = (position, shape)
        if key not in self._per_sample_keys:
            probes = [op.forward_parameters((n, *shape)) for n in (2, 3)]
            self._per_sample_keys[key] = {k for k in probes[0] if k != "forward_input_shape"
                                          and all(torch.is_tensor(p[k]) and p[k].dim() > 0 and p[k].shape[0] == n
                                                  for p, n in zip(probes, (2, 3), strict=True))}
        return self._per_sample_keys[key]

    def _apply_per_sample(self, op: torch.nn.Module, images: torch.Tensor, seeds: list[int],
                          position: int) -> torch.Tensor:
        shape = tuple(images.shape[1:])
        per_sample = self._keys_per_sample(op, position, shape)
        drawn = []
        for seed in seeds:
            torch.default_generator.manual_seed(seed)  # the CPU one only (kornia draws there): cheap
            drawn.append(op.forward_parameters((1, *shape)))
        groups: dict[str, list[int]] = {}  # samples that drew the same per-batch entries go together
        for i, params in enumerate(drawn):
            shared = {k: v.tolist() if torch.is_tensor(v) else repr(v) for k, v in params.items()
                      if k not in per_sample and k != "forward_input_shape"}
            groups.setdefault(json.dumps(shared, sort_keys=True), []).append(i)
        out = None
        for members in groups.values():
            params = dict(drawn[members[0]])
            for k in per_sample:
                params[k] = torch.cat([drawn[i][k] for i in members])
            subset = images if len(members) == len(seeds) else images[torch.tensor(members, device=images.device)]
            params["forward_input_shape"] = torch.tensor(subset.shape)
            result = op(subset, params=_to_device(params, images.device))
            if len(members) == len(seeds):
                return result
            if out is None:
                out = result.new_empty((len(seeds), *result.shape[1:]))
            out[torch.tensor(members, device=images.device)] = result
        return out


def _to_device(params: Any, device: torch.device) -> Any:
    if isinstance(params, dict):
        return {k: v.to(device) if torch.is_tensor(v) and k != "forward_input_shape" else v
                for k, v in params.items()}
    return params


def build_augment(pipeline: Sequence[Mapping[str, Any] | tuple], seed: int, crop_padding: int = 0,
                  horizontal_flip: bool = False) -> Augment | KorniaAugment:
    """The built-in `Augment` without a pipeline (exactly as before), else a `KorniaAugment`."""
    if not pipeline:
        return Augment(crop_padding, horizontal_flip, seed)
    return KorniaAugment(pipeline, seed, crop_padding, horizontal_flip)


__all__ = ["INSTALL_HINT", "KorniaAugment", "build_augment", "build_op", "resolve_op", "split_entry"]
