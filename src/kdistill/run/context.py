"""`StrategyContext`: everything a strategy needs to train its students, in one object.

The experiment prepares the data, the teachers and the methods, then calls the configured
strategy with one context. The helpers give every strategy (built in or a user's own) the same
stages: seeded models from the config, the run's Distiller settings, `fit_stage` (train, resume
or load one stage folder, recording who taught it) and `profile` (one row of the results table).

    from kdistill.results import DISTILLED

    def my_strategy(ctx):                       # strategy: {name: mypkg.mymod:my_strategy}
        student = ctx.build_student()
        ctx.fit_stage("student-distilled", student)   # the config's methods, taught by the run's teachers
        return [ctx.profile(DISTILLED, student)] if ctx.is_main else []
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from kdistill.collectives import current_world
from kdistill.config import ExperimentConfig, ModelSpec, TrainingSpec
from kdistill.data import DataBundle
from kdistill.data.transforms import Normalize
from kdistill.engine import Distiller
from kdistill.engine.callbacks import build_callbacks
from kdistill.methods import Method
from kdistill.results import ModelResult
from kdistill.run.build import build_participant, distiller_kwargs
from kdistill.run.profiling import profile_row
from kdistill.run.teachers import Teachers
from kdistill.settings import CacheSettings
from kdistill.strategies.stages import StageOutcome, fit_or_load, weights_digest

_STUDENT_SEED = object()  # build_student's default: the run's student seed
RUN_TEACHERS = object()  # fit_stage's default teacher: the run's teachers (none in a run without)


@dataclass
class StrategyContext:
    config: ExperimentConfig
    bundle: DataBundle
    train: Any
    val: Any
    run_dir: Path
    resume: bool
    progress: bool
    methods: list[Method]  # the config's methods, built (untrained copies for more stages: `fresh_methods()`)
    teachers: Teachers  # loaded or trained; `teachers.models` is empty for a run without teachers
    student_norm: Normalize
    student_seed: int

    def __post_init__(self) -> None:
        self._pristine = [copy.deepcopy(m) for m in self.methods]  # before any stage trains (and builds) them

    @property
    def is_main(self) -> bool:
        """Rank 0 (the only process when not distributed): the one that profiles and writes rows."""
        return current_world().is_main

    @property
    def options(self) -> dict[str, Any]:
        """The extra `strategy:` keys (those a user's strategy declares in `@strategy(options=...)`)."""
        return self.config.strategy.options()

    def build_student(self, seed: int | None | object = _STUDENT_SEED, spec: ModelSpec | None = None,
                      where: str = "student", *, teacher_init: bool = True) -> nn.Module:
        """The config's student (or `spec`), seeded from the run's student seed (None: not re-seeded).
        The config's student gets `student.embedding_init` unless `teacher_init` is False (the scratch baseline)."""
        seed = self.student_seed if seed is _STUDENT_SEED else seed
        model = build_participant(spec or self.config.student, self.bundle, where, seed,
                                  run_teacher=self._run_teacher())
        return self._teacher_init(model) if spec is None and teacher_init else model

    def model_factory(self, spec: ModelSpec | None = None, where: str = "student") -> Callable[[], nn.Module]:
        """A factory of unseeded models (for strategies that seed each model themselves: chains, cohorts)."""
        if spec is None:
            return lambda: self._teacher_init(build_participant(self.config.student, self.bundle, where, None,
                                                                run_teacher=self._run_teacher()))
        return lambda: build_participant(spec, self.bundle, where, None, run_teacher=self._run_teacher())

    def _run_teacher(self) -> Path | None:
        """The weights file of the run's teacher, for a student cut from it (`teacher_checkpoint: run`)."""
        from kdistill.text.run_teacher import run_teacher_weights

        return run_teacher_weights(self.config, self.run_dir)

    def _teacher_init(self, model: nn.Module) -> nn.Module:
        """`student.embedding_init: teacher`: the teacher's embeddings projected to the student's width."""
        from kdistill.text.student_init import init_student_embeddings, wants_embedding_init

        if wants_embedding_init(self.config):
            init_student_embeddings(self.config, model, self.teachers.models)
        return model

    def fresh_methods(self) -> list[Method]:
        """Untrained copies of the config's methods (a stage's methods hold state: adapters, memories)."""
        return [copy.deepcopy(m) for m in self._pristine]

    def distiller_kwargs(self, stage_dir: Path | None = None, description: str = "",
                         training: TrainingSpec | None = None) -> dict[str, Any]:
        """The run's Distiller settings (optimiser, schedule, data handling, precision, seed, ...)."""
        return distiller_kwargs(self.config, training or self.config.training, self.student_norm, stage_dir,
                                description, self.progress)

    def chain_kwargs(self) -> dict[str, Any]:
        """Distiller settings for chained stages, which name each stage and give its directory themselves,
        and get callbacks of their own through `stage_callbacks`."""
        kwargs = self.distiller_kwargs()
        del kwargs["run_dir"], kwargs["description"], kwargs["callbacks"]
        return kwargs

    def stage_callbacks(self, _stage: str, distiller: Distiller) -> None:
        """A chained stage's own callbacks, built anew from the config (a chain's `callback`). One set
        shared by the stages carried a stage's state into the next, which a resumed run (the finished
        stages loaded, not trained) does not: a stateful callback gave other weights after a resume."""
        distiller.hooks.callbacks = build_callbacks(self.config.training.callbacks)

    def fit_stage(self, name: str, model: nn.Module, methods: Sequence[Method] | None = None, *,
                  teacher: Any = RUN_TEACHERS, teacher_name: str | None = None, cache: CacheSettings | None = None,
                  training: TrainingSpec | None = None, record: dict[str, Any] | None = None) -> StageOutcome:
        """Train `model` in `run_dir/name`, or resume it there, or load it when that stage is done.

        `methods` default to the config's. `teacher`: the run's teachers (default), None (labels
        only), or a model of this run (an earlier stage's student, seen with the student's
        normalisation). A stage the run's teachers teach trains on `data.transfer_set` when the run has
        one. Who teaches and a digest of its weights go into the stage's `stage.json`, so the stage is
        never resumed or loaded against another teacher; `record` adds entries.
        """
        stage_dir = self.run_dir / name
        methods = list(self.methods if methods is None else methods)
        training = training or self.config.training
        if teacher is RUN_TEACHERS:
            teacher = self.teachers if self.teachers.models else None
        train = self.train
        transfer = getattr(self.bundle, "transfer", None)  # `data.transfer_set`: unlabelled copies, so
        if isinstance(teacher, Teachers) and transfer is not None:  # only for a stage the run's teachers teach
            train = transfer
            record = {**(record or {}), "transfer_set": {"samples": len(transfer),
                                                         **self.config.data.transfer_set.model_dump(mode="json")}}
        if isinstance(teacher, Teachers):
            who = teacher.record()
            teacher_kwargs = {"teacher_normalization": teacher.normalization, "teacher_aggregator": teacher.aggregator,
                              "teacher_cache": cache}
            teacher = teacher.teacher
        elif teacher is not None:
            who = {"teacher": teacher_name or "model", "teacher_weights": weights_digest(teacher)}
            teacher_kwargs = {"teacher_normalization": self.student_norm}
        else:
            who, teacher_kwargs = {"teacher": None, "teacher_weights": None}, {}
        full_record = {"stage": name, **who, "epochs": training.epochs, "methods": [m.name for m in methods],
                       "seed": self.config.seed, **(record or {})}

        def make() -> Distiller:
            return Distiller(teacher, model, methods, **teacher_kwargs,
                             **self.distiller_kwargs(stage_dir, name, training))

        return fit_or_load(stage_dir, model, make, train, self.val, training.epochs, resume=self.resume,
                           record=full_record)

    def profile(self, role: str, model: nn.Module, accuracy: float | None = None) -> ModelResult:
        """One row of the results table: test accuracy (measured unless given), size, CPU latency."""
        return profile_row(role, model, self.bundle, self.student_norm, self.config, accuracy, self.progress)
