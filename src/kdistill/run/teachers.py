"""The experiment's teachers: loaded from their checkpoints, or trained first (each in its own stage)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdistill.config import ConfigError, ExperimentConfig, TeacherSpec
from kdistill.data import DataBundle
from kdistill.data.transforms import Normalize
from kdistill.engine import Distiller
from kdistill.engine.seed import derive_seed
from kdistill.methods import HardLabel, Method
from kdistill.run.before_training import check_before_training
from kdistill.run.build import STAGE_SEEDS, build_methods, build_participant, distiller_kwargs
from kdistill.run.normalization import normalization_for
from kdistill.settings import CacheSettings
from kdistill.strategies.multi_teacher import build_aggregator, check_label_spaces
from kdistill.strategies.registry import MIXTURE_HOLDS_NO_LAYERS
from kdistill.strategies.stages import fit_or_load, weights_digest
from kdistill.strategies.teacher_ensemble import TeacherEnsemble


@dataclass
class Teachers:
    """The loaded (or trained) teachers with their specs and input normalisations."""

    specs: list[TeacherSpec]
    models: list[nn.Module]
    norms: list[Normalize]
    aggregator: Any = None

    @property
    def teacher(self) -> nn.Module | list[nn.Module]:
        return self.models[0] if len(self.models) == 1 else self.models

    @property
    def normalization(self) -> Normalize | list[Normalize]:
        return self.norms[0] if len(self.norms) == 1 else self.norms

    def as_cached_mixture(self) -> Teachers:
        """Several fixed teachers as the one model whose outputs the teacher cache holds: their
        mixture at the aggregator's temperature and weights (`TeacherEnsemble`), which a run from
        the cache reads as the live run reads the aggregator's (`check_cached_mixture` first)."""
        if len(self.models) == 1:
            return self
        weights = getattr(self.aggregator, "raw_weights", None)  # a weighted aggregate's; the mean's are equal
        mixture = TeacherEnsemble(self.models, temperature=self.aggregator.temperature, weights=weights)
        return Teachers(self.specs, [mixture], [self.norms[0]], aggregator=None)

    def record(self) -> dict[str, Any]:
        """Who teaches (for a stage's `stage.json`): their names and a digest of their weights."""
        if not self.models:
            return {"teacher": None, "teacher_weights": None}
        return {"teacher": [spec.name for spec in self.specs], "teacher_weights": weights_digest(self.models)}


def teacher_cache_settings(config: ExperimentConfig, teachers: Teachers, run_dir: Path) -> CacheSettings | None:
    """The teacher-output cache (with several teachers, of their mixture: the config check asked for
    the same settings on each); without a directory, `<run dir>/teacher-cache`."""
    if not teachers.specs:
        return None
    cache = teachers.specs[0].cache_spec()
    if cache is None or cache.directory is not None:
        return cache
    return cache.model_copy(update={"directory": run_dir / "teacher-cache"})


def check_cached_mixture(teachers: Teachers, methods: list[Method]) -> None:
    """What caching several teachers' mixture needs of the built run, before anything trains (the
    config check asked for the same cache on each and a mean or weighted aggregate): one input
    normalisation for all, and no method reading a teacher's layers."""
    problems = []
    if not all(norm.same_as(teachers.norms[0]) for norm in teachers.norms):
        problems.append("teachers[*].normalize: a cached mixture is one model with one input normalisation, and "
                        "these teachers see different inputs; give them the same `normalize`, or turn the cache off")
    readers = sorted({m.label for m in methods if m.teacher_taps()})
    if readers:
        problems.append(f"methods: {', '.join(readers)} {MIXTURE_HOLDS_NO_LAYERS}")
    if problems:
        raise ConfigError(problems)


def prepare_teachers(config: ExperimentConfig, bundle: DataBundle, train: Any, val: Any, run_dir: Path, resume: bool,
                     progress: bool) -> Teachers:
    """Build every teacher, check the whole run on one batch (`preflight`), then train those that
    are trained here. Nothing trains before every model, tap and method has been checked."""
    specs = config.teacher_specs()
    many = len(specs) > 1
    built = []
    for index, spec in enumerate(specs):
        where = f"teachers[{index}]" if config.teachers else "teacher"
        seed = derive_seed(config.seed, STAGE_SEEDS["teacher"], index)
        model = build_participant(spec, bundle, where, seed, spec.num_classes)
        # each teacher trains from the RNG state right after its own build, as when built one at a time
        built.append((spec, where, model, torch.get_rng_state()))
    teachers = Teachers(specs, [m for _, _, m, _ in built], [normalization_for(s, bundle) for s in specs])
    teachers.aggregator = build_run_aggregator(config)
    methods = build_methods(config)
    check_teacher_labels(methods, teachers, bundle)
    if len(specs) > 1 and teacher_cache_settings(config, teachers, run_dir) is not None:
        check_cached_mixture(teachers, methods)
    check_before_training(config, bundle, train, val, run_dir, teachers, methods)
    for index, (spec, where, model, rng_state) in enumerate(built):
        if spec.checkpoint is None:
            if spec.num_classes not in (None, bundle.num_classes):
                raise ConfigError([f"{where}.num_classes: a teacher of another task must come with its checkpoint"])
            training = spec.training or config.training
            stage_dir = run_dir / (f"teacher-{index + 1}" if many else "teacher")
            norm = teachers.norms[index]

            def make(model=model, norm=norm, training=training, stage_dir=stage_dir) -> Distiller:
                return Distiller(None, model, [HardLabel()], **distiller_kwargs(
                    config, training, norm, stage_dir, stage_dir.name, progress))

            record = {"stage": stage_dir.name, "teacher": None, "teacher_weights": None, "model": spec.name,
                      "epochs": training.epochs, "methods": ["hard_label"], "seed": config.seed}
            torch.set_rng_state(rng_state)
            fit_or_load(stage_dir, model, make, train, val, training.epochs, resume=resume, record=record)
        model.eval()
    return teachers


def build_run_aggregator(config: ExperimentConfig) -> Any:
    """How several teachers' soft targets combine (None without `strategy.aggregate`)."""
    if config.strategy.aggregate is None:
        return None
    options = config.strategy.aggregate.options()
    if "temperature" not in options:  # the mixture at the temperature the logit methods read it
        temperatures = [float(m.temperature) for m in build_methods(config) if hasattr(m, "temperature")]
        options["temperature"] = max(temperatures, default=1.0)
    return build_aggregator(config.strategy.aggregate.name, options)


def check_teacher_labels(methods: list[Method], teachers: Teachers, bundle: DataBundle) -> None:
    """Logit methods need teachers of the data's classes; a teacher of another task teaches features only."""
    if not teachers.models:
        return
    classes = [spec.num_classes or bundle.num_classes for spec in teachers.specs]
    try:
        check_label_spaces(methods, classes, bundle.num_classes)
    except ValueError as error:
        raise ConfigError([f"methods: {error}"]) from error
