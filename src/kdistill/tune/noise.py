"""How far apart two trials' validation accuracies must be before a search may call one better.

A search ranks trials by one score each, and each score counts right answers on a finite
validation split: a search over a flat landscape picks its "best" from noise (measured: Hinton's
MNIST students, 12 trials within 15 errors of 5,999, whose winner by one error was worse on the
test set over 7 seeds). The yardstick here is approximate, and says so: it treats two scores as
binomial counts on independent splits of the split's size. That overstates the split's own noise
for two models that err on the same samples (a paired count would be tighter, and needs each
sample's outcome, which trials do not keep), and it leaves out the training seed's spread, which
adds to it. Trials inside it are reported as not shown to differ from the best, not as equal.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence


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


__all__ = ["accuracy_standard_error", "difference_cutoff", "is_accuracy", "tied_with_best"]
