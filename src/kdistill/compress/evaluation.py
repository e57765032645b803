"""Accuracy and profile of one compression stage's artefact, PyTorch or ONNX Runtime, measured the
same way: a split through the model's own normalisation, the profile on real held-out inputs.

Inputs are a tensor (images, features) or a dict of tensors (a text model's `input_ids`,
`attention_mask`); `evaluate.profile` slices either along the batch axis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdistill.data.transforms import Normalize, to_float
from kdistill.engine import Distiller
from kdistill.engine.batch import split_batch
from kdistill.evaluate.profile import onnx_session, profile_model, profile_onnx


def torch_accuracy(model: nn.Module, data: Any, norm: Normalize, batch_size: int = 512) -> float:
    """Top-1 accuracy as every kdistill stage reports it (`Distiller.evaluate`), on the CPU."""
    return Distiller(None, model, progress=False, device="cpu", eval_batch_size=batch_size,
                     student_normalization=norm).evaluate(data)["acc"]


def normalized_batches(data: Any, norm: Normalize, batch_size: int = 256):
    """(inputs as the model sees them, labels) over `data`, in order."""
    for start in range(0, len(data), batch_size):
        batch = data.__getitems__(list(range(start, min(start + batch_size, len(data)))))
        inputs, labels, _ = split_batch(batch)
        yield norm.cpu()(to_float(inputs)), labels


def onnx_accuracy(path: str | Path, data: Any, norm: Normalize, threads: int = 1) -> float:
    """Top-1 accuracy of an ONNX Runtime session on `data` (an in-memory data set)."""
    session = onnx_session(path, threads)
    name = session.get_inputs()[0].name
    correct = total = 0
    for inputs, labels in normalized_batches(data, norm):
        logits = session.run(None, {name: inputs.numpy()})[0]
        correct += int((torch.from_numpy(logits).argmax(1) == labels).sum())
        total += len(labels)
    return correct / max(total, 1)


def sample_inputs(data: Any, norm: Normalize, count: int) -> torch.Tensor:
    """The first `count` inputs of `data`, normalised (profiling, export checks, calibration)."""
    batch = data.__getitems__(list(range(min(count, len(data)))))
    inputs, _, _ = split_batch(batch)
    return norm.cpu()(to_float(inputs))


def torch_profile(model: nn.Module, sample: Any, settings: Any) -> dict[str, Any]:
    """`evaluate.profile.profile_model`'s record at the pipeline's profile settings."""
    return profile_model(model, sample, settings.batch_size, settings.threads, settings.repeats,
                         settings.warmup).as_record()


def onnx_profile(path: str | Path, sample: torch.Tensor, settings: Any,
                 float_profile: dict[str, Any]) -> dict[str, Any]:
    """The ONNX file's own size, latency and memory; parameters and FLOPs of the model it holds."""
    record = profile_onnx(path, sample, settings.batch_size, settings.threads, settings.repeats, settings.warmup)
    for key in ("parameters", "nonzero_parameters", "flops_per_sample"):
        record[key] = float_profile.get(key)
    return record
