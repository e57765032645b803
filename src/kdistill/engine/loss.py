"""The distillation loss of one batch, for kdistill's loop and for anyone else's.

`DistillationLoss` holds the teacher(s), the student and the methods. Called on a batch it runs
the teachers (eval mode, `torch.inference_mode`), the student (with gradients), reads the tapped
layers of both, and returns every method's weighted loss term and their sum. It owns no loop,
optimiser or data: `Distiller` wraps it in one, and a user with a plain-PyTorch, Lightning or
Accelerate loop calls it directly:

    loss_fn = DistillationLoss(teacher, student, [SoftTarget(weight=0.9), HardLabel(weight=0.1)])
    loss_fn.build(first_inputs, first_labels)       # adapters of feature methods, sized from a batch
    optimizer = torch.optim.SGD([*student.parameters(), *loss_fn.parameters()], lr=0.05)
    with loss_fn:                                    # attaches the taps; detached on exit
        for inputs, labels in loader:
            out = loss_fn(inputs, labels)
            optimizer.zero_grad(); out.loss.backward(); optimizer.step()

`loss_fn.parameters()` are the methods' own (adapters, embeddings), never the student's or a
teacher's: the models are held, not registered, so a `state_dict` of the loss is the methods'.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kdistill.collectives import current_world
from kdistill.data.transforms import Normalize, as_normalize
from kdistill.engine.batch import call_model, class_labels, detach_clone, logits_of
from kdistill.errors import BadInput
from kdistill.methods.base import Method, StepContext
from kdistill.methods.logits import HardLabel
from kdistill.taps import LayerTaps, TapError

Autocast = Callable[[], contextlib.AbstractContextManager]
TeacherOutputs = tuple[list[torch.Tensor], list[dict[str, Any]]]


@dataclass
class Participant:
    """A model in the loss with the input normalisation it was trained with."""

    model: nn.Module
    normalize: Normalize
    taps: LayerTaps | None = None
    shares_student_inputs: bool = False  # same normalisation as the student: reuse its normalised batch


@dataclass
class LossOutput:
    loss: torch.Tensor  # the weighted sum of `terms`: what to call backward() on
    terms: dict[str, torch.Tensor]  # each method's weighted term(s), by label ("soft_target", "dkd.nckd")
    context: StepContext  # logits, labels and tapped features this step saw

    @property
    def student_logits(self) -> torch.Tensor:
        return self.context.student_logits


class DistillationLoss(nn.Module):
    """Teacher(s) + student + methods -> the weighted loss terms of one batch."""

    def __init__(
        self,
        teacher: nn.Module | Sequence[nn.Module] | None,
        student: nn.Module,
        methods: Sequence[Method] = (),
        *,
        student_normalization: Normalize | tuple | None = None,
        teacher_normalization: Normalize | tuple | Sequence[Normalize | tuple | None] | None = None,
        teacher_aggregator: Callable[[list[torch.Tensor], torch.Tensor | None], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        teachers = [] if teacher is None else list(teacher) if isinstance(teacher, list | tuple) else [teacher]
        if isinstance(teacher_normalization, list):
            teacher_norms = [as_normalize(n) for n in teacher_normalization]
        else:
            teacher_norms = [as_normalize(teacher_normalization) for _ in teachers]
        if len(teacher_norms) != len(teachers):
            raise ValueError(f"{len(teachers)} teachers but {len(teacher_norms)} teacher normalisations")
        self.methods = nn.ModuleList(methods or [HardLabel()])
        self._label_methods()
        if not teachers:
            needy = [m.name for m in self.methods if m.needs_teacher]
            if needy:
                raise ValueError(f"methods {needy} need a teacher, but none was given")
        # held in a list, not registered: the loss's parameters and state are the methods' alone
        student_part = Participant(student, as_normalize(student_normalization))
        self.participants = [student_part] + [
            Participant(t, n, shares_student_inputs=n.same_as(student_part.normalize))
            for t, n in zip(teachers, teacher_norms, strict=True)]
        self.teacher_aggregator = teacher_aggregator
        self.autocast: Autocast = contextlib.nullcontext
        self._resolve_taps()

    @property
    def student(self) -> Participant:
        return self.participants[0]

    @property
    def teachers(self) -> list[Participant]:
        return self.participants[1:]

    def _label_methods(self) -> None:
        seen: dict[str, int] = {}
        for method in self.methods:
            count = seen.get(method.name, 0)
            method.label = method.name if count == 0 else f"{method.name}{count + 1}"
            seen[method.name] = count + 1

    def _resolve_taps(self) -> None:
        """Resolve every tap now, so a misspelt layer fails before any training."""
        for method in self.methods:
            if method.teacher_taps() and method.teacher_index() >= len(self.teachers):
                raise ValueError(f"{method.label} taps teacher {method.teacher_index()}, but there are "
                                 f"{len(self.teachers)} teacher(s)")
        student_taps = [t for m in self.methods for t in m.student_taps()]
        self.student.taps = LayerTaps(self.student.model, student_taps, "student") if student_taps else None
        for index, teacher in enumerate(self.teachers):
            taps = [t for m in self.methods if m.teacher_index() == index for t in m.teacher_taps()]
            teacher.taps = LayerTaps(teacher.model, taps, f"teacher {index}") if taps else None

    # taps -------------------------------------------------------------------------------------------
    def layer_taps(self) -> list[LayerTaps]:
        return [p.taps for p in self.participants if p.taps is not None]

    def attach(self) -> DistillationLoss:
        for taps in self.layer_taps():
            taps.attach()
        return self

    def detach(self) -> None:
        """Remove every hook: the models are exactly as they were given."""
        for taps in self.layer_taps():
            taps.detach()

    def __enter__(self) -> DistillationLoss:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    # forward passes ---------------------------------------------------------------------------------
    def _run(self, participant: Participant, model_inputs: Any, module: nn.Module | None = None,
             ) -> tuple[torch.Tensor, dict[str, Any]]:
        if participant.taps is not None:
            if not participant.taps.attached:  # the hooks would record nothing: say why, not "did not run"
                raise TapError(f"{participant.taps.owner}: taps are not attached: call the loss inside `with "
                               "loss_fn:` (or loss_fn.attach()); the layers the methods read are recorded only then")
            participant.taps.clear()
        output = call_model(module if module is not None else participant.model, model_inputs)
        features = participant.taps.collect() if participant.taps is not None else {}
        return logits_of(output), features

    def normalized(self, participant: Participant, inputs: Any) -> Any:
        return participant.normalize(inputs) if torch.is_tensor(inputs) else inputs

    def teacher_outputs(self, inputs: Any, student_inputs: Any = None) -> TeacherOutputs:
        """Every teacher's logits and tapped features, in eval mode without autograd. A teacher with
        the student's normalisation reuses `student_inputs` (the student's normalised batch)."""
        logits, features = [], []
        with torch.inference_mode(), self.autocast():
            for teacher in self.teachers:
                teacher.model.eval()
                shared = student_inputs if teacher.shares_student_inputs and student_inputs is not None else None
                out, feats = self._run(teacher, shared if shared is not None else self.normalized(teacher, inputs))
                logits.append(out)
                features.append(feats)
        return detach_clone(logits), detach_clone(features)

    def context(self, inputs: Any, labels: torch.Tensor | None = None, indices: torch.Tensor | None = None, *,
                teacher: TeacherOutputs | None = None, student_module: nn.Module | None = None,
                epoch: int = 0, num_epochs: int = 1, epoch_progress: float | None = None,
                num_samples: int | None = None) -> StepContext:
        """Run the models on one batch. `teacher` gives precomputed teacher outputs (a cache);
        `student_module` is what to call for the student (its DDP or compiled wrapper). Labels go
        through `class_labels` (int64 ids, a (B, 1) column squeezed for (B, C) logits, float (B, C)
        probability rows kept)."""
        student_inputs = self.normalized(self.student, inputs)
        teacher_logits, teacher_features = teacher if teacher is not None else self.teacher_outputs(
            inputs, student_inputs)
        with self.autocast():
            student_logits, student_features = self._run(self.student, student_inputs, student_module)
        labels = class_labels(labels, student_logits)  # the aggregator (no RNG) reads them as the methods do
        if self.teacher_aggregator is not None and teacher_logits:
            teacher_logits = [self.teacher_aggregator(teacher_logits, labels), *teacher_logits]
        return StepContext(student_logits, labels, teacher_logits, student_features, teacher_features, indices,
                           epoch, num_epochs, num_samples, float(epoch) if epoch_progress is None else epoch_progress)

    def weighted_terms(self, ctx: StepContext) -> LossOutput:
        """Every active method's weighted terms and their sum."""
        with self.autocast():
            terms: dict[str, torch.Tensor] = {}
            for method in self.methods:
                if method.active(ctx.epoch):
                    terms.update(method(ctx))
            if not terms:
                raise RuntimeError(f"no method is active in epoch {ctx.epoch}; check start_epoch / end_epoch")
            return LossOutput(sum(terms.values()), terms, ctx)

    def forward(self, inputs: Any, labels: torch.Tensor | None = None, indices: torch.Tensor | None = None,
                **context: Any) -> LossOutput:
        """The loss of one batch (inputs as the models take them, before normalisation)."""
        return self.weighted_terms(self.context(inputs, labels, indices, **context))

    @torch.no_grad()
    def build(self, inputs: Any, labels: torch.Tensor | None = None, indices: torch.Tensor | None = None,
              **context: Any) -> StepContext:
        """Create the methods' lazy parts (adapters sized to the layers) from one batch, with the
        student in eval mode so that its BatchNorm statistics are untouched. Call before building
        the optimiser; the taps are attached for the probe if they are not already."""
        attached = [t for t in self.layer_taps() if not t.attached]
        for taps in attached:
            taps.attach()
        was_training = self.student.model.training
        self.student.model.eval()
        try:
            ctx = self.context(inputs, labels, indices, **context)
            check_label_space(ctx, self.methods, aggregated=self.teacher_aggregator is not None)
            if any(m.needs_labels or m.supervises_labels for m in self.methods):  # scored against the student's
                check_labels(ctx.student_logits, ctx.labels)  # classes (an embedding student need not have them)
            check_batch_of_many(ctx, self.methods)
            for method in self.methods:
                method.build(ctx)
        finally:
            self.student.model.train(was_training)
            for taps in attached:
                taps.detach()
        device = ctx.student_logits.device
        self.methods.to(device)
        return ctx


