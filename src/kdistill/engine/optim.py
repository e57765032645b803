"""Optimisers and learning-rate schedules, built from `kdistill.settings`.

The training loop calls the scheduler's `step()` after every optimiser step. kdistill's own
schedules (constant, step, multistep, cosine, after a linear warm-up) are a `LambdaLR` evaluated at
the fractional epoch, so warm-up is smooth. A `torch.optim.lr_scheduler` class with `interval: step`
is stepped as it is; with `interval: epoch` it is wrapped in `EpochInterval`, which steps it once
every `steps_per_epoch` calls, that is at the end of each epoch. Either way `state_dict()` holds all
of its state, so a resumed run (also from the middle of an epoch) continues the schedule exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from kdistill.settings import OptimizerSettings, ScheduleSettings

__all__ = ["EpochInterval", "OptimizerSettings", "ScheduleSettings", "build_optimizer", "build_scheduler",
           "lr_factor", "warmup_overrun"]


def build_optimizer(params: Iterable[nn.Parameter], settings: OptimizerSettings) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    return settings.optimizer_class()(params, **settings.kwargs())


def lr_factor(settings: ScheduleSettings, epoch_float: float, total_epochs: int) -> float:
    """Multiplier of the base learning rate at a fractional epoch (the built-in schedules)."""
    if settings.warmup_epochs > 0 and epoch_float < settings.warmup_epochs:
        return (epoch_float + 1e-8) / settings.warmup_epochs
    epoch = math.floor(epoch_float)
    name = settings.builtin
    if name == "constant":
        return 1.0
    if name == "step":
        return settings.gamma ** (epoch // settings.step_size)
    if name == "multistep":
        return settings.gamma ** sum(epoch >= m for m in settings.milestones)
    if name == "cosine":
        span = max(total_epochs - settings.warmup_epochs, 1e-8)
        progress = min(max(epoch_float - settings.warmup_epochs, 0.0) / span, 1.0)
        return settings.min_lr_ratio + (1 - settings.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    raise ValueError(f"'{settings.name}' is not a built-in schedule (constant, step, multistep, cosine)")


class EpochInterval:
    """A per-epoch torch scheduler under a loop that calls `step()` after every optimiser step: the
    wrapped scheduler steps once every `steps_per_epoch` calls (at the end of each epoch)."""

    def __init__(self, scheduler: torch.optim.lr_scheduler.LRScheduler, steps_per_epoch: int) -> None:
        self.scheduler = scheduler
        self.optimizer = scheduler.optimizer
        self.steps_per_epoch = max(steps_per_epoch, 1)
        self.calls = 0  # optimiser steps so far

    def step(self) -> None:
        self.calls += 1
        if self.calls % self.steps_per_epoch == 0:
            self.scheduler.step()

    def get_last_lr(self) -> list[float]:
        return self.scheduler.get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict(), "calls": self.calls, "steps_per_epoch": self.steps_per_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("steps_per_epoch") != self.steps_per_epoch:
            raise ValueError(f"the checkpoint's schedule counted {state.get('steps_per_epoch')} steps per epoch, "
                             f"this run has {self.steps_per_epoch}; resume with the same data and batch size")
        self.scheduler.load_state_dict(state["scheduler"])
        self.calls = state["calls"]


def _warmup_in_epochs(settings: ScheduleSettings, steps_per_epoch: int) -> ScheduleSettings:
    """`warmup_steps` as the fractional `warmup_epochs` that `lr_factor` reads."""
    if not settings.warmup_steps:
        return settings
    if settings.warmup_epochs:
        raise ValueError("schedule: set warmup_epochs or warmup_steps, not both")
    return settings.model_copy(update={"warmup_epochs": settings.warmup_steps / steps_per_epoch, "warmup_steps": 0})


def warmup_overrun(settings: ScheduleSettings, total_epochs: int, steps_per_epoch: int) -> str | None:
    """A warning when a built-in schedule's warm-up does not end before the run does: the learning
    rate then never reaches the value set (common after shrinking a recipe's epochs or data for a
    quick try, with `warmup_steps` left as it was). None when the warm-up fits."""
    if settings.builtin is None:
        return None
    steps = max(steps_per_epoch, 1)
    as_epochs = _warmup_in_epochs(settings, steps)
    warmup = as_epochs.warmup_epochs
    if warmup <= 0 or warmup < total_epochs:
        return None
    total = total_epochs * steps
    peak = lr_factor(as_epochs, total_epochs - 1 / steps, total_epochs)  # at the run's last step
    return (f"schedule: the warm-up ({warmup * steps:.0f} optimiser steps) does not end before the run does "
            f"({total} steps): the learning rate peaks at {peak:.0%} of the set lr and never decays; shorten "
            "training.schedule.warmup_steps (or warmup_epochs) to a share of the run")


def build_scheduler(optimizer: torch.optim.Optimizer, settings: ScheduleSettings, total_epochs: int,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler | EpochInterval:
    """The schedule, to be stepped after every optimiser step (see the module's docstring)."""
    steps = max(steps_per_epoch, 1)
    if settings.builtin is None:
        per_step = settings.interval == "step"
        kwargs = settings.scheduler_kwargs(total_epochs * steps if per_step else total_epochs)
        scheduler = settings.scheduler_class()(optimizer, **kwargs)
        return scheduler if per_step else EpochInterval(scheduler, steps)
    settings = _warmup_in_epochs(settings, steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(settings, step / steps, total_epochs)
    )
