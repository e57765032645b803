"""Checkpoints written atomically (temp file, fsync, rename): a crash never leaves a torn file.

A training checkpoint holds everything a resumed run needs to take exactly the steps an
uninterrupted one would: weights (student and methods), optimiser, schedule, loss scaler, the RNG
states, the position in the epoch with its running sums, and the metrics history; with the
training features on (`hooks.py`), their state too: callbacks', the EMA weights, the best value, the
early-stopping counter, the gradient-accumulation count.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

CHECKPOINT_FORMAT = 1


def atomic_save(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def training_state(*, epoch: int, step_in_epoch: int, student: nn.Module, methods: nn.Module,
                   optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any,
                   running: dict[str, torch.Tensor], history: list[dict[str, Any]],
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The training state; `extra` holds more entries (the training features'), read back by their owners."""
    return {
        "format": CHECKPOINT_FORMAT, "epoch": epoch, "step_in_epoch": step_in_epoch,
        "student": student.state_dict(), "methods": methods.state_dict(),
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler else {},
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "running": {k: v.detach().cpu() for k, v in running.items()},
        "history": json.dumps(history),
        **(extra or {}),
    }


def restore_training_state(state: dict[str, Any], *, student: nn.Module, methods: nn.Module,
                           optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any,
                           ) -> tuple[int, int, dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Load a training checkpoint into the objects; returns (epoch, step in epoch, running sums, history)."""
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint format {state.get('format')} is not {CHECKPOINT_FORMAT}")
    student.load_state_dict(state["student"])
    methods.load_state_dict(state["methods"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler and state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"])
    if state["cuda_rng"]:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["epoch"], state["step_in_epoch"], state["running"], json.loads(state["history"])


def distiller_state(distiller: Any, epoch: int, step_in_epoch: int, running: dict[str, torch.Tensor]) -> dict[str, Any]:
    """A `Distiller`'s training state, with its training features' (and the accumulation count when > 1)."""
    extra = distiller.hooks.state_dict()
    if distiller.accumulate_steps > 1:
        extra["accumulate_steps"] = distiller.accumulate_steps
    return training_state(epoch=epoch, step_in_epoch=step_in_epoch, student=distiller.student.model,
                          methods=distiller.loss.methods, optimizer=distiller.optimizer,
                          scheduler=distiller.scheduler, scaler=distiller.scaler, running=running,
                          history=distiller.history, extra=extra)


def restore_distiller_state(distiller: Any, state: dict[str, Any]) -> tuple[int, int, dict[str, torch.Tensor]]:
    """Load `distiller_state` into a built `Distiller`; returns (epoch, step in epoch, running sums)."""
    if state.get("accumulate_steps", 1) != distiller.accumulate_steps:
        raise ValueError(f"the checkpoint accumulated {state.get('accumulate_steps', 1)} batches a step, this run "
                         f"{distiller.accumulate_steps}; resume with the same accumulate_steps")
    epoch, step, running, distiller.history = restore_training_state(
        state, student=distiller.student.model, methods=distiller.loss.methods, optimizer=distiller.optimizer,
        scheduler=distiller.scheduler, scaler=distiller.scaler)
    distiller.hooks.load_state_dict(state)
    # mid-epoch sums were reduced over processes before saving: rank 0 carries them alone
    device = distiller.device
    running = {k: v.to(device) if distiller.world.is_main else torch.zeros_like(v, device=device)
               for k, v in running.items()}
    return epoch, step, running
