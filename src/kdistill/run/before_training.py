"""Everything checked between building the teachers and training the first stage, in one call.

`prepare_teachers` calls it once the teachers exist (loaded, or built untrained) and before any of
them trains: which inputs each model sees is printed, a loaded teacher's default normalisation is
checked, `student.embedding_init` is tried on a throw-away student, the whole run is dry-run on
one batch (`preflight`), and loaded teachers far below their checkpoints' records are noted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from kdistill.collectives import current_world
from kdistill.config import ExperimentConfig
from kdistill.data import DataBundle
from kdistill.engine.seed import derive_seed
from kdistill.methods import Method
from kdistill.run.build import STAGE_SEEDS, build_participant
from kdistill.run.normalization import (
    announce,
    check_default_normalization,
    check_recorded_accuracy,
    normalization_choice,
    record_notes,
    scoring_set,
)
from kdistill.run.preflight import Model, preflight
from kdistill.text.student_init import check_embedding_init


def check_before_training(config: ExperimentConfig, bundle: DataBundle, train: Any, val: Any, run_dir: Path,
                          teachers: Any, methods: list[Method]) -> None:
    """Say which inputs each model sees, check the loaded teachers' normalisation and the whole run
    on one batch (a `ConfigError` listing every problem), and note loaded teachers that score far
    below their checkpoints' records."""
    wheres = [f"teachers[{i}]" if config.teachers else "teacher" for i in range(len(teachers.specs))]
    student_norm, student_text = normalization_choice(config.student, bundle)
    main = current_world().is_main
    if main:
        announce([*((w, normalization_choice(s, bundle)[1]) for w, s in zip(wheres, teachers.specs, strict=True)),
                  ("student", student_text)])
    data, split = scoring_set(val, train)
    for where, spec, model in zip(wheres, teachers.specs, teachers.models, strict=True):
        check_default_normalization(spec, where, model, bundle, data, split)
    with torch.random.fork_rng(devices=[]):  # the throw-away student must not move the run's RNG
        student = Model("student", build_participant(config.student, bundle, "student",
                                                      derive_seed(config.seed, STAGE_SEEDS["student"])),
                        student_norm, bundle.num_classes)
        check_embedding_init(config, student.model, teachers.models)  # refused before anything trains
        assistants = [Model(f"strategy.assistants[{i}]",
                            build_participant(spec, bundle, f"strategy.assistants[{i}]", None),
                            student_norm, bundle.num_classes) for i, spec in enumerate(config.strategy.assistants)]
    models = [Model(where, model, norm, spec.num_classes or bundle.num_classes)
              for where, spec, model, norm in zip(wheres, teachers.specs, teachers.models, teachers.norms, strict=True)]
    preflight(config, bundle, train, models, teachers.aggregator, methods, student, assistants)
    notes = [check_recorded_accuracy(spec, where, model, norm, data, split)
             for where, spec, model, norm in zip(wheres, teachers.specs, teachers.models, teachers.norms, strict=True)]
    if main:
        record_notes(run_dir, [n for n in notes if n])
