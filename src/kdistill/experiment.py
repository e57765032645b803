"""Running one experiment from its config: teacher(s), the optional scratch baseline, the strategy's students.

The run directory holds one sub-directory per stage (`teacher/` or `teacher-k/`, `student-scratch/`
with `baseline: true`, then the strategy's: `student-distilled/`, `born-again/generation-k/`,
`teacher-assistant/assistant-k/` + `student/`, `mutual/`, or a user strategy's own), each with its
`stage.json` (who taught it, epochs, methods, seed), `metrics.jsonl`, `checkpoints/last.pt` and
`student.pt`. A stage whose `student.pt` exists is done; on `--resume` done stages are loaded, the
interrupted one continues from its checkpoint, later ones start fresh (`strategies.stages.fit_or_load`).

The pieces live in `kdistill.run` (directory, data, models, teachers, baseline, profiling, the
`StrategyContext`); the strategies in the STRATEGIES registry (`kdistill.strategies.registry`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from kdistill.collectives import current_world
from kdistill.config import ConfigError, ExperimentConfig, dump_config
from kdistill.engine.checkpoint import atomic_write_text
from kdistill.engine.seed import derive_seed
from kdistill.report import write_report
from kdistill.results import DISTILLED, SCRATCH, ExperimentResult, ModelResult, write_results
from kdistill.run.baseline import scratch_baseline
from kdistill.run.build import STAGE_SEEDS, build_methods, build_participant, distiller_kwargs, normalization_for
from kdistill.run.context import StrategyContext
from kdistill.run.data import load_data, write_label_noise
from kdistill.run.diagnostics import ProfiledModels, diagnostics_or_warning, write_diagnostics
from kdistill.run.directory import new_run_dir
from kdistill.run.normalization import record_notes
from kdistill.run.profiling import profile_row
from kdistill.run.teachers import Teachers, prepare_teachers, teacher_cache_settings
from kdistill.strategies.registry import resolve_strategy
from kdistill.strategies.stages import StageExists, StageMismatch

_cache_settings = teacher_cache_settings  # the former private name


def teacher_rows(ctx: StrategyContext) -> list[ModelResult]:
    rows = []
    teachers, bundle = ctx.teachers, ctx.bundle
    for index, (model, norm) in enumerate(zip(teachers.models, teachers.norms, strict=True)):
        role = "teacher" if len(teachers.models) == 1 else f"teacher {index + 1} ({teachers.specs[index].name})"
        other_task = teachers.specs[index].num_classes not in (None, bundle.num_classes)
        # a teacher of another task has no accuracy on this one
        rows.append(profile_row(role, model, bundle, norm, ctx.config, math.nan if other_task else None))
    return rows


def truncation_notes(bundle: object) -> list[str]:
    """Text cut to `max_length` changes what a model reads: said in the report, per split."""
    cut = {split: count for split, count in (getattr(bundle, "truncated", None) or {}).items() if count}
    if not cut:
        return []
    counts = ", ".join(f"{count:,} {split}" for split, count in cut.items())
    return [f"data: {counts} texts are longer than max_length = {bundle.max_length} tokens and were cut; "
            "raise data.options.max_length to keep them whole"]


def run_experiment(config: ExperimentConfig, run_dir: Path, resume: bool = False,
                   progress: bool = True) -> ExperimentResult:
    run_dir = Path(run_dir)
    chosen = resolve_strategy(config.strategy.name)
    bundle, train, val = load_data(config)
    main_process = current_world().is_main
    if main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            atomic_write_text(run_dir / "config.yaml", dump_config(config))
        write_label_noise(run_dir, train)
        classes = getattr(bundle.train, "classes", None)
        if classes:  # class id -> name, as the training data named them (text label names included)
            atomic_write_text(run_dir / "labels.json", json.dumps(list(classes)))
        record_notes(run_dir, truncation_notes(bundle), log=False)  # the tokenizer already logged them
    methods = build_methods(config)
    try:
        teachers = prepare_teachers(config, bundle, train, val, run_dir, resume, progress)
        student_seed = derive_seed(config.seed, STAGE_SEEDS["student"])
        ctx = StrategyContext(config, bundle, train, val, run_dir, resume, progress, methods, teachers,
                              normalization_for(config.student, bundle), student_seed)
        profiled = ProfiledModels(ctx)  # the model of every row, for the diagnostics after training
        scratch = scratch_baseline(ctx) if config.baseline else None
        new_rows = chosen(ctx)
        if config.compress is not None and main_process:  # the distilled student, compressed (kdistill.compress)
            from kdistill.compress.experiment_hook import compress_after_strategy

            new_rows = [*new_rows, *compress_after_strategy(ctx, profiled.models.get(DISTILLED), config.compress)]
        # the teachers and the scratch baseline are measured once every stage has trained: a run
        # interrupted and resumed goes on training first (measuring them on the test set took minutes
        # before each resumed stage could continue)
        rows = teacher_rows(ctx) if main_process else []
        if scratch is not None and main_process:
            rows.append(ctx.profile(SCRATCH, scratch))
    except (StageExists, StageMismatch) as error:
        raise ConfigError([str(error)]) from error
    if main_process:
        rows.extend(new_rows)
    result = ExperimentResult(run_dir, rows)
    if main_process:
        write_results(result)
        write_diagnostics(run_dir, diagnostics_or_warning(ctx, profiled))
        write_report(run_dir, config, result)
    return result


__all__ = ["DISTILLED", "SCRATCH", "ExperimentResult", "ModelResult", "StrategyContext", "Teachers",
           "build_participant", "distiller_kwargs", "load_data", "new_run_dir", "profile_row", "run_experiment",
           "write_results"]
