"""Reporting a trial's validation scores to Optuna as it trains, and stopping a poor trial early.

A trial's experiment lists `{name: kdistill.tune.pruning:ReportToTrial, trial: N}` among its
`training.callbacks`, so the trial's own `Distiller` loop (not a second loop) reports every
evaluation. The Optuna trial itself cannot live in a config file, so the search registers it here
(`active_trial`) while the trial runs; the callback finds it by number. Rerunning a finished trial's
`config.yaml` with `kdistill run` finds no active trial, and the callback does nothing.

Steps count evaluations across the whole trial (every stage of a chain strategy reports in turn),
so the pruner compares trials at the same point of their training.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kdistill.engine.callbacks import Callback
from kdistill.errors import BadInput


@dataclass
class TrialHandle:
    """One running trial: where its scores go, and the scores so far."""

    trial: Any  # optuna.Trial
    metric: str
    values: list[float] = field(default_factory=list)

    def report(self, value: float) -> None:
        import optuna

        step = len(self.values)
        self.values.append(value)
        self.trial.report(value, step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"{self.metric} {value:.4g} after {step + 1} evaluations: below the median "
                                     "of earlier trials at that point")


_ACTIVE: dict[int, TrialHandle] = {}


@contextlib.contextmanager
def active_trial(trial: Any, metric: str) -> Iterator[TrialHandle]:
    """Register `trial` for its callbacks while the block runs."""
    handle = TrialHandle(trial, metric)
    _ACTIVE[trial.number] = handle
    try:
        yield handle
    finally:
        _ACTIVE.pop(trial.number, None)


class ReportToTrial(Callback):
    """Report each validation evaluation to the running Optuna trial `trial`; the pruner may stop it."""

    def __init__(self, trial: int) -> None:
        self.trial = trial

    def on_evaluate(self, distiller: Any, metrics: dict[str, Any]) -> None:
        handle = _ACTIVE.get(self.trial)
        if handle is None or not distiller.world.is_main:
            return
        value = metrics.get(handle.metric)
        if value is None:
            known = ", ".join(sorted(k for k in metrics if k.startswith("val/"))) or "none"
            raise BadInput(f"tune.metric: the evaluation has no {handle.metric} (it has: {known})")
        value = float(value)
        if math.isnan(value):
            import optuna

            raise optuna.TrialPruned(f"{handle.metric} is NaN (the training diverged)")
        handle.report(value)


def callback_spec(trial_number: int) -> dict[str, Any]:
    """The `training.callbacks` entry of a trial's experiment."""
    return {"name": "kdistill.tune.pruning:ReportToTrial", "trial": trial_number}


__all__ = ["ReportToTrial", "TrialHandle", "active_trial", "callback_spec"]
