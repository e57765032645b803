"""What training steps call instead of the bare student: its DDP wrapper and/or `torch.compile`."""

from __future__ import annotations

import torch
from torch import nn

from kdistill.engine.distributed import World, broadcast_tensors


def wrap_student(student: nn.Module, loss: nn.Module, world: World, device: torch.device,
                 compile: bool | str) -> nn.Module | None:
    """DDP around the student when distributed (the methods' own parameters, which DDP does not
    manage, are broadcast from rank 0 first), then `torch.compile` when asked; None when neither.
    Call it after the taps are attached, so their hooks are traced into the compiled graph."""
    wrapped = None
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel

        broadcast_tensors(list(loss.state_dict().values()))  # adapters start equal on every rank
        device_ids = [device.index] if device.type == "cuda" else None
        wrapped = DistributedDataParallel(student, device_ids=device_ids)
    if compile:
        backend = compile if isinstance(compile, str) else "inductor"
        wrapped = torch.compile(wrapped or student, backend=backend)
    return wrapped


__all__ = ["wrap_student"]
