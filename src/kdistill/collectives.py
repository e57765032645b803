"""Collective calls over torch.distributed, usable by any module (methods included) without the engine.

A leaf module (it imports only torch): who this process is (`current_world`), and the few
collectives kdistill needs (summing metrics, agreeing on a stop, gathering rows for a memory,
broadcasting rank 0's objects and tensors, waiting for rank 0's files). Each is a no-op in a
1-process world. Starting the process group lives in `kdistill.engine.distributed`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def current_world() -> World:
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if current_world().distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is true on any: all ranks must stop at the same step."""
    if not current_world().distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def barrier() -> None:
    if current_world().distributed:
        dist.barrier()


def broadcast_object(obj: object) -> object:
    if not current_world().distributed:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_rows(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """Concatenate each tensor's rows from all ranks, in rank order (uneven sizes allowed).

    Memories that every rank updates from its own shard (CRD's) stay identical across ranks only
    if every rank applies every rank's rows."""
    if not current_world().distributed:
        return tensors
    gathered: list = [None] * current_world().world_size
    dist.all_gather_object(gathered, [t.cpu() if t is not None else None for t in tensors])
    device = next((t.device for t in tensors if t is not None), torch.device("cpu"))
    out = []
    for position in range(len(tensors)):
        parts = [rank_parts[position] for rank_parts in gathered]
        out.append(None if parts[0] is None else torch.cat(parts).to(device))
    return tuple(out)


def broadcast_tensors(tensors: list[torch.Tensor]) -> None:
    """Overwrite every rank's tensors with rank 0's (in place)."""
    if current_world().distributed:
        for tensor in tensors:
            dist.broadcast(tensor, src=0)


def average_gradients(parameters: list[torch.nn.Parameter]) -> None:
    """All-reduce the gradients of parameters DDP does not manage (method adapters, embeddings)."""
    world = current_world()
    if not world.distributed:
        return
    for parameter in parameters:
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)
            parameter.grad.div_(world.world_size)


def shard_weight(local_size: int, device: torch.device) -> torch.Tensor:
    """local_n * W / global_n: with DDP's gradient mean this gives the global batch mean exactly,
    also for a last batch that splits unevenly over the processes."""
    sizes = all_reduce_sum(torch.tensor([float(local_size)], device=device))
    return local_size * current_world().world_size / sizes[0]


def reduce_sums(running: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Per-epoch sums over all processes (a no-op with one)."""
    if not current_world().distributed or not running:
        return running
    keys = sorted(running)
    totals = all_reduce_sum(torch.stack([torch.as_tensor(running[k], dtype=torch.float64, device=device)
                                         for k in keys]))
    return dict(zip(keys, totals, strict=True))
