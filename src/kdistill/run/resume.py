"""What `kdistill run --resume DIR` may change: the run's own config, read back and checked, plus
`--set` only for fields that cannot change what a finished stage computed.

The list is short on purpose. Finished stages are loaded, not retrained, and an interrupted one
continues from its checkpoint: any field that enters the training arithmetic (epochs, methods,
optimiser, batch size, data, seed, even the data path, whose files may differ) would make the
resumed run a mixture of two experiments. Where training happens and how data is fed to it do not.
"""

from __future__ import annotations

import re
from pathlib import Path

from kdistill.config import ConfigError, ExperimentConfig, dump_config, load_raw, validate
from kdistill.config_overrides import apply_override, parse_key
from kdistill.engine.checkpoint import atomic_write_text

SAFE_ON_RESUME = (
    re.compile(r"training\.device"),
    re.compile(r"teacher\.training\.device"),
    re.compile(r"teachers\[\d+\]\.training\.device"),
    re.compile(r"data\.num_workers"),
    re.compile(r"baselines_dir"),
)
SAFE_NAMES = "training.device, teacher(s).training.device, data.num_workers, baselines_dir"


def field_name(assignment: str) -> str:
    """The override's key in the schema's spelling (`methods.0.x` -> `methods[0].x`)."""
    key = assignment.partition("=")[0].strip()
    text = ""
    for part in parse_key(key, assignment):
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def check_resume_overrides(overrides: list[str]) -> None:
    for assignment in overrides:
        if "=" not in assignment:
            apply_override({}, assignment)  # names the syntax problem
        name = field_name(assignment)
        if not any(pattern.fullmatch(name) for pattern in SAFE_ON_RESUME):
            raise ConfigError([f"--resume with --set {name}: refused, it changes what the finished stages computed; "
                               f"only {SAFE_NAMES} may change on resume (start a new run for other changes)"])


def load_resumed_config(run_dir: Path, overrides: list[str]) -> ExperimentConfig:
    """The run's config.yaml with the allowed overrides applied, written back when they change it."""
    path = run_dir / "config.yaml"
    if not run_dir.is_dir() or not path.is_file():
        raise ConfigError([f"--resume {run_dir}: not a run directory (no config.yaml); give the directory a "
                           "run printed as its run directory"])
    check_resume_overrides(overrides)
    try:
        raw = load_raw(path)
        for assignment in overrides:
            apply_override(raw, assignment)
        config = validate(raw)
    except ConfigError as error:
        raise ConfigError([*error.problems, f"(in {path}, written by the run; restore it if it was edited)"]) \
            from None
    if overrides:
        atomic_write_text(path, dump_config(config))
    return config
