"""The checks that need the models and one real batch, run before the first epoch of the first stage.

A misspelt layer, a layer that never runs, a teacher with the wrong number of outputs or a
student feature no adapter can map used to surface when the stage that needs them started: after
the teacher and the scratch baseline had trained. One batch through every model in eval mode,
without gradients, finds all of them in seconds: every model's outputs against the data's classes,
every method's taps against the models it will read them from (for each pairing the strategy
makes: teacher -> student, generation k -> k + 1, teacher -> assistants -> student), and each
method's lazy parts and loss on the features it will see. Every problem is one `field: fix` line.

The models are returned as they came: train / eval mode restored, hooks removed, the global RNG
untouched (the throw-away student is built under a forked RNG), no parameter or buffer changed
(eval mode: BatchNorm statistics stay; no gradients). Methods are checked on copies.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import default_collate

from kdistill.config import ConfigError, ExperimentConfig
from kdistill.data import DataBundle, InMemoryDataset
from kdistill.data.transforms import Normalize, to_float
from kdistill.engine.batch import call_model, logits_of, split_batch
from kdistill.errors import first_line
from kdistill.methods import Method
from kdistill.taps import Tap, TapError, resolve_module

PROBE_BATCH = 16  # samples of the dry forward (several: relation methods compare samples)


@dataclass
class Model:
    """One model of the run as the preflight sees it: where the config names it, its inputs, its outputs."""

    where: str  # "teacher", "teachers[1]", "student", "strategy.assistants[0]"
    model: nn.Module
    norm: Normalize
    classes: int  # the outputs it must have


def first_samples(data: Any, count: int, start: int = 0) -> Any:
    """Samples start..start+count-1 of a data set as one batch (what its loader would give)."""
    indices = list(range(start, min(start + count, len(data))))
    if isinstance(data, InMemoryDataset):
        return data.__getitems__(indices)
    return default_collate([data[i] for i in indices])


class Probe:
    """One batch of the training set, ready for the models (floats, not yet normalised)."""

    def __init__(self, train: Any, batch_size: int, num_classes: int) -> None:
        try:
            batch = first_samples(train, min(batch_size, PROBE_BATCH))
        except Exception as error:  # a user's data set: name it rather than crash later in the loader
            raise ConfigError(["data: cannot make a batch of the first training samples "
                               f"({first_line(error, with_type=True)}); "
                               "each sample must be a dict with 'input' and 'label', or an (input, label) tuple"]
                              ) from error
        inputs, labels, indices = split_batch(batch)
        self.inputs = to_float(inputs) if torch.is_tensor(inputs) else inputs
        self.labels, self.indices = labels, indices
        self.problems = label_problems(labels, num_classes, "training")

    def normalized(self, norm: Normalize) -> Any:
        return norm(self.inputs) if torch.is_tensor(self.inputs) else self.inputs

    def shape(self) -> str:
        return str(tuple(self.inputs.shape)) if torch.is_tensor(self.inputs) else type(self.inputs).__name__


def label_problems(labels: Any, num_classes: int, split: str) -> list[str]:
    """Labels must be integer class indices in [0, num_classes)."""
    if labels is None:
        return []
    if not torch.is_tensor(labels) or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        kind = labels.dtype if torch.is_tensor(labels) else type(labels).__name__
        return [f"data: the {split} labels must be integer class indices (got {kind}); return labels as a long tensor"]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        return [f"data: {split} labels must be in [0, {num_classes}) for {num_classes} classes (found "
                f"{int(labels.min())}..{int(labels.max())}); renumber the labels from 0, or give the bundle "
                "num_classes above the largest label"]
    return []


@torch.no_grad()
def output_problems(model: Model, probe: Probe, dataset: str) -> list[str]:
    """The model runs on the batch and gives one logit per class of the data."""
    was_training = model.model.training
    model.model.eval()
    try:
        logits = logits_of(call_model(model.model, probe.normalized(model.norm)))
    except Exception as error:  # the model's own code: one line naming it and the input it was given
        return [f"{model.where}: the forward pass on a batch of shape {probe.shape()} failed "
                f"({first_line(error, with_type=True)}); "
                "does the model take this data's inputs?"]
    finally:
        model.model.train(was_training)
    if logits.dim() != 2 or logits.shape[1] != model.classes:
        got = tuple(logits.shape)
        return [f"{model.where}: outputs logits of shape {got} for a batch of {got[0] if got else '?'}, but data "
                f"'{dataset}' has {model.classes} classes (expected (batch, {model.classes})); build it for "
                f"{model.classes} classes (a factory receives num_classes) or load a checkpoint of this task"]
    return []


def _layer_key(options: dict[str, Any], side: str) -> str:
    for key in (f"{side}_layer", f"{side}_layers"):
        if key in options:
            return key
    return f"{side}_layers"


def static_tap_problems(methods: Sequence[Method], options: Sequence[dict[str, Any]], teachers: Sequence[Model],
                        student: Model) -> list[str]:
    """Every tap names a module of the model it reads (closest names suggested) and an existing teacher."""
    problems = []
    for index, (method, opts) in enumerate(zip(methods, options, strict=True)):
        for tap in method.student_taps():
            try:
                resolve_module(student.model, Tap.parse(tap).path, student.where)
            except TapError as error:
                problems.append(f"methods[{index}].{_layer_key(opts, 'student')}: {error}")
        if not method.teacher_taps():
            continue
        if method.teacher_index() >= len(teachers):
            problems.append(f"methods[{index}].teacher: reads teacher {method.teacher_index()}, but the run has "
                            f"{len(teachers)} teacher(s) (numbered from 0)")
            continue
        teacher = teachers[method.teacher_index()]
        for tap in method.teacher_taps():
            try:
                resolve_module(teacher.model, Tap.parse(tap).path, teacher.where)
            except TapError as error:
                problems.append(f"methods[{index}].{_layer_key(opts, 'teacher')}: {error}")
    return problems


def pairing_problems(methods: Sequence[Method], options: Sequence[dict[str, Any]], teachers: Sequence[Model],
                     student: Model, probe: Probe, aggregator: Any, num_samples: int) -> list[str]:
    """The methods on one (teachers -> student) pairing: taps, a dry forward, lazy parts and loss."""
    from kdistill.engine.loss import DistillationLoss

    problems = static_tap_problems(methods, options, teachers, student)
    if problems:
        return problems
    copies = [copy.deepcopy(m) for m in methods]
    try:
        loss = DistillationLoss([t.model for t in teachers] or None, student.model, copies,
                                student_normalization=student.norm, teacher_normalization=[t.norm for t in teachers],
                                teacher_aggregator=aggregator if len(teachers) > 1 else None)
    except (ValueError, TypeError) as error:
        return [f"methods: {error}"]
    models = [student.model, *(t.model for t in teachers)]
    modes = [m.training for m in models]
    try:
        for model in models:
            model.eval()
        with torch.no_grad(), loss:
            try:
                ctx = loss.context(probe.inputs, probe.labels, probe.indices, num_samples=num_samples)
            except TapError as error:
                return _unrun_problems(loss, methods, options, teachers, student, error)
            for index, method in enumerate(copies):
                try:
                    method.build(ctx)
                    method(ctx)
                except Exception as error:  # shapes a method cannot use: its own message names both
                    problems.append(f"methods[{index}] ({method.name}, {student.where} <- "
                                    f"{', '.join(t.where for t in teachers) or 'no teacher'}): "
                                    f"{first_line(error, with_type=True)}")
    finally:
        for model, mode in zip(models, modes, strict=True):
            model.train(mode)
    return problems


def _unrun_problems(loss: Any, methods: Sequence[Method], options: Sequence[dict[str, Any]],
                    teachers: Sequence[Model], student: Model, error: TapError) -> list[str]:
    """Which method's taps never ran (or could not be selected), by field."""
    problems = []
    participants = [(student, loss.student.taps, "student", None)] + [
        (t, p.taps, "teacher", k) for k, (t, p) in enumerate(zip(teachers, loss.teachers, strict=True))]
    for model, taps, side, k in participants:
        missing = set(taps.unrun) if taps is not None else set()  # refused by its collect, not just read
        for index, (method, opts) in enumerate(zip(methods, options, strict=True)):
            if side == "teacher" and method.teacher_index() != k:
                continue
            wanted = method.student_taps() if side == "student" else method.teacher_taps()
            for tap in wanted:
                if tap in missing:
                    problems.append(f"methods[{index}].{_layer_key(opts, side)}: '{tap}' exists in {model.where} "
                                    f"({type(model.model).__name__}) but does not run in its forward pass; tap a "
                                    "module that forward() calls (`kdistill layers` marks the others '(not run)')")
    return problems or [f"methods: {error}"]


