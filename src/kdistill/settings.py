"""Optimiser, learning-rate schedule and teacher-cache settings: one set of pydantic models, read from
an experiment's YAML (`training.optimizer`, `training.schedule`, `teacher.cache`) and given to the
engine as they are (`Distiller(optimizer=OptimizerSettings(...), schedule=ScheduleSettings(...),
teacher_cache=CacheSettings(...))`).

Any `torch.optim` optimiser by name (case-insensitive: sgd, adamw, adam, rmsprop, ...) with its
keyword arguments; kdistill's own per-step schedules or any `torch.optim.lr_scheduler` class:

    optimizer: {name: adamw, lr: 1.0e-3, weight_decay: 0.05, betas: [0.9, 0.95]}
    optimizer: {name: RMSprop, lr: 0.01, alpha: 0.9}
    schedule: {name: cosine, warmup_epochs: 5}          # built in, changed at every optimiser step
    schedule: {name: OneCycleLR, max_lr: 0.1}           # torch class; interval: step (its default)
    schedule: {name: ExponentialLR, gamma: 0.95, interval: epoch}

The arguments are checked against the torch class's signature (and the class is built once on a
dummy parameter) when the settings are made, so a bad config is refused before any training, and
each problem names its field (`training.optimizer.momentum: not an argument of torch.optim.AdamW`).

This module imports nothing else from kdistill (the config and the engine both import it), and
torch only when a name is resolved.
"""

from __future__ import annotations

import difflib
import inspect
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

BUILTIN_SCHEDULES = ("constant", "step", "multistep", "cosine")
# kdistill's defaults where they differ from torch's (kept from the first version, so that existing
# configs train as before); any other argument not given takes torch's default
OPTIMIZER_DEFAULTS: dict[str, dict[str, Any]] = {"SGD": {"momentum": 0.9, "weight_decay": 5e-4},
                                                 "AdamW": {"weight_decay": 5e-4}}
BUILTIN_SCHEDULE_DEFAULTS: dict[str, Any] = {"step_size": 30, "milestones": [150, 180, 210], "gamma": 0.1,
                                             "min_lr_ratio": 0.0}
UNSUPPORTED_OPTIMIZERS = {"LBFGS": "its step() needs a closure, which the training loop does not pass",
                          "SparseAdam": "it takes sparse gradients only"}
UNSUPPORTED_SCHEDULERS = {"ReduceLROnPlateau": "it steps on a validation metric, which the training loop does not pass",
                          "SequentialLR": "it takes other scheduler objects, which settings cannot hold",
                          "ChainedScheduler": "it takes other scheduler objects, which settings cannot hold"}
# torch documents these as stepped after every batch; every other class defaults to once per epoch
PER_STEP_SCHEDULERS = ("OneCycleLR", "CyclicLR")
# arguments filled with the run's length (in the interval's units: optimiser steps or epochs) when not given
RUN_LENGTH_ARGUMENTS = ("T_max", "total_steps")
# device-specific switches left out of the trial construction (a config for a GPU validates on a CPU)
DEVICE_SWITCHES = ("fused", "capturable", "foreach", "differentiable")


# torch classes by name ------------------------------------------------------------------------------
def _classes(module: Any, base: type) -> dict[str, type]:
    return {name: obj for name, obj in vars(module).items()
            if isinstance(obj, type) and issubclass(obj, base) and obj is not base and not name.startswith("_")}


def optimizer_classes() -> dict[str, type]:
    """`torch.optim`'s optimisers that the training loop can drive, by class name."""
    import torch

    return {n: c for n, c in _classes(torch.optim, torch.optim.Optimizer).items() if n not in UNSUPPORTED_OPTIMIZERS}


def scheduler_classes() -> dict[str, type]:
    """`torch.optim.lr_scheduler`'s schedulers that the training loop can drive, by class name."""
    import torch

    found = _classes(torch.optim.lr_scheduler, torch.optim.lr_scheduler.LRScheduler)
    return {n: c for n, c in found.items() if n not in UNSUPPORTED_SCHEDULERS}


