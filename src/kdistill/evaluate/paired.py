"""Is one classifier better than another on the same samples? The exact McNemar test.

Two accuracies on one test set are not two independent measurements: both models get most samples
right, and only the samples on which they disagree say anything about which is better. McNemar's
test counts those (b: the first alone right, c: the second alone right) and asks how likely a split
at least as uneven as b : c is when each disagreement is a fair coin. The exact two-sided form is
used (twice the binomial tail of min(b, c), capped at 1), which needs no large-count approximation.

What it measures: whether these two trained models differ on this sample of inputs beyond what
that sample's size explains. It does not measure the training seed's spread (another seed of the
same recipe disagrees with the first on some samples too), so "p < 0.05" means "these two models
differ here", not "this setting is better than that one"; over seeds is how the second is shown.

Per-sample outcomes are kept in `diagnostics.json` as packed bits (`outcome_bits`), one per test
sample in the loader's order, so a comparison can be made later without the models.
"""

from __future__ import annotations

import base64
import math
from dataclasses import asdict, dataclass

import torch

ALPHA = 0.05


def outcome_bits(correct: torch.Tensor) -> str:
    """A boolean vector (right / wrong per sample) as base64 of its bits, first sample in the highest bit."""
    flags = correct.detach().to("cpu", torch.bool).flatten()
    padded = torch.zeros(math.ceil(len(flags) / 8) * 8, dtype=torch.bool)
    padded[: len(flags)] = flags
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
    packed = (padded.view(-1, 8).to(torch.uint8) * weights).sum(1, dtype=torch.uint8)
    return base64.b64encode(bytes(packed.tolist())).decode("ascii")


def outcomes_from_bits(text: str, samples: int) -> torch.Tensor:
    """The inverse of `outcome_bits`: `samples` booleans."""
    raw = base64.b64decode(text.encode("ascii"), validate=True)
    if len(raw) != math.ceil(samples / 8):
        raise ValueError(f"outcome bits hold {len(raw) * 8} samples' room, not {samples}")
    packed = torch.tensor(list(raw), dtype=torch.uint8)
    bits = ((packed[:, None] >> torch.arange(7, -1, -1, dtype=torch.uint8)) & 1).flatten().bool()
    if bits[samples:].any():  # outcome_bits pads with zeros: anything else is not what it wrote
        raise ValueError("outcome bits have set bits past the last sample: corrupt or for another split")
    return bits[:samples]


def exact_mcnemar_p(first_only: int, second_only: int) -> float:
    """Two-sided exact McNemar p-value of `first_only` against `second_only` discordant samples."""
    if first_only < 0 or second_only < 0:
        raise ValueError(f"discordant counts must be >= 0 (got {first_only}, {second_only})")
    n = first_only + second_only
    if n == 0:
        return 1.0
    k = min(first_only, second_only)
    # the binomial(n, 1/2) tail P(X <= k), summed in log space (n may be large)
    log_terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)
                 for i in range(k + 1)]
    top = max(log_terms)
    tail = math.exp(top) * sum(math.exp(t - top) for t in log_terms)
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class PairedComparison:
    """Two models on the same samples: who alone is right where, and the exact McNemar p-value."""

    samples: int
    first_only: int
    second_only: int
    p_value: float

    @property
    def differs(self) -> bool:
        """Whether the split of the disagreements is beyond what the samples' number explains (p < 0.05)."""
        return self.p_value < ALPHA

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def compare_outcomes(first_correct: torch.Tensor, second_correct: torch.Tensor) -> PairedComparison:
    """McNemar's comparison of two models' right / wrong vectors over the same samples in the same order."""
    first, second = first_correct.bool().flatten(), second_correct.bool().flatten()
    if first.shape != second.shape:
        raise ValueError(f"the two outcome vectors cover different samples ({len(first)} and {len(second)})")
    first_only, second_only = int((first & ~second).sum()), int((second & ~first).sum())
    return PairedComparison(len(first), first_only, second_only, exact_mcnemar_p(first_only, second_only))


def holm_differs(p_values: list[float], alpha: float = ALPHA) -> list[bool]:
    """Which of several comparisons are shown at family-wise level `alpha` (Holm's step-down method).

    Comparing a search's best with each of its other trials is many tests at once: one p below 0.05
    in eleven is likely by chance alone. Holm's method rejects the smallest p while it is at most
    alpha / (tests left), and stops at the first that is not. It does not correct for the best
    having been chosen by the same scores (which leans towards finding differences)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    shown = [False] * len(p_values)
    for rank, index in enumerate(order):
        if p_values[index] > alpha / (len(p_values) - rank):
            break
        shown[index] = True
    return shown


__all__ = ["ALPHA", "PairedComparison", "compare_outcomes", "exact_mcnemar_p", "holm_differs", "outcome_bits",
           "outcomes_from_bits"]
