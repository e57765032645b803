"""Gradient accumulation: the optimiser steps once every `accumulate_steps` batches.

    training:
      accumulate_steps: 4          # Distiller(..., accumulate_steps=4)

The loop takes the batches of an epoch in groups of N (micro-batches). Each micro-batch's loss is
weighted by its share of the group's samples, which is 1/N for a group of N full batches, so a
group gives the gradient of one batch N times larger: at batch 16 with N=4 the student takes the
steps it would take at batch 64, up to float rounding (exactly that only for models whose forward
does not depend on the batch: BatchNorm's statistics and dropout's draws differ). The last group
of an epoch may be shorter; it steps too, weighted by its own samples (a smaller batch, as the
last batch of an epoch is without accumulation). Gradients are clipped once per optimiser step,
on the group's gradient.

The learning-rate schedule counts optimiser steps: `ceil(batches / N)` an epoch. Under DDP the
micro-batches before the last of a group run under `no_sync` (no gradient all-reduce), and the
group's sample count is summed over the processes once per group.

Interrupts: a stop request (Ctrl-C, `request_stop()`, early stopping) takes effect at the end of
the group, after its optimiser step, so checkpoints are always at group boundaries and never hold
partial gradients; a resumed run starts at the next group, and a checkpoint refuses to resume with
another N.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from kdistill.engine.batch import batch_size_of, split_batch
from kdistill.engine.distributed import all_reduce_sum, current_world


def check_steps(value: int) -> int:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"accumulate_steps must be an integer >= 1 (got {value!r})")
    return value


def optimizer_steps(batches: int, accumulate_steps: int) -> int:
    """Optimiser steps in an epoch of `batches` batches."""
    return math.ceil(batches / accumulate_steps)


def micro_batch_groups(loader: Iterable[Any], accumulate_steps: int,
                       device: torch.device) -> Iterator[list[tuple[Any, float | torch.Tensor | None]]]:
    """The loader's batches in lists of `accumulate_steps` (the last one may be shorter), each with its
    loss weight; without accumulation, one batch at a time with weight None (the plain step)."""
    iterator = iter(loader)
    while group := list(itertools.islice(iterator, accumulate_steps)):
        yield list(zip(group, group_weights(group, device) if accumulate_steps > 1 else [None], strict=True))


def group_weights(group: list[Any], device: torch.device) -> list[float | torch.Tensor]:
    """Each micro-batch's loss weight: its share of the group's samples (over all processes; with DDP's
    gradient mean, `local_n * W / global_n` as for one batch)."""
    sizes = [batch_size_of(split_batch(batch)[0]) for batch in group]
    world = current_world()
    if not world.distributed:
        total = sum(sizes)
        return [size / total for size in sizes]
    total = all_reduce_sum(torch.tensor([float(sum(sizes))], device=device))[0]
    return [size * world.world_size / total for size in sizes]


def no_sync(module: nn.Module | None) -> contextlib.AbstractContextManager:
    """DDP's `no_sync` (through a `torch.compile` wrapper), or nothing when not distributed."""
    ddp = getattr(module, "_orig_mod", module)
    return ddp.no_sync() if hasattr(ddp, "no_sync") else contextlib.nullcontext()


__all__ = ["check_steps", "group_weights", "micro_batch_groups", "no_sync", "optimizer_steps"]
