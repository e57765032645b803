"""The leading trials of a search run again with other seeds, so the choice rests on means, not luck.

A trial's score is one training run: its seed's luck is in it, and on a flat landscape the search's
"best" is often the luckiest draw (measured on Hinton's MNIST: the winner by one validation error was
two test errors worse over 7 seeds). With `tune.confirm_top: K` (and `confirm_seeds: S`), after
the search the K best complete trials are trained S - 1 more times with seeds `seed + 1 ...`, on the
same validation split (the split does not move with the seed: `kdistill.tune.data`), and the trial
with the best mean score is the one `best.yaml` holds. Each run lives in
`trials/trial-NNNN/seed-S/`, its score in `confirm.json`; a search resumed after an interruption
reruns only the runs that have no score yet.
"""

from __future__ import annotations

import json
import shutil
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdistill.errors import BadInput
from kdistill.tune.objective import trial_dir, trial_raw
from kdistill.tune.pruning import active_trial
from kdistill.tune.spec import TuneSpec

SCORE_FILE = "confirm.json"


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
    return trial_dir(run_dir, number) / f"seed-{seed}"


def score_with_seed(base: dict[str, Any], trial: Any, seed: int, spec: TuneSpec, run_dir: Path,
                    progress: bool = False) -> float:
    """Trial `trial`'s experiment trained again with `seed` (or its kept score)."""
    from kdistill.config import validate
    from kdistill.experiment import run_experiment

    where = confirmation_dir(run_dir, trial.number, seed)
    kept = where / SCORE_FILE
    if kept.is_file():
        return float(json.loads(kept.read_text())["value"])
    if where.exists():  # a run cut short: start it again
        shutil.rmtree(where)
    raw = trial_raw(base, trial.params, trial.number)
    raw["seed"] = seed
    with active_trial(_Unpruned(trial.number), spec.metric) as handle:
        run_experiment(validate(raw), where, resume=False, progress=progress)
    if not handle.values:
        raise BadInput(f"tune.confirm_top: trial {trial.number} with seed {seed} made no validation evaluation")
    kept.write_text(json.dumps({"trial": trial.number, "seed": seed, "metric": spec.metric,
                                "value": handle.values[-1]}))
    return handle.values[-1]


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
        rows.append({"number": trial.number, "params": trial.params, "seeds": seeds, "values": values,
                     "mean": statistics.mean(values),
                     "std": statistics.stdev(values) if len(values) > 1 else 0.0})
    return sorted(rows, key=lambda r: r["mean"], reverse=spec.resolved_direction() == "maximize")


def confirmation_lines(rows: list[dict[str, Any]], metric: str) -> list[str]:
    """tune.md's section: the leading trials' scores per seed and their means."""
    if not rows:
        return []
    lines = [f"## The leading trials over {len(rows[0]['seeds'])} seeds", "",
             f"The best mean is trial {rows[0]['number']}, which `best.yaml` holds (a single-seed score has the "
             "seed's luck in it; the mean has less).", "",
             f"| trial | {metric} per seed ({', '.join(map(str, rows[0]['seeds']))}) | mean | std |",
             "|---|---|---|---|"]
    for row in rows:
        values = ", ".join(f"{v:.4f}" for v in row["values"])
        lines.append(f"| {row['number']} | {values} | {row['mean']:.4f} | {row['std']:.4f} |")
    return lines + [""]


__all__ = ["SCORE_FILE", "confirm", "confirmation_dir", "confirmation_lines", "leading_trials", "score_with_seed"]