def check_label_space(ctx: StepContext, methods: Sequence[Method], aggregated: bool = False) -> None:
    """Logit methods compare teacher and student logits class by class: both must predict as many
    classes (dim 1, as (B, C) and per-position (B, V, T) logits have them). Feature methods need not."""
    if not ctx.teacher_logits or ctx.student_logits.dim() < 2 or ctx.teacher.dim() < 2:
        return
    teacher, student = ctx.teacher.shape[1], ctx.student_logits.shape[1]
    logit_methods = [m.label for m in methods if m.needs_teacher and m.uses_logits]
    if teacher == student or not logit_methods:
        return
    from kdistill.strategies.multi_teacher import feature_method_names  # the strategies import the engine

    which = "the teachers (aggregated)" if aggregated else "teacher 0"
    raise BadInput(f"methods {logit_methods} compare teacher and student logits class by class, but {which}: "
                   f"{teacher} classes, student: {student} classes (logits {tuple(ctx.teacher.shape)} vs "
                   f"{tuple(ctx.student_logits.shape)}); give both the data's class count. Feature methods "
                   f"({', '.join(feature_method_names())}) can cross label spaces: a teacher trained on other "
                   "classes teaches through those alone")


def check_batch_of_many(ctx: StepContext, methods: Sequence[Method]) -> None:
    """Losses that compare a batch's samples with each other (similarity and distance matrices,
    probability densities, correlations across the batch) are constant on a batch of one sample:
    the student would learn nothing from them, silently."""
    relational = [m.label for m in methods if m.compares_samples]
    rows = ctx.student_logits.shape[0] * current_world().world_size if ctx.student_logits.dim() else 0
    if relational and rows < 2:
        raise BadInput(f"methods {relational} compare the samples of a batch with each other, and this batch has one "
                       "sample: their loss is constant, so they teach nothing; use batch_size >= 2 (a larger batch "
                       "gives them more pairs to compare)")


