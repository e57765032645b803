"""The arithmetic of choosing a pair: the Pareto front of accuracy against cost, and the capacity gap.

Pure functions over plain numbers (no training), so they are tested on hand-made points.

- A point is on the front when no other point is at least as accurate and at most as costly on
  every cost, and strictly better on one of them.
- A capacity gap (Mirzadeh et al. 2020): a student that ends more accurate when distilled from a
  smaller teacher than from the largest one. The remedy the paper gives is a teacher assistant: an
  intermediate model distilled from the large teacher first, which then teaches the student.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Point:
    label: str
    accuracy: float
    costs: tuple[float, ...]  # e.g. (parameters, latency in ms): lower is better


def dominates(a: Point, b: Point) -> bool:
    """`a` is at least as good as `b` everywhere and strictly better somewhere."""
    no_worse = a.accuracy >= b.accuracy and all(x <= y for x, y in zip(a.costs, b.costs, strict=True))
    better = a.accuracy > b.accuracy or any(x < y for x, y in zip(a.costs, b.costs, strict=True))
    return no_worse and better


def pareto_front(points: Sequence[Point]) -> list[bool]:
    """For each point, whether it is on the front (not dominated by any other point)."""
    return [not any(dominates(other, point) for other in points if other is not point) for point in points]


@dataclass(frozen=True)
class CapacityGap:
    """A student that learned better from `best_teacher` than from the largest teacher."""

    student: str
    largest_teacher: str
    largest_accuracy: float
    best_teacher: str
    best_accuracy: float
    assistant: str | None  # the suggested teacher assistant (None when the best teacher is no larger than the student)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def sentence(self) -> str:
        text = (f"capacity gap: {self.student} reaches {100 * self.best_accuracy:.2f} % from {self.best_teacher} "
                f"but {100 * self.largest_accuracy:.2f} % from the largest teacher, {self.largest_teacher}")
        if self.assistant is None:
            return text + "; it learns best from a teacher no larger than itself: distil from that one"
        return (text + f"; suggested: strategy teacher_assistant with {self.assistant} as the assistant "
                f"({self.largest_teacher} -> {self.assistant} -> {self.student})")


def noise_margin(a: float, b: float, samples: int) -> float:
    """Two standard errors of the difference of two accuracies each measured on `samples` examples
    (binomial, treated as independent: conservative, since two students err on many of the same
    examples). On 1,000 validation examples near 90 % it is 2.7 points; on 10,000, 0.85."""
    if samples < 1:
        raise ValueError(f"samples: must be >= 1 (got {samples})")
    return 2.0 * math.sqrt((a * (1 - a) + b * (1 - b)) / samples)


def capacity_gaps(accuracy: dict[tuple[str, str], float], teacher_size: dict[str, int], student_size: dict[str, int],
                  margin: float = 0.005, samples: int | None = None,
                  paired: Callable[[str, str, str], bool | None] | None = None) -> list[CapacityGap]:
    """Students whose best teacher (by accuracy, more than the margin ahead) is not the largest teacher.

    `accuracy[(student, teacher)]` is the distilled student's accuracy; sizes are parameter counts.
    The lead must also be beyond the scoring split's noise: `paired(student, best_teacher,
    largest_teacher)` says whether the two students differ by McNemar's test on the same examples
    (None where their outcomes are not kept); without it, with `samples` (the number of examples
    each accuracy was measured on), the margin is at least `noise_margin` of the two accuracies: a
    fixed 0.5 points reads noise as a gap on a small validation split, where one example is already
    0.1-1 point."""
    gaps = []
    largest = max(teacher_size, key=lambda t: teacher_size[t])
    for student in student_size:
        scores = {t: accuracy[(student, t)] for t in teacher_size if (student, t) in accuracy}
        if largest not in scores or len(scores) < 2:
            continue
        best = max(scores, key=lambda t: (scores[t], -teacher_size[t]))
        if best == largest or scores[best] - scores[largest] <= margin:
            continue
        shown = paired(student, best, largest) if paired is not None else None
        if shown is None and samples is not None:
            shown = scores[best] - scores[largest] > noise_margin(scores[best], scores[largest], samples)
        if shown is False:
            continue
        assistant = best if teacher_size[best] > student_size[student] else None
        gaps.append(CapacityGap(student, largest, scores[largest], best, scores[best], assistant))
    return gaps


__all__ = ["CapacityGap", "Point", "capacity_gaps", "dominates", "noise_margin", "pareto_front"]
