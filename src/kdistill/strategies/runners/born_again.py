"""`born_again`: generation k+1 learns from generation k (the first from the teacher, if any);
the table shows every generation and their ensemble (`strategy.generations`)."""

from __future__ import annotations

from kdistill.methods import HardLabel
from kdistill.results import DISTILLED, GENERATION, ModelResult
from kdistill.run.context import StrategyContext
from kdistill.strategies.born_again import born_again
from kdistill.strategies.registry import strategy


def chain_methods(ctx: StrategyContext):
    """Every distillation stage uses the config's methods (fresh copies); a stage without teacher, labels."""

    def factory(_index: int, has_teacher: bool) -> list:
        return ctx.fresh_methods() if has_teacher else [HardLabel()]

    return factory


@strategy("born_again")
def run_born_again(ctx: StrategyContext) -> list[ModelResult]:
    teachers = ctx.teachers if ctx.teachers.models else None
    # unseeded models: each generation starts from its own seeded initialisation (set by the chain)
    result = born_again(ctx.model_factory(), ctx.train, ctx.val, ctx.config.strategy.generations,
                        ctx.run_dir / "born-again", epochs=ctx.config.training.epochs,
                        initial_teacher=teachers.teacher if teachers else None,
                        teacher_normalization=teachers.normalization if teachers else None,
                        teacher_aggregator=ctx.teachers.aggregator, methods_factory=chain_methods(ctx),
                        distiller_kwargs=ctx.chain_kwargs(), resume=ctx.resume,
                        callback=ctx.stage_callbacks)
    if not ctx.is_main:
        return []
    generations = result.generations
    rows = [ctx.profile(DISTILLED if k == len(generations) else f"{GENERATION}{k}", model)
            for k, model in enumerate(generations, start=1)]
    accuracy = result.evaluate_ensemble(ctx.bundle.test, ctx.student_norm)["acc"]
    rows.append(ModelResult(f"ensemble of {len(generations)} generations", accuracy,
                            sum(r.parameters for r in rows), sum(r.size_bytes for r in rows),
                            sum(r.latency_ms for r in rows)))
    return rows
