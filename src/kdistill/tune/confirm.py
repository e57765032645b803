"""The leading trials of a search run again with other seeds, so the choice rests on means, not luck.

A trial's score is one training run: its seed's luck is in it, and on a flat landscape the search's
"best" is often the luckiest draw (measured on Hinton's MNIST: the winner by one validation error was
two test errors worse over 7 seeds). With `tune.confirm_top: K` (and `confirm_seeds: S`), after
the search the K best complete trials are trained S - 1 more times with seeds `seed + 1 ...`, on the
same validation split (the split does not move with the seed: `kdistill.tune.data`), and the trial
with the best mean score is the one `best.yaml` holds. Each run lives in
`confirm/trial-NNNN-seed-S/` (beside the trials, so a trial's own folder holds one run), its score
in `confirm.json`; a search resumed after an interruption reruns only the runs that have no score
yet. A run that diverges (NaN) scores as the worst, and so does its trial's mean.

The teacher follows the trials' rule: one trained once for the search (no teacher field searched)
is reused, so the means cover the student's seed only; a teacher trained inside each trial is
trained again with each seed, and its luck is in the mean.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdistill.engine.checkpoint import atomic_write_text
from kdistill.errors import BadInput, TrainingDiverged
from kdistill.tune.objective import trial_raw
from kdistill.tune.pruning import active_trial
from kdistill.tune.spec import TuneSpec

SCORE_FILE = "confirm.json"
CONFIRM_DIR = "confirm"


@dataclass
class _Unpruned:
    """Stands in for an Optuna trial while a confirmation run reports its scores: nothing is pruned."""

    number: int

    def report(self, value: float, step: int) -> None:
        pass

    def should_prune(self) -> bool:
        return False


def leading_trials(study: Any, spec: TuneSpec) -> list[Any]:
    """The `confirm_top` best complete trials, best first."""
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    maximize = spec.resolved_direction() == "maximize"
    return sorted(complete, key=lambda t: t.value, reverse=maximize)[: spec.confirm_top]


def confirmation_dir(run_dir: Path, number: int, seed: int) -> Path:
    return run_dir / CONFIRM_DIR / f"trial-{number:04d}-seed-{seed}"


def score_with_seed(base: dict[str, Any], trial: Any, seed: int, spec: TuneSpec, run_dir: Path,
                    progress: bool = False) -> float | None:
    """Trial `trial`'s experiment trained again with `seed` (or its kept score); None: it diverged."""
    import optuna

    from kdistill.config import validate
    from kdistill.experiment import run_experiment

    where = confirmation_dir(run_dir, trial.number, seed)
    kept = where / SCORE_FILE
    if kept.is_file():
        return json.loads(kept.read_text())["value"]
    if where.exists():  # a run cut short: start it again
        shutil.rmtree(where)
    raw = trial_raw(base, trial.params, trial.number)
    raw["seed"] = seed
    with active_trial(_Unpruned(trial.number), spec.metric) as handle:
        try:
            run_experiment(validate(raw), where, resume=False, progress=progress)
        except (optuna.TrialPruned, TrainingDiverged):  # the loss or the metric went NaN with this seed
            handle.values.append(math.nan)
    if not handle.values:
        raise BadInput(f"tune.confirm_top: trial {trial.number} with seed {seed} made no validation evaluation")
    value = None if math.isnan(handle.values[-1]) else handle.values[-1]
    atomic_write_text(kept, json.dumps({"trial": trial.number, "seed": seed, "metric": spec.metric, "value": value,
                                        "diverged": value is None}))
    return value


def confirm(study: Any, base: dict[str, Any], spec: TuneSpec, run_dir: Path, progress: bool = False,
            announce: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Each leading trial's scores over `confirm_seeds` seeds (its own first), best mean first."""
    first_seed = int(base.get("seed", 0) or 0)
    rows = []
    for trial in leading_trials(study, spec):
        seeds, values = [first_seed], [float(trial.value)]
        for seed in range(first_seed + 1, first_seed + spec.confirm_seeds):
            if announce and not (confirmation_dir(run_dir, trial.number, seed) / SCORE_FILE).is_file():
                announce(f"confirming trial {trial.number} with seed {seed}")
            seeds.append(seed)
            values.append(score_with_seed(base, trial, seed, spec, run_dir, progress))
        diverged = any(v is None for v in values)
        rows.append({"number": trial.number, "params": trial.params, "seeds": seeds, "values": values,
                     "mean": None if diverged else statistics.mean(values),
                     "std": None if diverged else statistics.stdev(values)})
    sign = -1.0 if spec.resolved_direction() == "maximize" else 1.0
    return sorted(rows, key=lambda r: (r["mean"] is None, sign * (r["mean"] or 0.0)))  # a diverged mean last


def confirmation_lines(rows: list[dict[str, Any]], metric: str) -> list[str]:
    """tune.md's section: the leading trials' scores per seed and their means."""
    if not rows:
        return []
    chosen = (f"The best mean is trial {rows[0]['number']}, which `best.yaml` holds (a single-seed score has the "
              "seed's luck in it; the mean has less)." if rows[0]["mean"] is not None else
              "Every leading trial diverged with some seed: `best.yaml` keeps the best single-seed score.")
    lines = [f"## The leading trials over {len(rows[0]['seeds'])} seeds", "", chosen, "",
             f"| trial | {metric} per seed ({', '.join(map(str, rows[0]['seeds']))}) | mean | std |",
             "|---|---|---|---|"]
    for row in rows:
        values = ", ".join("diverged" if v is None else f"{v:.4f}" for v in row["values"])
        mean, std = ("-", "-") if row["mean"] is None else (f"{row['mean']:.4f}", f"{row['std']:.4f}")
        lines.append(f"| {row['number']} | {values} | {mean} | {std} |")
    return lines + [""]


__all__ = ["CONFIRM_DIR", "SCORE_FILE", "confirm", "confirmation_dir", "confirmation_lines", "leading_trials",
           "score_with_seed"]
