"""The run directory: the configured `output_dir` (which must be empty), or a fresh timestamped one."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from kdistill.config import ConfigError, ExperimentConfig


def new_run_dir(config: ExperimentConfig) -> Path:
    """The configured output directory, which must not exist yet; or a fresh timestamped one."""
    if config.output_dir is not None:
        path = config.output_dir
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
