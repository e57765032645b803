"""Where and in what precision the loop runs."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import nn

from kdistill.engine.distributed import current_world
from kdistill.errors import BadInput

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device) -> torch.device:
    """`auto`: this process's GPU under torchrun (its local rank) when there is one, else the CPU."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            local_rank = current_world().local_rank
            check_gpu_index(local_rank, "auto")
            return torch.device("cuda", local_rank)
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):  # torch's message lists its twenty-odd device types
        raise BadInput(f"device: '{device}' is not a device; use auto, cpu, cuda (or cuda:N) or mps") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise BadInput(f"device '{device}' was asked for, but CUDA is not available here; use cpu or auto")
    if resolved.type == "cuda":
        check_gpu_index(resolved.index, str(device))
    return resolved


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """torch.autocast for bf16 / fp16, nothing for fp32."""
    if precision not in PRECISIONS:
        raise BadInput(f"precision: must be one of {', '.join(PRECISIONS)} (got '{precision}')")
    dtype = PRECISIONS[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def check_gpu_index(index: int | None, asked: str) -> None:
    """One GPU per process: more processes on a machine than it has GPUs would share a GPU, which
    nccl refuses (or the device does not exist); say so before any work starts."""
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        processes = current_world().world_size
        raise BadInput(f"device '{asked}' means GPU {index}, but this machine has {count} GPU(s)"
                       + (f" for {processes} processes: run with --nproc {count} or fewer, or --device cpu"
                          if processes > 1 else ": use cuda:0..cuda:" + str(count - 1)))


def move_model(model: nn.Module, device: torch.device | str) -> nn.Module:
    """`model.to(device)` that is safe inside `torch.inference_mode`: parameters moved there would
    be inference tensors, which can never train again ("Setting requires_grad=True on inference
    tensor"). On a CPU-only machine the move is a no-op and hides this; on a GPU machine it is not."""
    with torch.inference_mode(False):
        return model.to(device)


def check_processes_fit(device: str, processes: int) -> None:
    """Before launching `processes` on this machine: on GPUs each process needs its own (nccl
    refuses two processes on one GPU), so refuse in one line here rather than in every worker."""
    if processes <= 1 or not torch.cuda.is_available() or not (device == "auto" or device.startswith("cuda")):
        return
    count = torch.cuda.device_count()
    if processes > count:
        raise BadInput(f"--nproc {processes} needs one GPU per process, but this machine has {count}: use "
                         f"--nproc {count}, or --device cpu to run {processes} processes on the CPU")


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool = True) -> Iterator[None]:
    """Bit-for-bit repeatable GPU runs for the body (`training.deterministic`): PyTorch's
    deterministic algorithms (an op without one raises instead of silently varying), cuDNN without
    autotuning, and cuBLAS's fixed workspace (read when the process first uses cuBLAS: `kdistill`
    sets it before any GPU work). Slower on a GPU; CPU runs are repeatable without it. Process-wide
    settings, so they are set around the run, not inside the Distiller, and restored after."""
    if not enabled:
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1], before[2]
        if before[3] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
