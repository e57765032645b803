"""The models and training settings of a stage, from the config: participants, methods, Distiller arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdistill.config import ConfigError, ExperimentConfig, ModelSpec, TrainingSpec
from kdistill.data import DataBundle
from kdistill.data.augment_pipeline import build_augment
from kdistill.data.transforms import Normalize
from kdistill.methods import Method, build_method
from kdistill.models import build_model, load_weights

STAGE_SEEDS = {"teacher": 1, "student": 2}


def normalization_for(spec: ModelSpec, bundle: DataBundle) -> Normalize:
    if spec.normalize is not None:
        return Normalize(spec.normalize.mean, spec.normalize.std)
    return Normalize(bundle.mean, bundle.std)


def build_participant(spec: ModelSpec, bundle: DataBundle, where: str, seed: int | None,
                      num_classes: int | None = None) -> nn.Module:
    """Build (and load) a model; seeded from `seed` unless None (the caller seeded already)."""
    if seed is not None:
        torch.manual_seed(seed)
    classes = num_classes or bundle.num_classes
    try:
        model = build_model(spec.name, classes, bundle.input_shape, spec.options)
    except (TypeError, ValueError) as error:
        raise ConfigError([f"{where}.options: {error}"]) from error
    if spec.checkpoint is not None:
        try:
            load_weights(model, spec.checkpoint)
        except ValueError as error:
            raise ConfigError([f"{where}.checkpoint: {error} (the model was built for {classes} classes; "
                               f"do the architecture and its class count match the checkpoint?)"]) from error
    return model


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
