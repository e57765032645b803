"""The models and training settings of a stage, from the config: participants, methods, Distiller arguments.

`normalization_for` (which statistics each model's inputs get) lives in `run.normalization`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdistill.config import ConfigError, ExperimentConfig, ModelSpec, TrainingSpec
from kdistill.data import DataBundle
from kdistill.data.augment_pipeline import build_augment
from kdistill.data.transforms import Normalize
from kdistill.errors import UnreadableFile
from kdistill.methods import Method, build_method
from kdistill.models import ModelFactoryError, build_model, load_weights, read_weights
from kdistill.run.normalization import normalization_for  # noqa: F401  (the former home: experiment.py imports it here)

STAGE_SEEDS = {"teacher": 1, "student": 2}
DEBUG_HINT = " (run with --debug to see where it was raised)"


def build_participant(spec: ModelSpec, bundle: DataBundle, where: str, seed: int | None,
                      num_classes: int | None = None, run_teacher: Path | None = None) -> nn.Module:
    """Build (and load) a model; seeded from `seed` unless None (the caller seeded already). What the
    user's factory or checkpoint gets wrong is a `ConfigError` naming the field. `run_teacher`: the
    weights a student's `teacher_checkpoint: run` stands for (None: cut from the pretrained folder,
    for a throw-away or a model whose trained weights are loaded next; kdistill.text.run_teacher)."""
    from kdistill.text.run_teacher import with_run_teacher

    spec = with_run_teacher(spec, run_teacher)
    if seed is not None:
        torch.manual_seed(seed)
    classes = num_classes or bundle.num_classes
    try:
        model = build_model(spec.name, classes, bundle.input_shape, spec.options,
                            getattr(bundle, "model_defaults", None))
    except ModelFactoryError as error:
        if ":" in spec.name:  # the user's code raised or returned something else: its name, not its options
            raise ConfigError([f"{where}.name: {error}{DEBUG_HINT if error.__cause__ else ''}"]) from error
        raise ConfigError([f"{where}.options: {error}"]) from error
    except (TypeError, ValueError) as error:
        raise ConfigError([f"{where}.options: {error}"]) from error
    trim = getattr(spec, "vocabulary", None) is not None  # a student's `vocabulary: training`
    # a checkpoint of a trimmed student (its kept tokens saved with it) loads after trimming, any other before
    trim_first = trim and spec.checkpoint is not None and _holds_trimmed_embedding(spec.checkpoint)
    table = None
    if trim_first:
        _trim(spec, model, bundle, where)
        table = model.get_input_embeddings().remap.clone()
    if spec.checkpoint is not None:
        try:
            load_weights(model, spec.checkpoint)
        except UnreadableFile as error:
            raise ConfigError([f"{where}.checkpoint: {error}"]) from error
        except ValueError as error:
            other_task = f"set {where}.num_classes for a teacher of another task (it teaches through feature methods)"
            hint = checkpoint_class_hint(model, spec.checkpoint, classes, other_task)
            raise ConfigError([f"{where}.checkpoint: {error}{hint}"]) from error
    if trim_first:
        from kdistill.text.student_vocabulary import report_checkpoint_table

        report_checkpoint_table(spec, model, table, where)
    if trim and not trim_first:
        _trim(spec, model, bundle, where)
    return model


def _holds_trimmed_embedding(path: Path) -> bool:
    try:
        return any(key.endswith("embeddings.keep") for key in read_weights(path))
    except UnreadableFile:
        return False  # load_weights names the problem


def _trim(spec: ModelSpec, model: nn.Module, bundle: DataBundle, where: str) -> None:
    from kdistill.text.student_vocabulary import trim_student_vocabulary

    trim_student_vocabulary(spec, model, bundle, where)


def checkpoint_class_hint(model: nn.Module, path: Path, classes: int, other_task: str) -> str:
    """Name a checkpoint whose classifier has another number of outputs than the data's classes
    (`other_task`: what to do when that is intended)."""
    try:
        state = read_weights(path)
    except (ValueError, OSError):
        return ""
    own = model.state_dict()
    for key, tensor in state.items():
        mine = own.get(key)
        if (mine is not None and tensor.dim() in (1, 2) and mine.dim() == tensor.dim() and mine.shape[0] == classes
                and tensor.shape[0] != classes and tensor.shape[1:] == mine.shape[1:]):
            return (f"; the checkpoint's '{key}' has {tensor.shape[0]} outputs but the model is built for {classes} "
                    f"classes: load a checkpoint trained on these {classes} classes, or {other_task}")
    return (f" (the model was built for {classes} classes; do the architecture, its options and its class count "
            "match the checkpoint?)")


def build_methods(config: ExperimentConfig) -> list[Method]:
    return [build_method(spec.name, spec.options()) for spec in config.methods]


def distiller_kwargs(config: ExperimentConfig, training: TrainingSpec, normalize: Normalize, stage_dir: Path | None,
                     description: str, progress: bool) -> dict[str, Any]:
    """What every stage's Distiller shares: optimisation, data handling, precision, seed, training features."""
    from kdistill.engine.callbacks import build_callbacks

    return {
        "optimizer": training.optimizer,
        "schedule": training.schedule,
        "batch_size": config.data.batch_size,
        "eval_batch_size": config.data.eval_batch_size,
        "num_workers": config.data.num_workers,
        "drop_last": config.data.drop_last,
        "group_by_length": config.data.group_by_length,
        "device": training.device,
        "precision": training.precision,
        "grad_clip": training.grad_clip,
        "seed": config.seed,
        "augment": build_augment([{"name": op.name, **(op.model_extra or {})} for op in config.data.augment.pipeline],
                                 config.seed, config.data.augment.crop_padding, config.data.augment.horizontal_flip),
        "student_normalization": normalize,
        "run_dir": stage_dir,
        "progress": progress,
        "description": description,
        "channels_last": training.channels_last,
        "compile": training.compile,
        # the training features; callbacks are made anew for each stage, so each has its own state
        "accumulate_steps": training.accumulate_steps,
        "eval_every_steps": training.eval_every_steps,
        "checkpoint_every_steps": training.checkpoint_every_steps,
        "best_metric": training.best_metric,
        "early_stopping": training.early_stopping,
        "ema": training.ema,
        "callbacks": build_callbacks(training.callbacks),
    }
