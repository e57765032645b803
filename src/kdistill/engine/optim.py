"""Optimisers and learning-rate schedules (per step, so warm-up is smooth)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class OptimizerSettings:
    name: str = "sgd"  # sgd | adamw
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class ScheduleSettings:
    name: str = "cosine"  # constant | step | multistep | cosine
    warmup_epochs: float = 0.0
    warmup_steps: int = 0  # the same linear warm-up counted in optimiser steps (use one or the other)
    step_size: int = 30
    milestones: Sequence[int] = field(default_factory=lambda: [150, 180, 210])
    gamma: float = 0.1
    min_lr_ratio: float = 0.0


def build_optimizer(params: Iterable[nn.Parameter], settings: OptimizerSettings) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if settings.name == "sgd":
        return torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum,
                               weight_decay=settings.weight_decay, nesterov=settings.nesterov)
    if settings.name == "adamw":
        return torch.optim.AdamW(params, lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay)
    raise ValueError(f"unknown optimizer '{settings.name}' (sgd, adamw)")


def lr_factor(settings: ScheduleSettings, epoch_float: float, total_epochs: int) -> float:
    """Multiplier of the base learning rate at a fractional epoch."""
    if settings.warmup_epochs > 0 and epoch_float < settings.warmup_epochs:
        return (epoch_float + 1e-8) / settings.warmup_epochs
    epoch = math.floor(epoch_float)
    if settings.name == "constant":
        return 1.0
    if settings.name == "step":
        return settings.gamma ** (epoch // settings.step_size)
    if settings.name == "multistep":
        return settings.gamma ** sum(epoch >= m for m in settings.milestones)
    if settings.name == "cosine":
        span = max(total_epochs - settings.warmup_epochs, 1e-8)
        progress = min(max(epoch_float - settings.warmup_epochs, 0.0) / span, 1.0)
        return settings.min_lr_ratio + (1 - settings.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule '{settings.name}' (constant, step, multistep, cosine)")


def build_scheduler(optimizer: torch.optim.Optimizer, settings: ScheduleSettings, total_epochs: int,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    steps = max(steps_per_epoch, 1)
    if settings.warmup_steps:
        if settings.warmup_epochs:
            raise ValueError("schedule: set warmup_epochs or warmup_steps, not both")
        settings = dataclasses.replace(settings, warmup_epochs=settings.warmup_steps / steps, warmup_steps=0)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(settings, step / steps, total_epochs)
    )
