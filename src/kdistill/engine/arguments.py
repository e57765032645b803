"""The Distiller's Python arguments, turned into the settings the engine uses or refused with a clear error.

A config file is checked by its schema (kdistill.config) before anything runs; the Python API has no
schema, so `Distiller(...)` and `fit(...)` check their arguments here, at the call, against the same
rules. Without these checks a wrong argument fails much later and far from its cause: an optimiser
given as a dict as an AttributeError inside `fit()`, `batch_size=32.0` as an "endless sampler", a
negative `grad_clip` as silent gradient ascent, `epochs=-1` as a fit that does nothing.

Forms that mean one thing are taken (an optimiser or schedule as a dict of its fields or its name,
the cache as its directory, one method without a list); everything else is a `BadInput` naming the
argument, what was given and what to give.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from torch import nn

from kdistill.errors import BadInput
from kdistill.methods.base import Method
from kdistill.settings import CacheSettings, OptimizerSettings, ScheduleSettings

SettingsT = TypeVar("SettingsT", bound=BaseModel)

# name -> (smallest value, None allowed): the limits the YAML schema (kdistill.config) sets for the same settings
COUNTS: dict[str, tuple[int | None, bool]] = {
    "batch_size": (1, False),  # data.batch_size
    "eval_batch_size": (1, False),  # data.eval_batch_size
    "num_workers": (0, False),  # data.num_workers
    "seed": (None, False),  # seed
    "accumulate_steps": (1, False),  # training.accumulate_steps
    "eval_every_steps": (1, True),  # training.eval_every_steps
    "checkpoint_every_steps": (1, True),  # training.checkpoint_every_steps
    "epochs": (1, False),  # training.epochs
}


def given(value: Any) -> str:
    """How an error message shows a wrong value: its repr, or for an object (a torch optimiser) its class."""
    if value is None or isinstance(value, bool | int | float | str | Path | dict | list | tuple):
        return repr(value) if not isinstance(value, Path) else repr(str(value))
    kind, prefix = (value, "the class ") if isinstance(value, type) else (type(value), "")
    return prefix + f"{kind.__module__}.{kind.__qualname__}".removeprefix("builtins.")


def _validated(argument: str, cls: type[SettingsT], fields: dict[str, Any]) -> SettingsT:
    """`cls(**fields)`, its schema's problems named as `argument.field: problem (got value)`."""
    try:
        return cls(**fields)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            where = ".".join(str(part) for part in (argument, *item["loc"]))
            got = f" (got {item['input']!r})" if isinstance(item.get("input"), int | float | str) else ""
            problems.append(f"{where}: {item['msg'].removeprefix('Value error, ')}{got}")
        raise BadInput(problems) from None


def _named_settings(argument: str, cls: type[SettingsT], value: Any, refusal: str) -> SettingsT:
    """`cls` from itself, a dict of its fields or a name; None: its defaults; anything else `refusal`."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, dict | str):
        return _validated(argument, cls, value if isinstance(value, dict) else {"name": value})
    raise BadInput(f"{argument}: {refusal} (got {given(value)})")


def optimizer(value: OptimizerSettings | dict | str | None) -> OptimizerSettings:
    """The optimiser's settings: OptimizerSettings, a dict of its fields, or a name (lr then takes
    OptimizerSettings' default). Never a torch optimiser: kdistill builds it itself, over the student's
    and the methods' parameters, so that it can checkpoint and resume it."""
    return _named_settings("optimizer", OptimizerSettings, value,
                           "give kdistill.OptimizerSettings(name=..., lr=...) or a dict of its fields ({'name': "
                           "'adam', 'lr': 1e-3}); kdistill builds the optimizer itself so that it can checkpoint and "
                           "resume it")


def schedule(value: ScheduleSettings | dict | str | None) -> ScheduleSettings:
    """The learning-rate schedule's settings: ScheduleSettings, a dict of its fields, or a name.
    Never a torch scheduler: kdistill builds it once the optimiser and the run's length exist."""
    return _named_settings("schedule", ScheduleSettings, value,
                           "give kdistill.ScheduleSettings(name=..., ...), a dict of its fields ({'name': 'cosine', "
                           "'warmup_epochs': 1}) or a schedule's name ('cosine'); kdistill builds the scheduler "
                           "itself, once the optimizer and the run's length exist")