def pairings(config: ExperimentConfig, teachers: list[Model], student: Model,
             assistants: list[Model]) -> list[tuple[list[Model], Model]]:
    """Who teaches whom with the config's methods, by strategy (a user's strategy: the run's teachers
    teach the student, what `fit_stage` does by default)."""
    name = config.strategy.name.lower().replace("-", "_")
    if name == "mutual":
        return []  # its own loss, no config methods
    as_teacher = Model(f"{student.where} (as the teacher of the next generation)", copy.deepcopy(student.model),
                       student.norm, student.classes)
    if name == "born_again":
        found = [(teachers, student)] if teachers else []
        if config.strategy.generations > 1 or not teachers:
            found.append(([as_teacher], student))
        return [(t, s) for t, s in found if t]
    if name == "teacher_assistant" and assistants:
        chain = [teachers, *[[a] for a in assistants]]
        takers = [*assistants, student]
        return [(t, s) for t, s in zip(chain, takers, strict=True) if t]
    return [(teachers, student)]


def preflight(config: ExperimentConfig, bundle: DataBundle, train: Any, teachers: list[Model], aggregator: Any,
              methods: Sequence[Method], student: Model, assistants: Sequence[Model] = ()) -> None:
    """Raise one `ConfigError` with every problem the models and one batch reveal; return when none.
    The global RNG is as it was (the methods' adapters are built from it)."""
    with torch.random.fork_rng(devices=[]):
        _preflight(config, bundle, train, teachers, aggregator, methods, student, assistants)


def _preflight(config: ExperimentConfig, bundle: DataBundle, train: Any, teachers: list[Model], aggregator: Any,
               methods: Sequence[Method], student: Model, assistants: Sequence[Model]) -> None:
    probe = Probe(train, config.data.batch_size, bundle.num_classes)
    problems = list(probe.problems)
    for model in [*teachers, student, *assistants]:
        problems += output_problems(model, probe, bundle.name)
    if problems:
        raise ConfigError(problems)
    options = [spec.options() for spec in config.methods]
    for teaching, learner in pairings(config, teachers, student, list(assistants)):
        for problem in pairing_problems(methods, options, teaching, learner, probe, aggregator, len(train)):
            if problem not in problems:
                problems.append(problem)
    if problems:
        raise ConfigError(problems)


__all__ = ["Model", "Probe", "first_samples", "label_problems", "pairings", "preflight"]
