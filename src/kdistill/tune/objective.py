"""One tuning trial: the experiment with the trial's values, run by `run_experiment` on held-out data.

The trial's experiment differs from the user's in four ways only: the searched fields, the data
(`kdistill.tune.data:held_out`: train and validation, no test split), a `training.callbacks` entry
that reports each validation evaluation to Optuna (`kdistill.tune.pruning`), and no scratch
baseline. Everything else (teachers, strategy, methods, the loop, checkpoints) is the run's own
machinery, in `trials/trial-NNNN/` of the search's directory. The score is the metric's last
evaluation (the last epoch of the last stage), as the benchmarks report: not the best of epochs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kdistill.errors import BadInput, TrainingDiverged, first_line
from kdistill.tune.pruning import active_trial, callback_spec
from kdistill.tune.space import SearchDimension, with_params
from kdistill.tune.spec import TuneSpec

TRIALS_DIR = "trials"


def trial_dir(run_dir: Path, number: int) -> Path:
    return run_dir / TRIALS_DIR / f"trial-{number:04d}"


def _teacher_entries(raw: dict[str, Any]) -> list[dict[str, Any]]:
    if isinstance(raw.get("teacher"), dict):
        return [raw["teacher"]]
    return [t for t in raw.get("teachers") or [] if isinstance(t, dict)]


def trial_raw(base: dict[str, Any], params: dict[str, Any], number: int) -> dict[str, Any]:
    """The raw experiment of trial `number`: `base` (already on held-out data) with the trial's values."""
    raw = with_params(base, params)
    training = dict(raw.get("training") or {})
    for teacher in _teacher_entries(raw):  # a teacher trained in the trial keeps the run's training, unreported
        if not teacher.get("checkpoint") and not teacher.get("training"):
            teacher["training"] = copy.deepcopy(training)
    training["callbacks"] = [*(training.get("callbacks") or []), callback_spec(number)]
    raw["training"] = training
    raw["baseline"] = False
    return raw


def make_objective(base: dict[str, Any], dimensions: Sequence[SearchDimension], spec: TuneSpec, run_dir: Path,
                   progress: bool = False, announce: Callable[[str], None] | None = None) -> Callable[[Any], float]:
    """The function Optuna calls with each trial; returns the trial's score."""
    from kdistill.config import validate
    from kdistill.experiment import run_experiment

    def objective(trial: Any) -> float:
        params = {d.path: d.suggest(trial) for d in dimensions}
        config = validate(trial_raw(base, params, trial.number))
        where = trial_dir(run_dir, trial.number)
        trial.set_user_attr("run_dir", str(where))
        if announce:
            announce(f"trial {trial.number}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                          for k, v in params.items()))
        with active_trial(trial, spec.metric) as handle:
            try:
                run_experiment(config, where, resume=False, progress=progress)
            except KeyboardInterrupt:
                trial.set_user_attr("interrupted", True)  # re-run with the same values on --resume
                raise
            except TrainingDiverged as error:  # these values diverge: a result of the search, not its end
                import optuna

                raise optuna.TrialPruned(f"the training diverged: {first_line(error)}") from error
        if not handle.values:
            raise BadInput(f"tune.metric: trial {trial.number} made no validation evaluation; tuning needs a "
                           "validation split (data.val_fraction > 0)")
        return handle.values[-1]

    return objective


__all__ = ["TRIALS_DIR", "make_objective", "trial_dir", "trial_raw"]
