"""`standard`: the teacher (or several teachers, through an aggregator) teaches one student, once."""

from __future__ import annotations

from kdistill.results import DISTILLED, ModelResult
from kdistill.run.context import StrategyContext
from kdistill.run.teachers import teacher_cache_settings
from kdistill.strategies.registry import strategy


@strategy("standard", teacher_cache=True)
def run_standard(ctx: StrategyContext) -> list[ModelResult]:
    student = ctx.build_student()
    ctx.fit_stage("student-distilled", student, cache=teacher_cache_settings(ctx.config, ctx.teachers, ctx.run_dir))
    return [ctx.profile(DISTILLED, student)] if ctx.is_main else []
