"""What every distillation method is: an `nn.Module` that turns one step's outputs into loss terms.

Methods never run a loop. The engine gives them a `StepContext` (logits, labels, the outputs of
the layers they asked to tap, the epoch) and sums the weighted terms they return. A method may own
trainable parts (adapters, embeddings); those are optimised with the student, saved in
checkpoints, and never part of the exported student.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Real
from typing import Any, ClassVar

import torch
from torch import nn

from kdistill.collectives import gather_batch
from kdistill.errors import BadInput


@dataclass
class StepContext:
    student_logits: torch.Tensor
    labels: torch.Tensor | None = None
    teacher_logits: list[torch.Tensor] = field(default_factory=list)  # one per teacher
    student_features: dict[str, Any] = field(default_factory=dict)  # tap text -> output
    teacher_features: list[dict[str, Any]] = field(default_factory=list)  # per teacher
    indices: torch.Tensor | None = None
    epoch: int = 0
    num_epochs: int = 1
    num_samples: int | None = None  # size of the training set (contrastive memories are sized to it)
    epoch_progress: float | None = None  # fractional epochs done before this step (epoch + step / steps)

    @property
    def epochs_done(self) -> float:
        """Training progress in (fractional) epochs; schedules inside methods ramp per step on it."""
        return float(self.epoch) if self.epoch_progress is None else self.epoch_progress

    @property
    def run_fraction(self) -> float:
        """Share of the run done before this step, in [0, 1)."""
        return self.epochs_done / max(self.num_epochs, 1)

    @property
    def teacher(self) -> torch.Tensor:
        """The (first or aggregated) teacher's logits; an error if the run has no teacher."""
        if not self.teacher_logits:
            raise RuntimeError("this method needs a teacher, but the run has none")
        return self.teacher_logits[0]


def require_number(name: str, value: Any) -> None:
    """A method option given as a finite real number. Options come from Python and from configs alike,
    and without this a string ("4") fails later as a bare TypeError in a comparison or in the loss, and
    inf or NaN trains on a loss of inf / NaN."""
    if isinstance(value, bool) or not isinstance(value, Real):
        hint = f"; write {value.strip()}, without quotes" if isinstance(value, str) and _numeric(value) else ""
        raise BadInput(f"{name}: must be a number (got {type(value).__name__} {value!r}){hint}")
    if not math.isfinite(value):
        raise BadInput(f"{name}: must be a finite number (got {value})")


def require_positive(name: str, value: float) -> None:
    require_number(name, value)
    if not value > 0:
        raise BadInput(f"{name}: must be > 0 (got {value})")


def require_non_negative(name: str, value: float) -> None:
    require_number(name, value)
    if not value >= 0:
        raise BadInput(f"{name}: must be >= 0 (got {value})")


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class Method(nn.Module):
    """Base class. Subclasses set the class attributes and implement `loss_terms`."""

    name: ClassVar[str] = "method"
    summary: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = True
    needs_labels: ClassVar[bool] = False
    uses_logits: ClassVar[bool] = True  # logit methods need matching label spaces
    supervises_labels: ClassVar[bool] = False  # a loss on the ground-truth labels (cross-entropy)
    compares_samples: ClassVar[bool] = False  # a loss over the batch's samples against each other (SP, RKD, PKT)

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        require_non_negative("weight", weight)
        self.weight = float(weight)
        self.label = self.name
        # Active epochs [start_epoch, end_epoch); set from config keys of the same names. This is how
        # FitNets' two stages are written: a hint with end_epoch=N, KD with start_epoch=N.
        self.start_epoch = 0
        self.end_epoch: int | None = None

    @classmethod
    def reads_labels(cls, options: dict[str, Any]) -> bool:
        """Whether a method built with these options reads the batch's labels: `needs_labels`, unless an
        option decides it (CRD's `negatives: other_classes`). Config checks ask this before anything is built."""
        return cls.needs_labels

    def active(self, epoch: int) -> bool:
        return epoch >= self.start_epoch and (self.end_epoch is None or epoch < self.end_epoch)

    # taps -------------------------------------------------------------------------------------
    def student_taps(self) -> list[str]:
        return []

    def teacher_taps(self) -> list[str]:
        return []

    def teacher_index(self) -> int:
        return 0

    # lifecycle ----------------------------------------------------------------------------------
    def build(self, ctx: StepContext) -> None:
        """Called once with a first batch's outputs, before the optimiser exists: create adapters."""

    def loss_terms(self, ctx: StepContext) -> torch.Tensor | dict[str, torch.Tensor]:
        raise NotImplementedError

    def global_batch(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """For losses that compare the samples of a batch with each other: under DDP, in training
        mode, every rank's rows (with gradients), so N processes compute the loss one process
        computes on the whole batch; unchanged on one process or in eval mode (a loss computed on
        one rank alone, as a user's validation may, must not wait for the others)."""
        return gather_batch(*tensors) if self.training else tensors

    def forward(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        terms = self.loss_terms(ctx)
        if torch.is_tensor(terms):
            return {self.label: self.weight * terms}
        return {f"{self.label}.{key}": self.weight * value for key, value in terms.items()}

    def extra_repr(self) -> str:
        return f"weight={self.weight}"