def _lookup(name: str, classes: dict[str, type], unsupported: dict[str, str], kind: str,
            builtin: tuple[str, ...] = ()) -> type:
    lowered = name.lower()
    for class_name, cls in classes.items():
        if class_name.lower() == lowered:
            return cls
    for class_name, why in unsupported.items():
        if class_name.lower() == lowered:
            raise ValueError(f"{kind} '{class_name}' is not supported: {why}")
    choices = [*builtin, *sorted(classes, key=str.lower)]
    close = difflib.get_close_matches(lowered, [c.lower() for c in choices], n=1)
    hint = f"did you mean '{next(c for c in choices if c.lower() == close[0])}'? " if close else ""
    raise ValueError(f"unknown {kind} '{name}'; {hint}available (any case): {', '.join(choices)}")


def optimizer_class(name: str) -> type:
    return _lookup(name, optimizer_classes(), UNSUPPORTED_OPTIMIZERS, "optimizer")


def scheduler_class(name: str) -> type:
    return _lookup(name, scheduler_classes(), UNSUPPORTED_SCHEDULERS, "schedule", BUILTIN_SCHEDULES)


def _arguments(cls: type, skip: str) -> tuple[dict[str, inspect.Parameter], bool]:
    """The keyword arguments `cls` takes besides its first (`params` / `optimizer`), and whether it takes any."""
    parameters = dict(inspect.signature(cls).parameters)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    named = {n: p for n, p in parameters.items()
             if n != skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return named, takes_any


def _argument_problems(cls: type, kwargs: dict[str, Any], skip: str, prefix: str,
                       filled: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    accepted, takes_any = _arguments(cls, skip)
    problems = []
    if not takes_any:
        for key in kwargs:
            if key not in accepted:
                problems.append(((key,), f"not an argument of {prefix}.{cls.__name__}; "
                                         f"it takes: {', '.join(accepted) or 'none'}"))
    for key, parameter in accepted.items():
        if parameter.default is inspect.Parameter.empty and key not in kwargs and key not in filled:
            problems.append(((key,), f"required by {prefix}.{cls.__name__}; add it"))
    return problems


def _refused(what: str, build: Any) -> str | None:
    """torch's own message where building the class on a dummy parameter (and stepping it) fails: a bad value."""
    try:
        build()
    except (TypeError, ValueError, RuntimeError) as error:
        return f"{what} refused these arguments: {error}"
    return None


def _invalid(title: str, problems: list[tuple[tuple[str, ...], str]], given: dict[str, Any]) -> ValidationError:
    """A ValidationError whose lines are located at the given fields (pydantic prefixes the parents')."""
    return ValidationError.from_exception_data(title, [
        InitErrorDetails(type=PydanticCustomError("invalid_argument", "{message}", {"message": message}),
                         loc=loc, input=given.get(loc[0]) if loc else None)
        for loc, message in problems])


# optimiser ------------------------------------------------------------------------------------------
_OPTIMIZER_OPTIONAL = ("momentum", "weight_decay", "nesterov", "betas")


class OptimizerSettings(BaseModel):
    """A `torch.optim` optimiser: `name` (case-insensitive class name) and its keyword arguments.

    Not given: lr 0.1; for SGD momentum 0.9 and weight_decay 5e-4; for AdamW weight_decay 5e-4;
    every other argument torch's default. An argument the class does not take is an error (momentum
    with AdamW, say), as is an unknown name."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = "sgd"
    lr: float = Field(0.1, gt=0)
    # the common ones, typed; None: not given (kdistill's default above, else torch's)
    momentum: float | None = Field(None, ge=0, lt=1)
    weight_decay: float | None = Field(None, ge=0)
    nesterov: bool | None = None
    betas: tuple[float, float] | None = None

    @model_validator(mode="before")
    @classmethod
    def _kdistill_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        try:
            torch_class = optimizer_class(str(data.get("name", "sgd")))
        except ValueError:
            return data  # the check below names the problem
        defaults = OPTIMIZER_DEFAULTS.get(torch_class.__name__, {})
        return {**data, **{k: v for k, v in defaults.items() if data.get(k) is None}}

    @model_validator(mode="after")
    def _check_arguments(self) -> OptimizerSettings:
        try:
            torch_class = self.optimizer_class()
        except ValueError as error:
            raise _invalid(type(self).__name__, [(("name",), str(error))], {"name": self.name}) from None
        kwargs = self.kwargs()
        problems = _argument_problems(torch_class, kwargs, "params", "torch.optim")
        if not problems:
            import torch

            trial = {k: v for k, v in kwargs.items() if k not in DEVICE_SWITCHES}
            refused = _refused(f"torch.optim.{torch_class.__name__}",
                               lambda: torch_class([torch.nn.Parameter(torch.zeros(2, 2))], **trial))
            problems = [((), refused)] if refused else []
        if problems:
            raise _invalid(type(self).__name__, problems, kwargs)
        return self

    @model_serializer(mode="wrap")
    def _without_unset(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if not (k in _OPTIMIZER_OPTIONAL and v is None)}

    def optimizer_class(self) -> type:
        return optimizer_class(self.name)

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments the optimiser is built with, besides its parameters."""
        given = {k: getattr(self, k) for k in ("lr", *_OPTIMIZER_OPTIONAL) if getattr(self, k) is not None}
        return {**given, **(self.model_extra or {})}


# learning-rate schedule -----------------------------------------------------------------------------
_SCHEDULE_OPTIONAL = ("step_size", "milestones", "gamma", "min_lr_ratio", "interval")
_SHARED_WITH_TORCH = ("step_size", "milestones", "gamma")  # StepLR, MultiStepLR, ExponentialLR, ... take these


class ScheduleSettings(BaseModel):
    """kdistill's schedules, changed at every optimiser step so that warm-up is smooth: `constant`,
    `step` (x gamma every step_size epochs), `multistep` (x gamma at each milestone), `cosine` (to
    min_lr_ratio at the end), each after an optional linear warm-up of `warmup_epochs` (fractional)
    or `warmup_steps` (optimiser steps). Defaults: step_size 30, milestones [150, 180, 210], gamma
    0.1, min_lr_ratio 0.

    Or any `torch.optim.lr_scheduler` class by (case-insensitive) name with its keyword arguments.
    `interval` says when the loop steps it: `step` (after every optimiser step; the default for
    OneCycleLR and CyclicLR, which torch documents so) or `epoch` (once at the end of each epoch;
    the default for every other class). `T_max` (CosineAnnealingLR) and `total_steps` (OneCycleLR,
    unless `epochs` is given) default to the run's length in that interval's units. Its state is
    saved in checkpoints, so a resumed run continues it exactly."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)  # linear warm-up in optimiser steps (instead of warmup_epochs)
    step_size: int | None = Field(None, gt=0)
    milestones: list[int] | None = None
    gamma: float | None = Field(None, gt=0)
    min_lr_ratio: float | None = Field(None, ge=0, le=1)
    interval: Literal["step", "epoch"] | None = None  # torch classes only (filled in: see above)

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        name = str(data.get("name", "cosine"))
        if name.lower() in BUILTIN_SCHEDULES:
            return {**data, **{k: v for k, v in BUILTIN_SCHEDULE_DEFAULTS.items() if data.get(k) is None}}
        if data.get("interval") is None:
            try:
                torch_class = scheduler_class(name)
            except ValueError:
                return data  # the check below names the problem
            return {**data, "interval": "step" if torch_class.__name__ in PER_STEP_SCHEDULERS else "epoch"}
        return data

    @model_validator(mode="after")
    def _check_arguments(self) -> ScheduleSettings:
        title = type(self).__name__
        if self.warmup_epochs and self.warmup_steps:
            raise _invalid(title, [((), "set warmup_epochs or warmup_steps, not both")], {})
        if self.builtin is not None:
            problems = [((key,), f"unknown key for the built-in schedule '{self.name}' (it takes warmup_epochs, "
                                 "warmup_steps, step_size, milestones, gamma, min_lr_ratio); remove it, or name a "
                                 "torch.optim.lr_scheduler class") for key in self.model_extra or {}]
            if self.interval == "epoch":
                problems.append((("interval",), f"the built-in schedule '{self.name}' changes the learning rate at "
                                                "every optimiser step; interval: epoch is for torch.optim.lr_scheduler "
                                                "classes"))
            if problems:
                raise _invalid(title, problems, {**(self.model_extra or {}), "interval": self.interval})
            return self
        try:
            torch_class = self.scheduler_class()
        except ValueError as error:
            raise _invalid(title, [(("name",), str(error))], {"name": self.name}) from None
        problems = []
        for key in ("warmup_epochs", "warmup_steps"):
            if getattr(self, key):
                problems.append(((key,), f"the warm-up belongs to kdistill's own schedules "
                                         f"({', '.join(BUILTIN_SCHEDULES)}); {torch_class.__name__} takes none "
                                         "(OneCycleLR has its own: pct_start)"))
        if self.min_lr_ratio is not None:
            problems.append((("min_lr_ratio",), f"only for the built-in cosine schedule; "
                                                f"not an argument of torch.optim.lr_scheduler.{torch_class.__name__}"))
        kwargs = self.torch_kwargs()
        problems += _argument_problems(torch_class, kwargs, "optimizer", "torch.optim.lr_scheduler",
                                       RUN_LENGTH_ARGUMENTS)
        if not problems:
            import torch

            def build() -> None:
                optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
                scheduler = torch_class(optimizer, **self.scheduler_kwargs(100))
                for _ in range(2):
                    optimizer.step()
                    scheduler.step()

            refused = _refused(f"torch.optim.lr_scheduler.{torch_class.__name__}", build)
            problems = [((), refused)] if refused else []
        if problems:
            given = {**kwargs, "warmup_epochs": self.warmup_epochs, "warmup_steps": self.warmup_steps,
                     "min_lr_ratio": self.min_lr_ratio}
            raise _invalid(title, problems, given)
        return self

    @model_serializer(mode="wrap")
    def _without_unset(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if not (k in _SCHEDULE_OPTIONAL and v is None)}

    @property
    def builtin(self) -> str | None:
        """The built-in schedule's name (lower case), or None for a torch class."""
        return self.name.lower() if self.name.lower() in BUILTIN_SCHEDULES else None

    def scheduler_class(self) -> type:
        return scheduler_class(self.name)

    def torch_kwargs(self) -> dict[str, Any]:
        """The keyword arguments given for a torch scheduler class (without the filled-in run length)."""
        given = {k: getattr(self, k) for k in _SHARED_WITH_TORCH if getattr(self, k) is not None}
        return {**given, **(self.model_extra or {})}

    def scheduler_kwargs(self, length: int) -> dict[str, Any]:
        """The torch class's keyword arguments, with `T_max` / `total_steps` defaulting to `length`
        (the run's length in optimiser steps or epochs, after the interval)."""
        kwargs = self.torch_kwargs()
        accepted, _ = _arguments(self.scheduler_class(), "optimizer")
        for key in RUN_LENGTH_ARGUMENTS:
            if key in accepted and kwargs.get(key) is None and not (key == "total_steps" and kwargs.get("epochs")):
                kwargs[key] = length
        return kwargs


# teacher cache --------------------------------------------------------------------------------------
class CacheSettings(BaseModel):
    """The teacher-output cache (see `kdistill.engine.cache`). In a config `teacher.cache: true` takes
    these defaults; in Python `Distiller(..., teacher_cache=CacheSettings("runs/cache"))` (the
    directory may be given first, by position)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True  # a config's switch: `enabled: false` turns the cache off and keeps its settings
    directory: Path | None = None  # required by the engine; a config's default is <run dir>/teacher-cache
    dtype: Literal["float16", "float32"] = "float16"
    top_k: int | None = Field(None, gt=0)  # keep the k largest logits (and one fill value for the rest)
    # augmented views per sample; default one per epoch (fresh crops every epoch). A smaller K is a
    # cycle replayed epoch after epoch, noted in the report.
    views: int | None = Field(None, gt=0)
    temperature: float | None = Field(None, gt=0)  # top-k fill keeps the rest's mass at this T (default: the methods')
    features: bool = False  # also cache the teacher layers that feature methods tap (on disk, memory-mapped)
    # teacher layers cached besides the ones this run's methods tap, so that runs with other
    # methods (a benchmark's variants) share one cache instead of each running the teacher again
    extra_taps: tuple[str, ...] = ()

    def __init__(self, directory: str | Path | None = None, /, **data: Any) -> None:
        if directory is not None:
            if "directory" in data:
                raise TypeError("CacheSettings: directory given twice (by position and by name)")
            data["directory"] = directory
        super().__init__(**data)
