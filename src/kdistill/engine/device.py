"""Where and in what precision the loop runs."""

from __future__ import annotations

import contextlib

import torch

from kdistill.engine.distributed import current_world

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device) -> torch.device:
    """`auto`: this process's GPU under torchrun (its local rank) when there is one, else the CPU."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            local_rank = current_world().local_rank
            check_gpu_index(local_rank, "auto")
            return torch.device("cuda", local_rank)
        return torch.device("cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{device}' was asked for, but CUDA is not available here")
    if resolved.type == "cuda":
        check_gpu_index(resolved.index, str(device))
    return resolved


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """torch.autocast for bf16 / fp16, nothing for fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: must be one of {', '.join(PRECISIONS)} (got '{precision}')")
    dtype = PRECISIONS[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def check_gpu_index(index: int | None, asked: str) -> None:
    """One GPU per process: more processes on a machine than it has GPUs would share a GPU, which
    nccl refuses (or the device does not exist); say so before any work starts."""
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        processes = current_world().world_size
        raise ValueError(f"device '{asked}' means GPU {index}, but this machine has {count} GPU(s)"
                         + (f" for {processes} processes: run with --nproc {count} or fewer, or --device cpu"
                            if processes > 1 else ": use cuda:0..cuda:" + str(count - 1)))
