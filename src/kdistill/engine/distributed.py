"""Multi-process training on torch.distributed (DDP launched by torchrun).

Nothing here replaces torch's engines: this module only reads torchrun's environment and starts
the process group (gloo on CPU, nccl on GPU). The collective calls the loop needs (summing
metrics, agreeing on a stop, waiting for rank 0's files) live in the leaf module
`kdistill.collectives`, which methods use too; they are re-exported here.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import torch
import torch.distributed as dist

from kdistill.collectives import (
    World,
    all_reduce_sum,
    any_rank,
    average_gradients,
    barrier,
    broadcast_object,
    broadcast_tensors,
    current_world,
    gather_batch,
    gather_rows,
    reduce_sums,
    shard_weight,
)


def setup_from_env() -> World:
    """Start the process group if torchrun launched us with WORLD_SIZE > 1; else a 1-process world."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return World()
    if not dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available() and local_rank < torch.cuda.device_count():
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=process_group_backend())
    return current_world()


def process_group_backend() -> str:
    """gloo for CPU tensors and, where CUDA is present, nccl for GPU tensors, in one group: the
    process group starts before the config says which device the run uses, and `--device cpu` on
    a GPU machine must still work (nccl alone cannot reduce CPU tensors)."""
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def shutdown(wait: bool = True) -> None:
    """Wait for every process (`wait`), then close the process group. A process that exits with
    the group still open can abort in gloo's teardown ("terminate called without an active
    exception") while another rank is finishing a collective, turning a clean stop (Ctrl-C, the end
    of a run) into a failed launch. After an error on this rank, do not wait: the others may never
    reach the barrier."""
    if dist.is_available() and dist.is_initialized():
        try:
            if wait:
                dist.barrier()
        finally:
            dist.destroy_process_group()


def exit_process(code: int = 0) -> NoReturn:
    """End a torchrun worker: close the process group, flush, and exit without the interpreter's
    teardown. After a stopped run (Ctrl-C, `request_stop`) that teardown has aborted under load
    in gloo's threads ("terminate called without an active exception", exit code -6), failing the
    whole launch after every file was written; by then there is nothing left to clean up."""
    shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


__all__ = ["World", "all_reduce_sum", "any_rank", "average_gradients", "barrier", "broadcast_object",
           "broadcast_tensors", "current_world", "gather_batch", "gather_rows", "process_group_backend",
           "reduce_sums", "setup_from_env", "shard_weight", "shutdown", "exit_process"]
