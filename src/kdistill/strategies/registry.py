"""The STRATEGIES registry: how an experiment trains its students, by name or `package.module:attribute`.

A strategy is a callable `run(ctx) -> rows` taking one `kdistill.run.StrategyContext` (the config,
the data, the run directory, the prepared teachers, the methods, and helpers that build, train
or load and profile a stage) and returning the result rows it adds to the table. A plain
function is a strategy with the defaults below; `@strategy(...)` declares what it needs of the
config, which is checked before any work starts:

    from kdistill.strategies import strategy

    @strategy(options=("rounds",))              # `strategy: {name: mypkg.mymod:two_rounds, rounds: 2}`
    def two_rounds(ctx):
        ...

The built-ins (`standard`, `born_again`, `teacher_assistant`, `mutual`), one per file in
`kdistill.strategies.runners`, register themselves when the registry is first read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kdistill.registry import Registry, RegistryError

if TYPE_CHECKING:
    from kdistill.config import ExperimentConfig

STRATEGIES: Registry = Registry("strategy", builtins=("kdistill.strategies.runners",))

# `strategy:` keys of the schema itself (each read by the built-in strategies named beside it)
SCHEMA_KEYS = ("name", "aggregate", "generations", "peers", "mutual_temperature", "assistants")


@dataclass(frozen=True)
class Strategy:
    """A strategy's runner and what it needs of the config (checked at config time)."""

    run: Callable[[Any], list]
    name: str = ""
    needs_teacher: bool = True  # False: a run without teacher(s) is valid (mutual learning)
    teacher_cache: bool = False  # the teacher-output cache (one teacher's outputs) serves this strategy
    options: tuple[str, ...] = ()  # extra `strategy:` keys it reads, as `ctx.options`
    check: Callable[[ExperimentConfig], list[str]] | None = None  # more `field: fix` problems

    def __call__(self, ctx: Any) -> list:
        return self.run(ctx)


def strategy(*names: str, needs_teacher: bool = True, teacher_cache: bool = False, options: tuple[str, ...] = (),
             check: Callable[[ExperimentConfig], list[str]] | None = None) -> Callable[[Callable], Strategy]:
    """Declare a strategy; with `names`, also register it under them (the built-ins do)."""

    def wrap(run: Callable) -> Strategy:
        declared = Strategy(run, names[0] if names else getattr(run, "__name__", "strategy"), needs_teacher,
                            teacher_cache, tuple(options), check)
        if names:
            STRATEGIES.register(*names)(declared)
        return declared

    return wrap


def resolve_strategy(name: str) -> Strategy:
    """The strategy a config names; RegistryError for an unknown name or something that is not one."""
    found = STRATEGIES.get(name)
    if isinstance(found, Strategy):
        return found
    if isinstance(found, type) or not callable(found):
        raise RegistryError(f"'{name}' is a {type(found).__name__}, not a strategy: give a function taking one "
                            "StrategyContext (optionally declared with @kdistill.strategies.strategy)")
    return Strategy(found, name)


def strategy_problems(config: ExperimentConfig) -> list[str]:
    """What the named strategy needs of the config, as `field: fix` lines (empty when it can run)."""
    spec = config.strategy
    try:
        chosen = resolve_strategy(spec.name)
    except RegistryError as error:
        return [f"strategy.name: {error}"]
    problems = []
    for key in sorted(set(spec.options()) - set(chosen.options)):
        accepted = ", ".join(chosen.options) or "none besides the schema's"
        problems.append(f"strategy.{key}: not an option of strategy '{spec.name}'; accepted: {accepted}")
    teachers = config.teacher_specs()
    if not teachers and chosen.needs_teacher:
        problems.append(f"teacher: required (or teachers: [...]); strategy '{spec.name}' needs one (only a strategy "
                        "without teachers, such as mutual, runs without)")
    cached = [i for i, t in enumerate(teachers) if t.cache_spec() is not None]
    where = f"teachers[{cached[0]}].cache" if cached and config.teachers else "teacher.cache"
    if cached and not chosen.teacher_cache:
        problems.append(f"{where}: strategy '{spec.name}' does not use the teacher cache (the standard strategy "
                        "does); turn it off")
    elif cached and len(teachers) > 1:
        problems += cached_mixture_problems(config, cached)
    if chosen.check is not None:
        problems += chosen.check(config)
    return problems


def cached_mixture_problems(config: ExperimentConfig, cached: list[int]) -> list[str]:
    """Several teachers with the cache: what caching their mixture needs of the config. The cache
    holds one model's outputs, so the run caches the fixed mixture the aggregator gives
    (`TeacherEnsemble`): the same cache on every teacher, and a mixture that depends on the image
    alone (mean or weighted; confidence weighs each sample by its label)."""
    teachers = config.teacher_specs()
    problems = []
    settings = {teachers[i].cache_spec().model_dump_json() for i in cached}
    if len(cached) < len(teachers) or len(settings) > 1:
        differ = ", with different settings" if len(settings) > 1 else ""
        problems.append(f"teachers[{cached[0]}].cache: with several teachers the cache holds their mixture, so it "
                        f"is on for all of them or none; give every teacher the same cache settings (now on for "
                        f"teachers {cached} of {len(teachers)}{differ})")
    aggregate = config.strategy.aggregate
    if aggregate is None or aggregate.name not in CACHEABLE_AGGREGATES:
        given = "none" if aggregate is None else f"'{aggregate.name}'"
        problems.append(f"strategy.aggregate: caching several teachers caches their mixture, which must be fixed per "
                        f"image: give aggregate {{name: mean}} or {{name: weighted, weights: [...]}} (given: {given}); "
                        "or turn the teachers' cache off")
    tapping = [m.name for m in config.methods if any(k in m.options() for k in ("teacher_layer", "teacher_layers"))]
    if tapping:
        problems.append(f"methods: {', '.join(tapping)} {MIXTURE_HOLDS_NO_LAYERS}")
    return problems


MIXTURE_HOLDS_NO_LAYERS = ("read teachers' layers, which a cached mixture of several teachers does not hold; cache one "
                           "teacher, or turn the cache off")
CACHEABLE_AGGREGATES = ("mean", "average", "weighted")  # fixed per image; kdistill.strategies.multi_teacher


__all__ = ["SCHEMA_KEYS", "STRATEGIES", "Strategy", "resolve_strategy", "strategy", "strategy_problems"]
