"""`standard`: the teacher (or several teachers, through an aggregator) teaches one student, once;
several teachers with the cache teach through their cached mixture (`Teachers.as_cached_mixture`)."""

from __future__ import annotations

from kdistill.results import DISTILLED, ModelResult
from kdistill.run.context import StrategyContext
from kdistill.run.teachers import teacher_cache_settings
from kdistill.strategies.registry import strategy


@strategy("standard", teacher_cache=True)
def run_standard(ctx: StrategyContext) -> list[ModelResult]:
    student = ctx.build_student()
    cache = teacher_cache_settings(ctx.config, ctx.teachers, ctx.run_dir)
    teachers = ctx.teachers.as_cached_mixture() if cache is not None else ctx.teachers
    ctx.fit_stage("student-distilled", student, teacher=teachers, cache=cache)
    return [ctx.profile(DISTILLED, student)] if ctx.is_main else []
