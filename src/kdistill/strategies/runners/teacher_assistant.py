"""`teacher_assistant`: teacher -> assistant(s) -> student, each distilled from the one before
(`strategy.assistants`, largest first)."""

from __future__ import annotations

from kdistill.config import ExperimentConfig
from kdistill.results import DISTILLED, ModelResult
from kdistill.run.context import StrategyContext
from kdistill.strategies.assistant import teacher_assistant_chain
from kdistill.strategies.registry import strategy
from kdistill.strategies.runners.born_again import chain_methods


def needs_assistants(config: ExperimentConfig) -> list[str]:
    if config.strategy.assistants:
        return []
    return ["strategy.assistants: teacher_assistant needs at least one assistant model"]


@strategy("teacher_assistant", check=needs_assistants)
def run_teacher_assistant(ctx: StrategyContext) -> list[ModelResult]:
    specs = ctx.config.strategy.assistants
    assistants = [ctx.model_factory(spec, f"strategy.assistants[{i}]") for i, spec in enumerate(specs)]
    result = teacher_assistant_chain(ctx.teachers.teacher, assistants, ctx.model_factory(), ctx.train, ctx.val,
                                     ctx.run_dir / "teacher-assistant", epochs=ctx.config.training.epochs,
                                     teacher_normalization=ctx.teachers.normalization,
                                     teacher_aggregator=ctx.teachers.aggregator, methods_factory=chain_methods(ctx),
                                     distiller_kwargs=ctx.chain_kwargs(), resume=ctx.resume,
                                     callback=ctx.stage_callbacks)
    if not ctx.is_main:
        return []
    rows = [ctx.profile(f"assistant {k} ({spec.name})", model)
            for k, (spec, model) in enumerate(zip(specs, result.assistants, strict=True), start=1)]
    rows.append(ctx.profile(DISTILLED, result.student))
    return rows