def teacher_cache(value: CacheSettings | dict | str | Path | bool | None) -> CacheSettings | None:
    """The teacher-output cache's settings: CacheSettings, a dict of its fields, or its directory;
    None or False: no cache. True is refused: unlike a config, which has a run directory to put it
    in, the Python API has nowhere to put the cache unless told."""
    if value is None or value is False:
        return None
    if isinstance(value, CacheSettings):
        return value
    if isinstance(value, dict):
        return _validated("teacher_cache", CacheSettings, value)
    if isinstance(value, str | Path):
        return _validated("teacher_cache", CacheSettings, {"directory": value})
    raise BadInput(f"teacher_cache: give the directory to keep the teacher's outputs in, as a path "
                   f"('runs/cache') or kdistill.CacheSettings('runs/cache', ...); None runs the teacher live "
                   f"(got {given(value)})")


def check_numbers(**values: Any) -> None:
    """Counts (batch sizes, workers, steps, epochs, seed: integers, bools refused, at least the schema's
    minimum) and `grad_clip` (None, or a finite number > 0: a negative one would scale the gradient
    by a negative factor, that is gradient ascent)."""
    for name, value in values.items():
        if name == "grad_clip":
            if value is not None and (isinstance(value, bool) or not isinstance(value, Real)
                                      or not math.isfinite(value) or value <= 0):
                raise BadInput(f"grad_clip: must be a number > 0 (the largest gradient norm), or None for no "
                               f"clipping (got {given(value)})")
            continue
        minimum, optional = COUNTS[name]
        if value is None and optional:
            continue
        if isinstance(value, bool) or not isinstance(value, Integral) or (minimum is not None and value < minimum):
            what = "an integer" if minimum is None else f"an integer >= {minimum}"
            raise BadInput(f"{name}: must be {what}{', or None' if optional else ''} (got {given(value)})")


def methods(teacher: nn.Module | Sequence[nn.Module] | None, student: nn.Module,
            value: Method | Iterable[Method]) -> list[Method]:
    """The methods as a list (one Method is taken for a list of one). No methods trains on the
    labels alone (HardLabel), which a run with a teacher never means: it is refused. Checked with
    them: the student is none of the teachers, nor shares trainable parameters with them, since
    teachers are frozen during the fit (those would silently stop training). A shared layer that is
    frozen already (a common stem) is fine."""
    if isinstance(value, Method):
        value = [value]
    elif isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise BadInput(f"methods: give a list of kdistill methods, e.g. [SoftTarget(), HardLabel()] (got "
                       f"{given(value)}); a name is a config's way (kdistill.methods.build_method(name, options))")
    listed = list(value)
    for index, method in enumerate(listed):
        if not isinstance(method, Method):
            raise BadInput(f"methods[{index}]: not a kdistill Method (got {given(method)}); give instances such as "
                           "kdistill.methods.SoftTarget(temperature=4) (a method of your own subclasses "
                           "kdistill.methods.Method)")
    teachers = [] if teacher is None else list(teacher) if isinstance(teacher, list | tuple) else [teacher]
    if teachers and not listed:
        raise BadInput("methods: none given, so the student would train on the labels alone and the teacher "
                       "would go unused; give at least one method, e.g. [SoftTarget(), HardLabel()] (or teacher=None "
                       "to train without one)")
    student_parameters = {id(p) for p in student.parameters() if p.requires_grad} if isinstance(student, nn.Module) \
        else set()
    for index, model in enumerate(teachers):
        if model is student:
            raise BadInput(f"teacher{f' {index}' if len(teachers) > 1 else ''} and the student are the same module; "
                           "the teacher is frozen during the fit, so the student would have nothing to train: pass "
                           "a separate student (e.g. a fresh model, or copy.deepcopy(teacher) to start from its "
                           "weights)")
        if isinstance(model, nn.Module) and any(id(p) in student_parameters for p in model.parameters()):
            raise BadInput(f"teacher{f' {index}' if len(teachers) > 1 else ''} and the student share trainable "
                           "parameters (one holds the other, or layers are shared); the teacher is frozen during the "
                           "fit, so those would not train: give the student its own copy (copy.deepcopy), or freeze "
                           "the shared layers (requires_grad_(False)) if they are meant to stay fixed")
    return listed


__all__ = ["check_numbers", "given", "methods", "optimizer", "schedule", "teacher_cache"]
