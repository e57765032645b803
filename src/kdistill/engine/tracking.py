"""Watching a metric: the best checkpoint and early stopping.

    training:
      best_metric: val/acc                   # or {metric: val/loss, mode: min}
      early_stopping: {metric: val/loss, patience: 3, mode: min, min_delta: 0}

`mode` defaults to min for a metric whose name says loss and to max otherwise. A metric is any key
of the epoch record (`val/acc`, `val/acc_top5`, `val/loss`, `train/loss`, a method's
`train/<term>`, or one a callback adds in `on_evaluate`).

- Best checkpoint: after every evaluation that has the metric (each epoch end, and every
  `eval_every_steps`), an improvement writes `checkpoints/best.pt`: `{"student": weights, "metric",
  "value", "epoch", "step"}` (loadable as a model checkpoint; the EMA weights when the EMA is on,
  since those are what was evaluated). The best value is in every training checkpoint.
- Early stopping watches the epoch records: after `patience` epochs in a row without an
  improvement of more than `min_delta`, training ends after that epoch (its record says
  `"early_stopped": true`; `student.pt` is written as at a normal end). The counter is in every
  training checkpoint, so a resumed run stops at the same epoch; resuming a stopped run trains no
  further.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


def default_mode(metric: str) -> Literal["min", "max"]:
    return "min" if "loss" in metric.lower() else "max"


class MetricGoal(BaseModel):
    """A metric and which way is better."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    metric: str = Field("val/acc", min_length=1)
    mode: Literal["min", "max"] = "max"  # when not given: min for a loss, else max

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {"metric": data}
        if isinstance(data, dict) and "mode" not in data:
            metric = data.get("metric", cls.model_fields["metric"].default)
            data = {**data, "mode": default_mode(metric) if isinstance(metric, str) else "max"}
        return data

    @classmethod
    def coerce(cls, value: Any) -> Any:
        return value if value is None or isinstance(value, cls) else cls.model_validate(value)


class EarlyStoppingSettings(MetricGoal):
    metric: str = Field("val/loss", min_length=1)
    patience: int = Field(3, ge=1)  # epochs in a row without improvement before stopping
    min_delta: float = Field(0.0, ge=0)  # an improvement must be larger than this


class MetricTracker:
    """The best value so far of a `MetricGoal`."""

    def __init__(self, goal: MetricGoal, min_delta: float = 0.0) -> None:
        self.goal, self.min_delta = goal, min_delta
        self.best: float | None = None

    def improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        if self.goal.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, value: float) -> bool:
        """Record `value`; True when it is a new best."""
        if self.improves(value):
            self.best = float(value)
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"metric": self.goal.metric, "mode": self.goal.mode, "best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state["metric"], state["mode"]) != (self.goal.metric, self.goal.mode):
            raise ValueError(f"the checkpoint tracked {state['metric']} ({state['mode']}), this run "
                             f"{self.goal.metric} ({self.goal.mode}); resume with the settings it was started with")
        self.best = state["best"]


class EarlyStopper:
    def __init__(self, settings: EarlyStoppingSettings) -> None:
        self.settings = settings
        self.tracker = MetricTracker(settings, settings.min_delta)
        self.wait = 0  # epochs in a row without improvement
        self.stopped = False

    def update(self, value: float) -> bool:
        """Record one epoch's value; True when training should stop."""
        self.wait = 0 if self.tracker.update(value) else self.wait + 1
        self.stopped = self.wait >= self.settings.patience
        return self.stopped

    def state_dict(self) -> dict[str, Any]:
        return {"tracker": self.tracker.state_dict(), "wait": self.wait, "stopped": self.stopped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tracker.load_state_dict(state["tracker"])
        self.wait, self.stopped = int(state["wait"]), bool(state["stopped"])


def metric_value(metrics: dict[str, Any], metric: str, setting: str) -> float:
    if metric not in metrics:
        available = sorted(k for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool))
        raise ValueError(f"{setting}: '{metric}' is not among this run's metrics {available}")
    return float(metrics[metric])


__all__ = ["EarlyStopper", "EarlyStoppingSettings", "MetricGoal", "MetricTracker", "default_mode", "metric_value"]
