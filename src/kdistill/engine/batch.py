"""Batches and outputs of any shape: tensors, tuples, dicts, Hugging Face output objects.

Nothing in the loop assumes `(x, y)` or images. A batch is split into what the model takes, the
labels, and the sample indices (when the data set provides them); model outputs are narrowed to
their logits by one small rule set.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from kdistill.errors import BadInput

LABEL_KEYS = ("label", "labels", "target", "targets", "y")
INDEX_KEYS = ("index", "indices", "idx")


def to_device(value: Any, device: torch.device, non_blocking: bool = False) -> Any:
    if torch.is_tensor(value):
        return value.to(device, non_blocking=non_blocking)
    if isinstance(value, Mapping):
        return {k: to_device(v, device, non_blocking) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return type(value)(to_device(v, device, non_blocking) for v in value)
    return value


def split_batch(batch: Any) -> tuple[Any, torch.Tensor | None, torch.Tensor | None]:
    """(model inputs, labels, sample indices) of one batch."""
    if isinstance(batch, Mapping):
        label_key = next((k for k in LABEL_KEYS if k in batch), None)
        index_key = next((k for k in INDEX_KEYS if k in batch), None)
        labels = batch[label_key] if label_key else None
        indices = batch[index_key] if index_key else None
        if "input" in batch:
            return batch["input"], labels, indices
        inputs = {k: v for k, v in batch.items() if k not in (label_key, index_key)}
        return inputs, labels, indices
    if isinstance(batch, tuple | list):
        if len(batch) == 2:
            return batch[0], batch[1], None
        if len(batch) == 3:
            return batch[0], batch[1], batch[2]
        raise ValueError(f"a tuple batch must be (inputs, labels) or (inputs, labels, indices), got {len(batch)} items")
    return batch, None, None


def call_model(model: nn.Module, inputs: Any) -> Any:
    """Dict inputs are keyword arguments (`input_ids=..., attention_mask=...`); others positional.
    When a model refuses a dict's keys as its arguments, say so: the dict may be a data set's sample
    without an `input` key (`{"image": x, "label": y}`), or an `input` that is itself a dict (a text
    data set's) given to a model that takes one tensor. Only a refusal by `forward`'s own signature
    is translated; a TypeError raised inside the model is its own."""
    if not isinstance(inputs, Mapping):
        return model(inputs)
    try:
        return model(**inputs)
    except TypeError as error:
        try:
            inspect.signature(model.forward).bind(**inputs)
        except TypeError:
            raise BadInput(f"{type(model).__name__}.forward does not take the batch's inputs {sorted(inputs)} as "
                           f"keyword arguments ({error}): a dict of inputs goes to the model that way (as a Hugging "
                           "Face model takes input_ids=...); give each sample its model input under 'input' (or yield "
                           "(inputs, labels)), or use a model that takes these keys") from error
        raise


def logits_of(output: Any) -> torch.Tensor:
    """The logits inside a model output: the tensor itself, `.logits`, `['logits']`, or element 0."""
    if torch.is_tensor(output):
        return output
    if isinstance(output, Mapping) and "logits" in output:
        return output["logits"]
    if hasattr(output, "logits") and torch.is_tensor(output.logits):
        return output.logits
    if isinstance(output, tuple | list) and output and torch.is_tensor(output[0]):
        return output[0]
    raise TypeError(
        f"cannot find logits in a model output of type {type(output).__name__}; return a tensor, a dict "
        "with 'logits', an object with .logits, or a tuple whose first element is the logits"
    )


def batch_size_of(inputs: Any) -> int:
    if torch.is_tensor(inputs):
        return inputs.shape[0]
    if isinstance(inputs, Mapping):
        return batch_size_of(next(iter(inputs.values())))
    if isinstance(inputs, tuple | list):
        return batch_size_of(inputs[0])
    raise TypeError(f"cannot tell the batch size of {type(inputs).__name__}")


def detach_clone(value: Any) -> Any:
    """Normal tensors from inference-mode ones, so losses may save them for backward."""
    if torch.is_tensor(value):
        return value.clone() if value.is_inference() else value
    if isinstance(value, Mapping):
        return {k: detach_clone(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return type(value)(detach_clone(v) for v in value)
    return value


def class_labels(labels: Any, logits: torch.Tensor | None = None) -> Any:
    """Labels as the losses take them: integer class ids of any dtype as int64, a (B, 1) column as (B,)
    where the logits they are scored against are (B, C) (given `logits`; per-position logits (B, C, 1)
    keep their (B, 1) labels), float (B, C) rows kept as class probabilities (one-hot or soft, as
    `F.cross_entropy` reads them). Float class ids (B,) are refused: they would be read as one
    probability row. Shape and dtype checks alone (no device sync), so it runs on every batch;
    non-tensors pass through."""
    if not torch.is_tensor(labels):
        return labels
    if labels.dim() == 2 and labels.shape[1] == 1 and logits is not None and logits.dim() == 2:
        labels = labels.squeeze(1)
    if labels.is_floating_point():
        if labels.dim() < 2:
            raise BadInput(f"labels must be integer class indices, got {labels.dtype} labels of shape "
                           f"{tuple(labels.shape)}; cast them (labels.long()). Float labels are read as class "
                           "probabilities only as rows of shape (B, C) (one-hot or soft labels)")
        return labels
    return labels if labels.dtype == torch.int64 else labels.long()


def label_classes(labels: torch.Tensor) -> torch.Tensor:
    """Class ids of `class_labels`' output: probability rows (B, C, ...) read as their argmax over C."""
    return labels.argmax(1) if labels.is_floating_point() else labels


def correct_count(logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """Samples classified right, for `train/acc`. Per-position scores (B, C, T...) such as a language
    model's count each sample as its share of right positions, ignoring labels of -100 (padding).
    Probability labels (float (B, C): one-hot or soft) count against each row's argmax."""
    if labels is None:
        return torch.zeros((), device=logits.device)
    labels = label_classes(class_labels(labels, logits))
    hits = logits.detach().argmax(1) == labels
    if labels.dim() == 1:
        return hits.sum()
    valid = labels != -100
    per_sample = (hits & valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1)
    return per_sample.sum()
