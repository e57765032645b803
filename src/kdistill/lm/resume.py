"""What `kdistill lm --resume DIR --set ...` may change: the rule of `kdistill run --resume`
(`kdistill.run.resume`: device and loader workers, which cannot change what a stage computed),
plus the settings of stages that have not started yet.

An LM run's stages come in a fixed order (teacher, student-scratch with `baseline: true`, student)
and each field enters only some of them: the student's model (`student.*`) the scratch and the
distilled student, `methods` the distilled student, `baseline` the scratch student, `training.*`
both students (and the teacher when it trains with `training`, having no `teacher.training`). Such
a field may change while none of its stages has started (its folder is empty or absent): the
finished stages stay what they were, and the resumed run is the run the new config describes.
Everything else (data, seed, the teacher) enters the first stage, and is refused as before.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from kdistill.config import ConfigError, ExperimentConfig, dump_config, load_raw, validate
from kdistill.config_overrides import apply_override
from kdistill.engine.checkpoint import atomic_write_text
from kdistill.run.resume import SAFE_NAMES, SAFE_ON_RESUME, field_name
from kdistill.strategies.stages import stage_started

STUDENTS = ("student-scratch", "student")
BEFORE_START = "student.*, methods, baseline and training.*"


def stages_of(name: str, raw: dict[str, Any]) -> tuple[str, ...] | None:
    """The stages whose result field `name` changes; None for a field that enters every stage."""
    if re.fullmatch(r"student(\..+)?", name):
        return STUDENTS
    if re.fullmatch(r"methods(\[\d+\])?(\..+)?", name):
        return ("student",)
    if name == "baseline":
        return ("student-scratch",)
    if re.fullmatch(r"training(\..+)?", name):
        teacher = raw.get("teacher") if isinstance(raw.get("teacher"), dict) else {}
        trains_with_it = teacher.get("training") is None and teacher.get("checkpoint") is None
        return ("teacher", *STUDENTS) if trains_with_it else STUDENTS
    return None


def check_lm_resume_overrides(run_dir: Path, raw: dict[str, Any], overrides: list[str]) -> None:
    for assignment in overrides:
        if "=" not in assignment:
            apply_override({}, assignment)  # names the syntax problem
        name = field_name(assignment)
        if any(pattern.fullmatch(name) for pattern in SAFE_ON_RESUME):
            continue
        stages = stages_of(name, raw)
        if stages is None:
            raise ConfigError([f"--resume with --set {name}: refused, it changes what the finished stages computed; "
                               f"only {SAFE_NAMES} may change on resume, and {BEFORE_START} before their stages "
                               "start (start a new run for other changes)"])
        started = [stage for stage in stages if stage_started(run_dir / stage)]
        if started:
            raise ConfigError([f"--resume with --set {name}: refused, it changes what the {started[0]} stage "
                               f"computed, and that stage has already started ({run_dir / started[0]}); only "
                               f"{SAFE_NAMES} may change now (start a new run for other changes)"])


def load_lm_resumed_config(run_dir: Path, overrides: list[str]) -> ExperimentConfig:
    """The LM run's config.yaml with the allowed overrides applied, written back when they change it."""
    from kdistill.lm.detect import is_lm_data, run_data_name

    run_dir = Path(run_dir)
    path = run_dir / "config.yaml"
    if not run_dir.is_dir() or not path.is_file():
        raise ConfigError([f"--resume {run_dir}: not a run directory (no config.yaml); give the directory a "
                           "run printed as its run directory"])
    name = run_data_name(run_dir)
    if name is not None and ":" not in name and not is_lm_data(name):
        raise ConfigError([f"--resume {run_dir}: not a kdistill lm run (its data '{name}' is not a text corpus); "
                           f"continue it with `kdistill run --resume {run_dir}`"])
    try:
        raw = load_raw(path)
        check_lm_resume_overrides(run_dir, raw, overrides)
        for assignment in overrides:
            apply_override(raw, assignment)
        config = validate(raw)
    except ConfigError as error:
        if any(problem.startswith("--resume with --set") for problem in error.problems):
            raise
        raise ConfigError([*error.problems, f"(in {path}, written by the run; restore it if it was edited)"]) \
            from None
    if overrides:
        atomic_write_text(path, dump_config(config))
    return config


__all__ = ["check_lm_resume_overrides", "load_lm_resumed_config", "stages_of"]
