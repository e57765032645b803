"""Recovering a pruned (or quantised) model's accuracy by training it again: by distillation from
the unpruned model, or by plain fine-tuning on the labels (the baseline distillation must beat).

Both go through kdistill's own `Distiller`, so they are the same loop as every other stage. The
teacher is never modified: the digest of its weights is checked before and after, and a change is
an error (it would mean the reference the student is measured against moved).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from kdistill.data.transforms import Normalize
from kdistill.digest import model_digest
from kdistill.engine import Distiller, OptimizerSettings, ScheduleSettings
from kdistill.errors import BadInput
from kdistill.methods import HardLabel, SoftTarget

RECOVERY_MODES = ("distill", "finetune")


@dataclass
class RecoverySettings:
    """How a compressed model is trained back. `mode` distil: soft targets from the teacher at
    `temperature` with weight `soft_weight`, labels with the rest; finetune: labels only."""

    epochs: int = 2
    mode: str = "distill"
    lr: float = 0.01
    optimizer: str = "sgd"
    batch_size: int = 128
    temperature: float = 4.0
    soft_weight: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in RECOVERY_MODES:
            raise BadInput(f"recover.mode: must be one of {list(RECOVERY_MODES)} (got {self.mode!r})")
        if self.epochs < 0:
            raise BadInput(f"recover.epochs: must be >= 0 (got {self.epochs})")
        if not 0 <= self.soft_weight <= 1:
            raise BadInput(f"recover.soft_weight: must be in [0, 1] (got {self.soft_weight})")


class TeacherChanged(RuntimeError):
    """The teacher's weights changed during recovery (a bug: the teacher must never be trained)."""


def recover(student: nn.Module, teacher: nn.Module | None, train: Any, settings: RecoverySettings,
            normalization: Normalize | None = None, run_dir: str | Path | None = None,
            description: str = "recover", teacher_normalization: Normalize | None = None) -> list[dict[str, Any]]:
    """Train `student` in place for `settings.epochs`; returns the Distiller's epoch history.
    The student sees inputs with `normalization`, the teacher with `teacher_normalization`
    (default: the same, as for a student cut from its teacher)."""
    if settings.epochs == 0:
        return []
    distil = settings.mode == "distill"
    if distil and teacher is None:
        raise BadInput("recover.mode: distill needs the unpruned model as teacher; use finetune without one")
    methods = ([SoftTarget(weight=settings.soft_weight, temperature=settings.temperature),
                HardLabel(weight=round(1 - settings.soft_weight, 6))] if distil else [HardLabel()])
    before = model_digest(teacher) if distil else None
    distiller = Distiller(teacher if distil else None, student, methods,
                          optimizer=OptimizerSettings(name=settings.optimizer, lr=settings.lr),
                          schedule=ScheduleSettings(name="cosine"), batch_size=settings.batch_size,
                          seed=settings.seed, student_normalization=normalization,
                          teacher_normalization=teacher_normalization or normalization, progress=False, run_dir=run_dir,
                          description=description)
    distiller.fit(train, epochs=settings.epochs)
    if distil and model_digest(teacher) != before:
        raise TeacherChanged("the teacher's weights changed during recovery; the teacher must stay frozen")
    return distiller.history
