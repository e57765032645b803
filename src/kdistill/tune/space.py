"""The search space: each `tune.space` entry checked against the experiment it changes, then sampled.

A path is written as `--set` writes it (`methods[0].temperature`, `training.optimizer.lr`) and is set
through the same code (`config_overrides.apply_override`), so what `--set` accepts, `tune` accepts.
A path is checked by setting each end of its range (or each choice) in a copy of the experiment and
validating the whole config: a field that does not exist, or a bound the field refuses (a
temperature of 0), is one `tune.space[...]` line naming the fix before any trial runs.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from kdistill.config_error import ConfigError
from kdistill.config_overrides import apply_override, parse_key
from kdistill.tune.spec import Dimension, TuneSpec


@dataclass(frozen=True)
class SearchDimension:
    """One searched field: its `--set` path and the range or choices Optuna draws it from."""

    path: str
    spec: Dimension

    def suggest(self, trial: Any) -> Any:
        """Draw this field's value for `trial` (an `optuna.Trial`); the parameter is named by the path."""
        spec = self.spec
        if spec.choices is not None:
            return trial.suggest_categorical(self.path, spec.choices)
        if spec.integer:
            step = int(spec.step) if spec.step is not None else 1
            return trial.suggest_int(self.path, int(spec.low), int(spec.high), step=step, log=spec.log)
        return trial.suggest_float(self.path, spec.low, spec.high, step=spec.step, log=spec.log)

    def extremes(self) -> list[Any]:
        """The values that bound what a trial may set: both ends of a range, or every choice."""
        if self.spec.choices is not None:
            return list(self.spec.choices)
        if self.spec.integer:
            return [int(self.spec.low), int(self.spec.high)]
        return [self.spec.low, self.spec.high]


def _label(path: str) -> str:
    return f"tune.space[{path!r}]"


def set_value(raw: dict[str, Any], path: str, value: Any) -> None:
    """Set one field of a raw experiment mapping exactly as `--set path=value` would."""
    apply_override(raw, f"{path}={json.dumps(value)}")


def with_params(raw: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A copy of `raw` with every searched field set to its value in `params`."""
    changed = copy.deepcopy(raw)
    for path, value in params.items():
        set_value(changed, path, value)
    return changed


def _one_line(error: ConfigError, path: str) -> str:
    problem = (error.problems[0] if error.problems else str(error)).removeprefix("--set ")
    field, _, message = problem.partition(": ")
    if message.startswith("unknown key") and path.startswith(field):
        return f"'{field}' is not a field of this experiment; check its spelling (paths are written as for --set)"
    return problem


def check_space(raw: dict[str, Any], spec: TuneSpec) -> list[SearchDimension]:
    """The space's dimensions, each checked against `raw` (the experiment as given, overrides applied).

    Raises `ConfigError` with one line per bad entry: a path that is not a field of this experiment,
    or a range end / choice that the field refuses."""
    from kdistill.config import validate

    dimensions, problems = [], []
    for path, dimension in spec.space.items():
        try:
            parse_key(path, path)
        except ConfigError as error:
            problems.append(f"{_label(path)}: {_one_line(error, path)}")
            continue
        if path == "data" or path.startswith(("data.", "data[")):
            # a trial's data settings are rewritten into the sealed validation set-up (tune.data), and every
            # trial must be scored on the same validation split, so data fields are not searchable
            problems.append(f"{_label(path)}: data fields cannot be searched (every trial is scored on the same "
                            "validation split); search model, method, training or strategy fields")
            continue
        for value in SearchDimension(path, dimension).extremes():
            trial_raw = copy.deepcopy(raw)
            try:
                set_value(trial_raw, path, value)
                validate(trial_raw)
            except ConfigError as error:
                problems.append(f"{_label(path)}: with {path}={value!r}: {_one_line(error, path)}")
                break
        else:
            dimensions.append(SearchDimension(path, dimension))
    if problems:
        raise ConfigError(problems)
    return dimensions


__all__ = ["SearchDimension", "check_space", "set_value", "with_params"]
