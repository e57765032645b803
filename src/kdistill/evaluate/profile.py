"""What a deployment cares about: parameters, bytes on disk, CPU latency."""

from __future__ import annotations

import io
import statistics
import time
from typing import Any

import torch
from torch import nn

from kdistill.engine.batch import call_model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def size_on_disk_bytes(model: nn.Module) -> int:
    """Bytes of the serialised state dict (what `torch.save(model.state_dict())` writes)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


@torch.inference_mode()
def cpu_latency_ms(model: nn.Module, sample: Any, repeats: int = 30, warmup: int = 5) -> float:
    """Median wall time of one forward pass on `sample` (a batch) on the CPU, in milliseconds."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    model.cpu()
    times = []
    for index in range(warmup + repeats):
        started = time.perf_counter()
        call_model(model, sample)
        if index >= warmup:
            times.append((time.perf_counter() - started) * 1000)
    model.to(device)
    model.train(was_training)
    return statistics.median(times)
