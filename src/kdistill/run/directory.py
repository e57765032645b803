"""The run directory: the configured `output_dir` (which must be empty), or a fresh timestamped one;
created before any work so a path that cannot be written fails in a second, not after training; and
removed again when the run fails before it has anything to resume from (nothing blocks a rerun)."""

from __future__ import annotations

import errno
import shutil
from datetime import datetime
from pathlib import Path

from kdistill.config import ConfigError, ExperimentConfig
from kdistill.engine.checkpoint import WRITE_FAILURES
from kdistill.errors import StorageFailure

RESUMABLE = ("last.pt", "student.pt")  # a run holding one of these has work worth resuming


def new_run_dir(config: ExperimentConfig) -> Path:
    """The configured output directory, which must not exist yet (or be empty); or a fresh timestamped one."""
    if config.output_dir is not None:
        path = config.output_dir
        if path.exists() and not path.is_dir():
            raise ConfigError([f"output_dir: {path} is a file, not a directory; choose another output_dir"])
        if path.exists() and any(path.iterdir()):
            raise ConfigError([f"output_dir: {path} already exists and is not empty; continue it with "
                               f"`kdistill run --resume {path}`, or choose another output_dir"])
        return path
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / f"{config.name}-{stamp}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = Path("runs") / f"{config.name}-{stamp}-{suffix}"
    return path


def create_run_dir(path: Path) -> Path | None:
    """Create the run directory; the topmost directory this call created (None: it existed, empty).

    A path that cannot be a directory (a file on the way) is bad input (exit 2); a file system that
    says no (permission, read-only, full) is a storage failure (exit 3)."""
    created = next((p for p in reversed([path, *path.parents]) if not p.exists()), None)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), path)
        raise ConfigError([f"output_dir: cannot create {path}: {blocker} is a file, not a directory; choose "
                           "another output_dir"]) from None
    except OSError as error:
        reason = WRITE_FAILURES.get(error.errno or 0, error.strerror or str(error))
        failure = StorageFailure(f"cannot create the run directory {path}: {reason}; choose another --output-dir "
                                 "(or fix its permissions)")
        failure.errno = error.errno or errno.EIO  # not filename: OSError would print it instead of the message
        raise failure from None
    return created


def has_resumable_work(path: Path) -> bool:
    """A checkpoint or a finished stage anywhere in the run: the run directory is worth keeping."""
    return path.is_dir() and any(p.name in RESUMABLE for p in path.rglob("*.pt"))


def remove_debris(path: Path, created: Path | None) -> bool:
    """Remove what a failed run wrote before its first checkpoint: the directories this run created
    (`created`, from `create_run_dir`), else (the run directory existed, empty, when the run began)
    only its contents. Never touches a run that holds resumable work. True when something was removed."""
    if not path.is_dir() or has_resumable_work(path):
        return False
    if created is not None:
        shutil.rmtree(created, ignore_errors=True)
    else:
        for child in path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
    return True
