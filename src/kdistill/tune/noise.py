"""How far apart two trials' validation accuracies must be before their order means anything.

A search ranks trials by one score each, and each score is a count of right answers on a finite
validation split: two trials as good as each other differ by the split's sampling noise alone, and
a search over a flat landscape picks its "best" from that noise (measured: Hinton's MNIST students,
12 trials within 15 errors of 5,999, whose winner by one error was worse on the test set). This
module says which trials the best one does not beat beyond that noise. It is a lower bound on the
noise: training seeds add their own spread on top.
"""

from __future__ import annotations

import math
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

    The standard error is taken at the mean accuracy of the pair, so it is symmetric in the two."""
    scored = [(i, v) for i, v in enumerate(values) if v is not None]
    if not scored:
        return []
    best = (max if maximize else min)(v for _, v in scored)
    tied = []
    for index, value in scored:
        spread = accuracy_standard_error((best + value) / 2, samples) * math.sqrt(2)
        if abs(best - value) <= 2 * spread:
            tied.append(index)
    return tied


def is_accuracy(metric: str) -> bool:
    """Whether `metric` is a share of right answers on the split (val/acc, val/acc_top5), to which
    the binomial model applies; a loss or a perplexity has no such bound."""
    return metric.split("/", 1)[-1].startswith("acc")


__all__ = ["accuracy_standard_error", "is_accuracy", "tied_with_best"]