def check_labels(student_logits: torch.Tensor, labels: torch.Tensor | None) -> None:
    """Labels the student's logits can be scored against (once, at build: reading the ids syncs)."""
    if labels is None or not torch.is_tensor(labels) or student_logits.dim() < 2:
        return
    classes, shape = student_logits.shape[1], tuple(student_logits.shape)
    if labels.is_floating_point():
        if labels.shape[1] != classes:
            raise BadInput(f"the labels are rows of class probabilities with {labels.shape[1]} columns "
                           f"{tuple(labels.shape)}, but the student predicts {classes} classes (logits {shape}); "
                           "give one column per class, or integer class ids (B,)")
        return
    if labels.dim() == 2 and student_logits.dim() == 2:
        raise BadInput(f"integer labels of shape {tuple(labels.shape)} for logits {shape}: give one class id per "
                       "sample (B,), or rows of class probabilities (one-hot, soft) as floats (B, C)")
    ids = labels[labels != -100]  # -100: positions the losses leave out (padding)
    if ids.numel() == 0:
        return
    low, high = int(ids.min()), int(ids.max())
    if high >= classes:
        raise BadInput(f"labels go up to {high}, but the student predicts {classes} classes (logits {shape}); "
                       f"give the student the data's class count (at least {high + 1})")
    if low < 0:
        raise BadInput(f"labels hold {low}: class ids must be in [0, {classes}) (-100 marks positions left out)")


__all__ = ["DistillationLoss", "LossOutput", "Participant", "check_batch_of_many", "check_label_space",
           "check_labels"]
