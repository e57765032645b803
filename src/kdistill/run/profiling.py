"""One row of the results table: a model's test accuracy, parameters, bytes on disk and CPU latency,
plus the deployment profile the report's "Profile" section shows (FLOPs, latency at batch 1 and 64
with its spread, peak memory), for image and text models alike (a text batch is a dict of tensors)."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from kdistill.config import ExperimentConfig
from kdistill.data import DataBundle, InMemoryDataset
from kdistill.data.transforms import Normalize, to_float
from kdistill.engine import Distiller
from kdistill.engine.batch import split_batch
from kdistill.evaluate import count_parameters, cpu_latency_ms, size_on_disk_bytes
from kdistill.evaluate.profile import profile_model
from kdistill.results import ModelResult

LOG = logging.getLogger("kdistill")


def sample_batch(data: Any, batch_size: int, norm: Normalize) -> Any:
    """The first `batch_size` samples of `data`, normalised: what the latency is measured on."""
    if isinstance(data, InMemoryDataset):
        batch = data.__getitems__(list(range(min(batch_size, len(data)))))
    else:
        batch = torch.utils.data.default_collate([data[i] for i in range(min(batch_size, len(data)))])
    inputs, _, _ = split_batch(batch)
    return norm(to_float(inputs)) if torch.is_tensor(inputs) else inputs


def profile_row(role: str, model: nn.Module, bundle: DataBundle, norm: Normalize, config: ExperimentConfig,
                accuracy: float | None = None, progress: bool = False) -> ModelResult:
    if accuracy is None:
        evaluator = Distiller(None, model, progress=progress, device=config.training.device,
                              eval_batch_size=config.data.eval_batch_size, student_normalization=norm)
        accuracy = evaluator.evaluate(bundle.test)["acc"]
    sample = sample_batch(bundle.test, 64, norm.cpu())
    latency = cpu_latency_ms(model, sample)
    try:
        extra = {"profile": profile_model(model, sample).as_record()}
    except Exception as error:  # noqa: BLE001 - the profile is an extra: it never costs a finished run its row
        LOG.warning("kdistill: no deployment profile for the %s (%s: %s); accuracy and latency are kept",
                    role, type(error).__name__, error)
        extra = {}
    return ModelResult(role, accuracy, count_parameters(model), size_on_disk_bytes(model), latency, extra)
