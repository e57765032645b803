"""The `tune:` section of an experiment file: what to search, how to score, how long.

    tune:
      trials: 20                      # TPE's first random_trials (10) are random draws
      metric: val/acc                 # any metric of the validation evaluation (val/acc, val/loss, ...)
      confirm_top: 3                  # then the 3 best trials again with 2 more seeds: best.yaml = best mean
      space:                          # field paths exactly as --set writes them
        methods[0].temperature: {low: 1, high: 8}
        training.optimizer.lr: {low: 1.0e-3, high: 1.0e-1, log: true}
        methods[0].weight: {choices: [0.5, 0.7, 0.9]}

A leaf module (pydantic only): the experiment schema imports it. Whether a path names a real field
of this experiment is checked when a search starts (`kdistill.tune.space.check_space`), since that
needs the whole raw config.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Dimension(BaseModel):
    """One searched field: a range (`low`, `high`, optional `log`, `step`, `integer`) or `choices`."""

    model_config = ConfigDict(extra="forbid")
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(None, gt=0)
    integer: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Dimension:
        ranged = self.low is not None or self.high is not None
        if self.choices is not None:
            if ranged or self.log or self.step is not None or self.integer:
                raise ValueError("give either choices: [...] or low/high (with log, step, integer), not both")
            if not self.choices:
                raise ValueError("choices is empty; list at least one value")
            if any(isinstance(c, dict | list) for c in self.choices):
                raise ValueError("choices must be plain values (numbers, strings, booleans), not lists or mappings")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (e.g. {low: 1, high: 8}), or choices: [...]")
        if self.low >= self.high:
            raise ValueError(f"low must be below high (got low {self.low:g}, high {self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0 (got {self.low:g}); raise low or drop log")
        if self.log and self.step is not None:
            raise ValueError("step and log cannot be combined; drop one")
        if self.integer and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("an integer range needs whole-number low and high")
        return self


VALIDATION_METRICS = ("val/acc", "val/acc_top5", "val/loss")  # what engine.evaluation.evaluate_model returns


def metric_problem(metric: str, has_callbacks: bool) -> str | None:
    """A `tune.metric` the validation evaluation does not give, found with the config (else after a
    whole trial has trained). A callback may add metrics (`val/f1`): with callbacks, any name goes."""
    if metric in VALIDATION_METRICS or has_callbacks or not metric.startswith("val/"):
        return None
    close = difflib.get_close_matches(metric, VALIDATION_METRICS, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return (f"tune.metric: {metric!r} is not a metric of the validation evaluation; {hint}it gives "
            f"{', '.join(VALIDATION_METRICS)} (acc_top5 with more than 5 classes; a callback in training.callbacks "
            "may add others)")


class TuneSpec(BaseModel):
    """How `kdistill tune` searches; `kdistill run` ignores this section."""

    model_config = ConfigDict(extra="forbid")
    space: dict[str, Dimension] = Field(min_length=1)
    metric: str = "val/acc"
    direction: Literal["maximize", "minimize"] | None = None  # default: minimize a loss, maximize anything else
    trials: int = Field(20, gt=0)
    sampler: Literal["tpe", "random"] = "tpe"
    # TPE draws this many trials at random before it models the space (Optuna's n_startup_trials): a
    # search of no more trials than this is a random search, which tune.md says
    random_trials: int = Field(10, ge=1)
    # after the search, the `confirm_top` best trials are trained again with other seeds, `confirm_seeds`
    # runs each in all, and best.yaml holds the best mean (kdistill.tune.confirm); 0: no confirmation
    confirm_top: int = Field(0, ge=0)
    confirm_seeds: int = Field(3, ge=2)
    pruner: Literal["median", "none"] = "median"
    startup_trials: int = Field(3, ge=0)  # finished trials before any trial may be pruned
    warmup_epochs: int = Field(1, ge=0)  # evaluations a trial always gets before it may be pruned

    @field_validator("metric")
    @classmethod
    def _validation_metric(cls, value: str) -> str:
        if not value.startswith("val/"):
            raise ValueError(f"must be a validation metric such as val/acc or val/loss (got {value!r}); "
                             "tuning never scores on the test set")
        return value

    def resolved_direction(self) -> str:
        if self.direction is not None:
            return self.direction
        return "minimize" if "loss" in self.metric else "maximize"


__all__ = ["Dimension", "TuneSpec"]
