"""The shape every data set takes inside kdistill.

Built-in data sets live in memory as tensors and serve whole batches at once (`__getitems__`),
which keeps the Python per-sample overhead out of small-model training where it would dominate.
Each batch is a dict: `input`, `label`, and `index` (the sample's position, which augmentation
replay and contrastive memories need). User data sets may yield anything; see `engine.batch`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import ConcatDataset, Dataset, Subset, default_collate

from kdistill.digest import tensors_digest
from kdistill.errors import BadInput


class InMemoryDataset(Dataset):
    """Inputs and labels held as tensors; batches are sliced, not collated."""

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, classes: list[str] | None = None) -> None:
        if len(inputs) != len(labels):
            raise BadInput(f"data set: {len(inputs)} inputs but {len(labels)} labels; give one label per input")
        self.inputs = inputs
        self.labels = labels.long()
        largest = int(self.labels.max()) if len(self.labels) else -1
        self.classes = classes or [str(c) for c in range(largest + 1)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input": self.inputs[index], "label": self.labels[index], "index": torch.tensor(index)}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return {"input": self.inputs[idx], "label": self.labels[idx], "index": idx}

    def subset(self, indices: torch.Tensor) -> InMemoryDataset:
        """A new data set of the chosen samples, re-indexed from 0."""
        return InMemoryDataset(self.inputs[indices], self.labels[indices], self.classes)

    def fingerprint(self) -> str:
        """A digest of the contents and order: what a cache of outputs on this data depends on."""
        return tensors_digest([("inputs", self.inputs), ("labels", self.labels)])[:16]


def label_order(names: Sequence[str]) -> list[str]:
    """The id order of a set of label names read from files: numeric when all are integers (so
    "0".."10" keep their ids), else alphabetical. The training split decides it; others reuse it."""
    unique = set(names)
    if unique and all(name.lstrip("-").isdigit() for name in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def batch_collate(batch: object) -> object:
    """A batch a data set's `__getitems__` made whole (an `InMemoryDataset`'s, or torch's `Subset`
    over one, which passes the call on) goes through as it is; a list of samples is collated as
    torch's default does. torch's default alone fails on the former (`KeyError: 0`)."""
    if isinstance(batch, Mapping):
        return batch
    return default_collate(batch)


def tensors_pair(data: object) -> InMemoryDataset | None:
    """`(inputs, labels)` given where a data set belongs (`fit((X, y))`, as scikit-learn takes them): the
    in-memory data set of those tensors; None for anything else. Read as a data set, the pair would be
    two samples, and fail in torch's collate with a shape error far from the cause. Labels must be one
    integer class id per input; other labels are refused with the fix."""
    if not isinstance(data, tuple) or len(data) != 2 or not all(torch.is_tensor(t) for t in data):
        return None
    inputs, labels = data
    if labels.dim() != 1 or labels.is_floating_point() or len(inputs) != len(labels):
        raise BadInput(f"(inputs, labels) given as the data: labels must be one integer class id per input (got "
                       f"inputs {tuple(inputs.shape)}, labels {tuple(labels.shape)} {labels.dtype}); for other "
                       "labels pass a Dataset (e.g. torch.utils.data.TensorDataset(inputs, labels))")
    return InMemoryDataset(inputs, labels)


def as_in_memory(data: Dataset) -> Dataset:
    """torch's `Subset` (what `random_split` returns) and `ConcatDataset` of kdistill's in-memory data
    sets, nested or not, as the `InMemoryDataset` of their samples; anything else as it is. Through
    torch's wrappers each batch's `index` would be a sample's position in its own underlying data set:
    out of range for what is sized to the whole (CRD's memory), repeated across a ConcatDataset's
    parts (two samples sharing one memory row), and not what the teacher cache keys by. The copy
    numbers the samples from 0 and has a fingerprint."""
    pair = tensors_pair(data)
    if pair is not None:
        return pair
    if isinstance(data, ConcatDataset):  # plain in-memory parts only: a subclass's batches carry more
        parts = [as_in_memory(part) for part in data.datasets]  # (a text set's attention masks, clean labels)
        if not parts or not all(type(part) is InMemoryDataset for part in parts):
            return data
        if len({(tuple(p.inputs.shape[1:]), p.inputs.dtype) for p in parts}) > 1:
            return data  # parts of other shapes cannot be one tensor; torch's own path reports it
        classes = parts[0].classes if all(p.classes == parts[0].classes for p in parts) else None
        return InMemoryDataset(torch.cat([p.inputs for p in parts]), torch.cat([p.labels for p in parts]), classes)
    indices = None
    base = data
    while isinstance(base, Subset):
        own = torch.as_tensor(list(base.indices), dtype=torch.long)
        indices = own if indices is None else own[indices]
        base = base.dataset
    base = as_in_memory(base) if isinstance(base, ConcatDataset) else base
    keeps_its_kind = type(base) is InMemoryDataset or (  # a subclass that defines its own subset keeps its batches
        isinstance(base, InMemoryDataset) and type(base).subset is not InMemoryDataset.subset)
    if indices is None or not keeps_its_kind:
        return data
    return base.subset(indices)


@dataclass
class DataBundle:
    """The splits of one data set and what a model needs to know about its inputs."""

    name: str
    train: Dataset
    test: Dataset
    num_classes: int
    val: Dataset | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    image: bool = False
    classes: list[str] = field(default_factory=list)
    features: list[str] | None = None  # a table's encoded feature names (`column=value` for one-hot slots)
    # sizes the data decides (e.g. a recommender's user / item rows), given to a model factory that takes
    # them by name and was not given them in its options
    model_defaults: dict[str, Any] = field(default_factory=dict)
    train_split: Any = None  # set by a run's data loading: the split it trains on (limited, validation out)

    @property
    def input_shape(self) -> tuple[int, ...]:
        sample = self.train[0]
        x = sample["input"] if isinstance(sample, dict) else sample[0]
        return tuple(x.shape)


def split_validation(train: InMemoryDataset, fraction: float, seed: int) -> tuple[InMemoryDataset, InMemoryDataset]:
    """Hold out a seeded, stratified fraction of the training set for validation."""
    generator = torch.Generator().manual_seed(seed)
    val_idx: list[torch.Tensor] = []
    for label in train.labels.unique():
        members = (train.labels == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        val_idx.append(members[: round(len(members) * fraction)])
    val = torch.cat(val_idx).sort().values
    keep = torch.ones(len(train), dtype=torch.bool)
    keep[val] = False
    return train.subset(keep.nonzero().flatten()), train.subset(val)


def limit_samples(data: InMemoryDataset, limit: int, seed: int) -> InMemoryDataset:
    """A seeded random subset of `limit` samples (benchmarks on a budget)."""
    if limit >= len(data):
        return data
    generator = torch.Generator().manual_seed(seed)
    return data.subset(torch.randperm(len(data), generator=generator)[:limit].sort().values)
