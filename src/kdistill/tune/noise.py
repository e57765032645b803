"""Which trials a search cannot tell from its best: the validation split's own noise.

A search ranks trials by one score each, and each score counts right answers on a finite
validation split: a search over a flat landscape picks its "best" from noise (measured: Hinton's
MNIST students, 12 trials within 14 errors of 5,999, whose winner by one error was worse on the
test set over 7 seeds). Two yardsticks, the better one when it can be had:

- paired (top-1 accuracy, every complete trial's per-sample outcomes in its `diagnostics.json`):
  McNemar's exact test of each trial against the best on the samples where the two disagree
  (`kdistill.evaluate.paired`), Holm-corrected for the number of trials compared; trials not
  rejected at 0.05 are not shown to differ;
- binomial (otherwise: top-5 accuracy, outcomes missing): two standard errors of a difference of
  two independent binomial accuracies at the split's size. Approximate, and says so: it overstates
  the noise for models that err on the same samples.

Neither includes the training seed's spread (another seed of the same setting disagrees with the
first on some samples too), and neither corrects for the best having been picked by the same
scores, which leans towards finding differences: "not shown to differ" is the safe reading, a
difference may be overstated. Trials inside the bound are reported as not shown to differ from
the best, not as equal.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from kdistill.evaluate.paired import ALPHA, compare_outcomes, holm_differs


def accuracy_standard_error(accuracy: float, samples: int) -> float:
    """The binomial standard error of an accuracy measured on `samples` independent samples."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1 (got {samples})")
    accuracy = min(max(accuracy, 0.0), 1.0)
    return math.sqrt(accuracy * (1 - accuracy) / samples)


def tied_with_best(values: Sequence[float | None], samples: int, maximize: bool = True) -> list[int]:
    """Indices of the scores within two standard errors of a difference of two independent accuracies
    from the best one (the best included): the trials the search cannot tell from its winner.

    The standard error is taken at the best accuracy, so one cut-off serves every trial (the one
    tune.md prints)."""
    scored = [(i, v) for i, v in enumerate(values) if v is not None]
    if not scored:
        return []
    best = (max if maximize else min)(v for _, v in scored)
    cutoff = difference_cutoff(best, samples)
    return [index for index, value in scored if abs(best - value) <= cutoff]


def difference_cutoff(accuracy: float, samples: int) -> float:
    """Two standard errors of a difference of two independent accuracies near `accuracy`."""
    return 2 * math.sqrt(2) * accuracy_standard_error(accuracy, samples)


def is_accuracy(metric: str) -> bool:
    """Whether `metric` is a share of right answers on the split (val/acc, val/acc_top5), to which
    the binomial model applies; a loss, a perplexity or a balanced accuracy has no such bound."""
    return re.fullmatch(r"acc(_top\d+)?", metric.split("/", 1)[-1]) is not None


def trial_outcomes(trials: list[dict[str, Any]], samples: int, metric: str, search_dir: Path | None = None
                   ) -> dict[int, torch.Tensor] | None:
    """Each trial's distilled student's right / wrong per validation sample, from its run's
    `diagnostics.json` (under `search_dir`, else where the trial recorded its run); None unless every
    trial has them and they give the trial's own score (top-1 accuracy over the same `samples`), so
    that a paired test compares what the search ranked."""
    from kdistill.run.diagnostics import distilled_outcomes, read_diagnostics
    from kdistill.tune.objective import trial_dir

    if metric.split("/", 1)[-1] != "acc":
        return None
    found, digests = {}, set()
    for trial in trials:
        where = trial_dir(Path(search_dir), trial["number"]) if search_dir else trial.get("run_dir")
        kept = distilled_outcomes(read_diagnostics(Path(where)) if where else None)
        if kept is None or len(kept[1]) != samples:
            return None
        digest, outcomes = kept
        if abs(float(outcomes.float().mean()) - trial["value"]) > 0.5 / samples:  # another model than the one scored
            return None
        found[trial["number"]] = outcomes
        digests.add(digest)
    return found if len(digests - {None}) <= 1 else None  # one split, the same samples in the same order


def noise_bound(trials: list[dict[str, Any]], samples: int | None, metric: str, maximize: bool,
                search_dir: Path | None = None, best_number: int | None = None) -> dict[str, Any] | None:
    """The other complete trials the best does not beat beyond the validation split's noise: paired
    when every trial's outcomes are kept (`trial_outcomes`), binomial otherwise; None where no bound
    applies. `best_number`: the trial the search reports as best (Optuna's pick among tied scores),
    else the first best score."""
    complete = [t for t in trials if t["state"] == "complete" and t["value"] is not None]
    if not samples or not complete or not is_accuracy(metric):
        return None
    named = [t for t in complete if t["number"] == best_number]
    best = named[0] if named else (max if maximize else min)(complete, key=lambda t: t["value"])
    common = {"validation_samples": samples, "complete": len(complete), "best": best["number"]}
    outcomes = trial_outcomes(complete, samples, metric, search_dir)
    if outcomes is not None:
        comparisons = {t["number"]: compare_outcomes(outcomes[best["number"]], outcomes[t["number"]])
                       for t in complete}
        others = [n for n in comparisons if n != best["number"]]
        shown = dict(zip(others, holm_differs([comparisons[n].p_value for n in others]), strict=True))
        return {"test": "mcnemar", "alpha": ALPHA, "correction": "holm", **common,
                "tied_with_best": [n for n in others if not shown[n]],
                "comparisons": {str(n): {"best_only": c.first_only, "trial_only": c.second_only,
                                         "p_value": c.p_value, "differs": shown.get(n, False)}
                                for n, c in comparisons.items()}}
    cutoff = difference_cutoff(best["value"], samples)
    return {"test": "binomial", **common, "cutoff": cutoff,
            "tied_with_best": [t["number"] for t in complete
                               if t is not best and abs(t["value"] - best["value"]) <= cutoff]}


def noise_sentence(summary: dict[str, Any]) -> str | None:
    """In words, when the best trial is not alone within the noise; None when it stands out."""
    noise = summary.get("noise")
    if not noise or not noise["tied_with_best"]:
        return None
    others, tied = noise["complete"] - 1, noise["tied_with_best"]
    count = (f"{len(tied)} of the {others} other complete trials (trial{'s' if len(tied) > 1 else ''} "
             f"{', '.join(map(str, tied))}) {'are' if len(tied) > 1 else 'is'}")
    after = ("the search has not shown the best to be better than them: compare them over seeds before trusting "
             "the choice (tune.confirm_top does).")
    if summary.get("confirmation"):
        after = ("the search has not shown the best single score to be better than them; the leading trials' means "
                 "over seeds decide (below).")
    best = f"the best single score, trial {noise['best']}" if summary.get("confirmation") else (
        f"the best, trial {noise['best']}")
    if noise.get("test") == "mcnemar":
        return (f"{count} not shown to differ from {best}, by an exact McNemar test of "
                f"their right and wrong answers on the same {noise['validation_samples']:,} validation samples "
                f"({others} comparisons with the best, Holm-corrected at {noise['alpha']:g}; kdistill.tune.noise): "
                f"{after}")
    return (f"{count} within {noise['cutoff']:.4f} of {best}: two standard errors of a "
            f"difference of two binomial accuracies on {noise['validation_samples']:,} validation samples, an "
            f"approximate yardstick (kdistill.tune.noise); {after}")


__all__ = ["accuracy_standard_error", "difference_cutoff", "is_accuracy", "noise_bound", "noise_sentence",
           "tied_with_best", "trial_outcomes"]
