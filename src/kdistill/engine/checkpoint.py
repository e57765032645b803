"""Checkpoints written atomically (temp file, fsync, rename): a crash never leaves a torn file.

A training checkpoint holds everything a resumed run needs to take exactly the steps an
uninterrupted one would: weights (student and methods), optimiser, schedule, loss scaler, the RNG
states, the position in the epoch with its running sums, and the metrics history; with the
training features on (`hooks.py`), their state too: callbacks', the EMA weights, the best value, the
early-stopping counter, the gradient-accumulation count.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdistill.engine.loaders import restore_user_loader_rng, user_loader_rng
from kdistill.errors import StorageFailure, UnreadableFile

CHECKPOINT_FORMAT = 1


WRITE_FAILURES = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                  errno.EFBIG: "file size limit exceeded", errno.EROFS: "read-only file system",
                  errno.EACCES: "permission denied", errno.EPERM: "permission denied"}
UNREADABLE_CHECKPOINT = "truncated or not a PyTorch checkpoint"


def describe_target(path: Path) -> str:
    """What a file is to the user, by the names the engine gives them."""
    names = {"last.pt": "the checkpoint", "best.pt": "the best checkpoint", "student.pt": "the final weights",
             "metrics.jsonl": "the metrics log", "stage.json": "the stage record", "config.yaml": "the run's config"}
    return f"{names.get(path.name, 'the file')} {path}"


def last_good_checkpoint(path: Path) -> str:
    """Which checkpoint survived a failed write beside `path`: '(epoch N) is intact', or that none exists."""
    for candidate in (path.parent / "last.pt", path.parent / "checkpoints" / "last.pt"):
        if candidate.is_file():
            try:
                epoch, step = checkpoint_position(candidate)
            except Exception:  # noqa: BLE001 - reported, never raised from an error path
                return f"the previous checkpoint {candidate} could not be read back"
            return f"the last good checkpoint (epoch {epoch}{f', step {step}' if step else ''}) is intact"
    return "no checkpoint of this stage was written yet"


def storage_failure(error: OSError, path: Path, checkpointed: bool = True) -> OSError:
    """The one-line StorageFailure for an OSError while writing `path` (others are returned as they are)."""
    reason = WRITE_FAILURES.get(error.errno or 0)
    if reason is None:
        return error
    message = f"{reason} while writing {describe_target(path)}"
    if checkpointed:
        message += f"; {last_good_checkpoint(path)}"
    failure = StorageFailure(message)
    failure.errno = error.errno  # not filename: OSError would print it instead of the message
    return failure


class _RecordingWriter:
    """A file handle for torch.save that keeps the OSError of a failed write: torch turns it into a
    RuntimeError without the errno, which is what tells a full disk from a bug."""

    def __init__(self, handle: Any) -> None:
        self.handle, self.error = handle, None

    def write(self, data: Any) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.handle.flush()


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save through a temp file and a rename: a failed write (disk full, read-only) leaves the
    previous file untouched, removes the temp file and raises StorageFailure naming what it was."""
    path = Path(path)
    writer = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise storage_failure(error, path) from error
    try:
        with os.fdopen(fd, "wb") as handle:
            writer = _RecordingWriter(handle)
            torch.save(obj, writer)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        cause = error if isinstance(error, OSError) else (writer.error if writer is not None else None)
        if isinstance(cause, OSError) and isinstance(error, OSError | RuntimeError):
            raise storage_failure(cause, path) from error
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise storage_failure(error, path, checkpointed=False) from error
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise storage_failure(error, path, checkpointed=False) from error
        raise


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint; one that cannot be read (truncated, empty, another format) is named as such."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as error:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, EOFError, ...
        raise UnreadableFile(path, f"{UNREADABLE_CHECKPOINT} ({type(error).__name__}); delete it to train this "
                                   "stage again from its start") from error


def checkpoint_position(path: str | Path) -> tuple[int, int]:
    """(epoch, step in epoch) of a training checkpoint, read without loading its tensors where possible."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not a zip checkpoint: the full load says what is wrong
        state = load_checkpoint(path)
    if not isinstance(state, dict) or "epoch" not in state:
        raise UnreadableFile(path, "not a kdistill training checkpoint (no epoch); delete it to train this stage "
                                   "again from its start")
    return int(state["epoch"]), int(state.get("step_in_epoch", 0))


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
    if distiller.train_loader is not None:
        extra["loader_rng"] = user_loader_rng(distiller.train_loader)
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
    if distiller.train_loader is not None:
        restore_user_loader_rng(distiller.train_loader, state.get("loader_rng"))
    # mid-epoch sums were reduced over processes before saving: rank 0 carries them alone
    device = distiller.device
    running = {k: v.to(device) if distiller.world.is_main else torch.zeros_like(v, device=device)
               for k, v in running.items()}
    return epoch, step, running
