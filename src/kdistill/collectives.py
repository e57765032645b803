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


def batch_order(sizes: list[int]) -> list[int] | None:
    """Where each gathered row (in rank order) sits in the global batch, or None to keep rank order.

    kdistill's sampler gives rank r the rows r, r + W, r + 2W, ... of each global batch, so rank r
    holds ceil((N - r) / W) rows; for such sizes the rows are put back in that order, which is the
    batch one process would have seen (a FIFO memory then fills exactly as with one process).
    Other splits (a user's own sampler) keep rank order."""
    world, total = len(sizes), sum(sizes)
    if sizes != [len(range(r, total, world)) for r in range(world)]:
        return None
    offsets = [sum(sizes[:r]) for r in range(world)]
    return [offsets[p % world] + p // world for p in range(total)]


def _gather_padded(tensor: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Every rank's rows concatenated in rank order (all_gather needs equal shapes: pad, then trim)."""
    padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]))
    padded[: len(tensor)] = tensor
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:n] for part, n in zip(parts, sizes, strict=True)])


class _GatherBatch(torch.autograd.Function):
    """All-gather with a backward pass: each rank's loss on the global batch depends on every
    rank's rows, so a row's gradient is the sum over ranks of the gradients of their losses (a
    reduce-scatter, written as an all-reduce because gloo has no reduce-scatter). torch's own
    `torch.distributed.nn.functional.all_gather` needs equal shapes on every rank, which the last
    batch of an epoch does not have."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, sizes: list[int], order: list[int] | None, rank: int) -> torch.Tensor:
        ctx.sizes, ctx.order, ctx.rank = sizes, order, rank
        gathered = _gather_padded(tensor, sizes)
        return gathered if order is None else gathered[torch.tensor(order, device=tensor.device)]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        if ctx.order is None:
            ranked = grad.contiguous().clone()
        else:
            ranked = torch.empty_like(grad)
            ranked[torch.tensor(ctx.order, device=grad.device)] = grad
        dist.all_reduce(ranked, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return ranked[start : start + ctx.sizes[ctx.rank]], None, None, None


def gather_batch(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The global batch of each tensor (rows of every rank, in the global batch's order where the
    split is kdistill's own), keeping gradients: for losses that compare the samples of a batch
    (similarity matrices, pairwise distances, correlations over the batch), which on a per-rank
    shard would compute another loss than one process on the whole batch.

    Every rank must call it the same number of times with tensors of the same rows (a training
    step under DDP does). Each rank then holds the same loss; with DDP's gradient mean and the
    loop's shard weights (which sum to the number of processes) the gradient equals one
    process's on the global batch."""
    world = current_world()
    if not world.distributed or not tensors:
        return tensors
    count = torch.tensor([len(tensors[0])], device=tensors[0].device)
    counts = [torch.zeros_like(count) for _ in range(world.world_size)]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    order = batch_order(sizes)
    for tensor in tensors:
        if len(tensor) != len(tensors[0]):
            raise ValueError(f"gather_batch: tensors of {len(tensors[0])} and {len(tensor)} rows; pass the rows "
                             "of one batch")
    return tuple(_GatherBatch.apply(t, sizes, order, world.rank) for t in tensors)


def gather_rows(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """Concatenate each tensor's rows from all ranks (uneven sizes allowed), without gradients, in
    the global batch's order where the split is kdistill's own (see `batch_order`).

    Memories that every rank updates from its own shard (CRD's) stay identical across ranks only
    if every rank applies every rank's rows; in the global batch's order a FIFO queue holds what
    it holds with one process."""
    if not current_world().distributed:
        return tensors
    gathered: list = [None] * current_world().world_size
    dist.all_gather_object(gathered, [t.cpu() if t is not None else None for t in tensors])
    device = next((t.device for t in tensors if t is not None), torch.device("cpu"))
    out = []
    for position in range(len(tensors)):
        parts = [rank_parts[position] for rank_parts in gathered]
        if parts[0] is None:
            out.append(None)
            continue
        rows = torch.cat(parts)
        order = batch_order([len(p) for p in parts])
        out.append((rows if order is None else rows[torch.tensor(order)]).to(device))
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


def position_mean_scale(positions: int, blocks: int, device: torch.device) -> float:
    """The factor that turns this process's sum over its scored positions into its part of the mean
    over the global batch's positions: 1 / positions on one process. Under DDP the loop weights each
    rank's loss by its share of the global batch's rows (n_r W / N) and DDP averages the gradients;
    N / (P n_r), P the global batch's positions, makes that the mean over all P positions, as one
    process computes it, also when rows hold different numbers of positions (a padded last block).
    Every rank must call it at the same step (one all-reduce)."""
    if not current_world().distributed:
        return 1.0 / positions if positions else 0.0
    counts = all_reduce_sum(torch.tensor([float(positions), float(blocks)], dtype=torch.float64, device=device))
    if positions == 0 or counts[0] == 0:
        return 0.0
    return float(counts[1]) / (float(counts[0]) * blocks)


def reduce_sums(running: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Per-epoch sums over all processes (a no-op with one)."""
    if not current_world().distributed or not running:
        return running
    keys = sorted(running)
    totals = all_reduce_sum(torch.stack([torch.as_tensor(running[k], dtype=torch.float64, device=device)
                                         for k in keys]))
    return dict(zip(keys, totals, strict=True))
