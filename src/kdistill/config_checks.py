"""The config checks that need the registries: names of data sets, models, methods, strategies and
aggregators, model and method options, devices, the teacher cache. `config.validate` runs them after
the schema, so every problem is a `field: fix` line before any work starts."""

from __future__ import annotations

import inspect
import re
from typing import Any

from kdistill.config import ExperimentConfig
from kdistill.option_types import option_type_problems
from kdistill.registry import RegistryError


def method_type_problems(name: str, options: dict) -> list[str]:
    """Options of a known method whose values do not fit its constructor's hints (`key: must be ...`)."""
    from kdistill.methods import METHODS

    try:
        cls = METHODS.get(name)
    except RegistryError:
        return []  # reported with the method's name
    if not isinstance(cls, type):
        return []
    return option_type_problems(cls, options)


def semantic_problems(config: ExperimentConfig) -> list[str]:
    from kdistill.data import DATASETS
    from kdistill.methods import build_method
    from kdistill.models import _WRN_NAME, MODELS
    from kdistill.strategies.registry import strategy_problems
    from kdistill.text.run_teacher import run_teacher_problems

    problems = []
    try:
        DATASETS.get(config.data.name)
    except RegistryError as error:
        problems.append(f"data.name: {error}")
    specs = [(f"teachers[{i}]" if config.teachers else "teacher", t) for i, t in enumerate(config.teacher_specs())]
    specs += [("student", config.student)]
    specs += [(f"strategy.assistants[{i}]", a) for i, a in enumerate(config.strategy.assistants)]
    for where, spec in specs:
        if _WRN_NAME.match(spec.name.lower()):
            continue
        try:
            factory = MODELS.get(spec.name)
        except RegistryError as error:
            problems.append(f"{where}.name: {error}")
            continue
        if callable(factory) and not isinstance(factory, type):
            accepted = inspect.signature(factory).parameters
            takes_any = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
            unknown = sorted(set(spec.options) - set(accepted) - {"num_classes", "input_shape"})
            if unknown and not takes_any:
                options = [k for k in accepted if k not in ("num_classes", "input_shape")]
                problems.append(f"{where}.options.{unknown[0]}: not an option of model '{spec.name}'; "
                                f"accepted: {', '.join(options) or 'none'}")
    import torch

    trainings = [("training", config.training)] + [
        ("teacher.training" if not config.teachers else f"teachers[{i}].training", t.training)
        for i, t in enumerate(config.teacher_specs()) if t.training is not None]
    for where, training in trainings:
        if training.device.startswith("cuda") and not torch.cuda.is_available():
            problems.append(f"{where}.device: CUDA is not available on this machine; use auto or cpu")
    cached = [i for i, t in enumerate(config.teacher_specs()) if t.cache_spec() is not None]
    if cached:
        tapping = [s.name for s in config.methods if any(k in s.options() for k in
                                                         ("teacher_layer", "teacher_layers"))]
        wants_features = any(t.cache_spec() is not None and t.cache_spec().features for t in config.teacher_specs())
        if tapping and not wants_features:
            problems.append(f"teacher.cache: the cache holds logits only, but {tapping} read teacher layers; "
                            "add features: true to cache them too, or turn the cache off")
    problems += strategy_problems(config)  # the strategy's name, options and what it needs (teachers, ...)
    problems += run_teacher_problems(config)  # `teacher_checkpoint: run`: a student cut from the run's teacher
    built = []
    for index, spec in enumerate(config.methods):
        typed = method_type_problems(spec.name, spec.options())
        if typed:  # a wrong type would otherwise reach the method's own checks as a Python error
            problems += [f"methods[{index}].{problem}" for problem in typed]
            continue
        try:
            built.append((index, build_method(spec.name, spec.options())))
        except RegistryError as error:
            problems.append(f"methods[{index}].name: {error}")
        except ValueError as error:
            text = str(error)
            # "key: why" names an option; anything else is about the method as a whole
            problems.append(f"methods[{index}].{text}" if re.match(r"^\w+: ", text) else f"methods[{index}]: {text}")
    problems += method_schedule_problems(built, config.training.epochs, len(built) == len(config.methods))
    if config.compress is not None:
        from kdistill.compress.spec import extra_problem

        problems += [p for p in [extra_problem(config.compress)] if p]
    if config.tune is not None:
        from kdistill.tune.spec import metric_problem

        problems += [p for p in [metric_problem(config.tune.metric, bool(config.training.callbacks))] if p]
    aggregate = config.strategy.aggregate
    if aggregate is not None:
        from kdistill.strategies import build_aggregator

        options = aggregate.options()
        weights = options.get("weights")
        if weights is not None and not isinstance(weights, list):
            problems.append(f"strategy.aggregate.weights: must be a list of numbers, one per teacher (got {weights!r})")
        elif weights is not None and len(weights) != len(config.teacher_specs()):
            problems.append(f"strategy.aggregate.weights: {len(weights)} weights for "
                            f"{len(config.teacher_specs())} teachers")
        try:
            build_aggregator(aggregate.name, options)
        except RegistryError as error:
            problems.append(f"strategy.aggregate.name: {error}")
        except ValueError as error:
            problems.append(f"strategy.aggregate: {error}")
    elif len(config.teacher_specs()) > 1:
        problems.append("strategy.aggregate: several teachers need an aggregation (mean, weighted or confidence)")
    return problems


def method_schedule_problems(built: list[tuple[int, Any]], epochs: int, complete: bool) -> list[str]:
    """Methods that would never act: one starting at or after the last epoch (a run shortened with
    `--set training.epochs=...` keeps its methods' `start_epoch`), and a list whose weights are all 0.
    Either trains a "distilled" student that never saw the teacher, and exits 0."""
    problems = [f"methods[{index}].start_epoch: {method.start_epoch} >= training.epochs {epochs}, so {method.name} "
                f"never runs; lower start_epoch or train longer" for index, method in built
                if method.start_epoch >= epochs]
    if complete and built and all(method.weight == 0 for _, method in built):
        problems.append("methods: every method has weight 0, so nothing trains the student; give the methods "
                        "weights > 0")
    return problems
