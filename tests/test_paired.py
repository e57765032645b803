"""McNemar's exact test against hand-computed binomial tails, the packed per-sample outcomes, and the
distilled-against-scratch sentence a run's report prints from them."""

from __future__ import annotations

from math import comb

import pytest
import torch

from kdistill.evaluate.diagnostics import diagnose
from kdistill.evaluate.paired import (
    compare_outcomes,
    exact_mcnemar_p,
    holm_differs,
    outcome_bits,
    outcomes_from_bits,
)
from kdistill.report_sections import diagnostics_lines


def test_exact_p_is_twice_the_binomial_tail():
    assert exact_mcnemar_p(0, 5) == pytest.approx(2 / 32)  # 2 * P(X <= 0), X ~ Bin(5, 1/2)
    assert exact_mcnemar_p(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 4096)  # 0.0386: the split differs
    assert exact_mcnemar_p(2, 10) == exact_mcnemar_p(10, 2)  # two-sided
    assert exact_mcnemar_p(3, 3) == 1.0 and exact_mcnemar_p(0, 0) == 1.0  # capped; no disagreement says nothing
    # a large count, summed in log space: 450 against 550 of 1,000 disagreements
    assert exact_mcnemar_p(450, 550) == pytest.approx(2 * sum(comb(1000, i) for i in range(451)) / 2**1000, rel=1e-9)
    with pytest.raises(ValueError, match=">= 0"):
        exact_mcnemar_p(-1, 3)


def test_outcomes_pack_first_sample_in_the_high_bit():
    flags = torch.tensor([1, 0, 1, 0, 0, 0, 0, 0, 1], dtype=torch.bool)
    assert outcome_bits(flags) == "oIA="  # bytes 0b10100000, 0b10000000
    assert outcomes_from_bits("oIA=", 9).tolist() == flags.tolist()
    generator = torch.Generator().manual_seed(0)
    many = torch.rand(10_001, generator=generator) > 0.3
    assert torch.equal(outcomes_from_bits(outcome_bits(many), 10_001), many)
    with pytest.raises(ValueError, match="room"):
        outcomes_from_bits("oIA=", 17)
    with pytest.raises(ValueError, match="past the last sample"):
        outcomes_from_bits("/w==", 1)  # eight set bits for one sample: not what outcome_bits writes


def test_compare_counts_the_disagreements():
    first = torch.tensor([1, 1, 1, 0, 0, 1], dtype=torch.bool)
    second = torch.tensor([1, 0, 0, 0, 1, 1], dtype=torch.bool)
    result = compare_outcomes(first, second)
    assert (result.samples, result.first_only, result.second_only) == (6, 2, 1)
    assert result.p_value == 1.0 and not result.differs  # 2 * P(X <= 1 | n = 3) = 2 * 4 / 8, capped at 1
    with pytest.raises(ValueError, match="different samples"):
        compare_outcomes(first, second[:5])


def test_holm_steps_down_and_stops_at_the_first_kept():
    # 3 tests: 0.01 < 0.05 / 3 is shown; 0.03 >= 0.05 / 2 stops, so 0.04 is not shown either
    assert holm_differs([0.04, 0.01, 0.03]) == [False, True, False]
    assert holm_differs([0.001, 0.02, 0.04]) == [True, True, True]  # 0.001 < 0.0167, 0.02 < 0.025, 0.04 < 0.05
    # the Hinton search's smallest p (trial 8 against the best, 0.016) among 11 comparisons: not shown
    assert holm_differs([0.0161] + [0.2] * 10) == [False] * 11
    assert holm_differs([]) == []


def one_hot_logits(predicted: list[int], classes: int = 2) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(predicted), classes).float() * 5


def test_the_report_says_whether_distilled_and_scratch_differ():
    labels = torch.zeros(40, dtype=torch.long)
    teacher = one_hot_logits([0] * 40)
    # distilled alone right on 12 samples, scratch alone right on 1, both right on 20, both wrong on 7
    distilled = one_hot_logits([0] * 32 + [1] * 8)
    scratch = one_hot_logits([0] * 20 + [1] * 12 + [0] + [1] * 7)
    result = diagnose({"teacher": teacher, "scratch": scratch, "student (distilled)": distilled}, labels, 2,
                      "teacher", "scratch", "student (distilled)")
    paired = result["distilled_vs_scratch"]
    assert (paired["first_only"], paired["second_only"], paired["samples"]) == (12, 1, 40)
    assert paired["p_value"] == pytest.approx(2 * (1 + 13) / 2**13)  # 0.0034
    text = "\n".join(diagnostics_lines(result))
    assert "the distilled student alone is right on 12, the scratch student alone on 1" in text
    assert "p = 0.00342: beyond what the number of test samples explains (p < 0.05): the distilled student is the " \
           "better one here" in text
    # both right or both wrong everywhere but two samples: nothing shown
    close = diagnose({"teacher": teacher, "scratch": distilled, "student (distilled)": one_hot_logits(
        [0] * 31 + [1] * 8 + [0])}, labels, 2, "teacher", "scratch", "student (distilled)")
    assert "p = 1: within what the number of test samples explains" in "\n".join(diagnostics_lines(close))
    # no scratch student: no comparison, no sentence
    alone = diagnose({"teacher": teacher, "student (distilled)": distilled}, labels, 2, "teacher", None,
                     "student (distilled)")
    assert alone["distilled_vs_scratch"] is None
    assert "McNemar" not in "\n".join(diagnostics_lines(alone))
    assert torch.equal(outcomes_from_bits(result["models"]["scratch"]["correct"], 40),
                       scratch.argmax(1) == labels)


def test_kdistill_run_prints_the_comparison_after_the_gap(tmp_path):
    from rich.console import Console

    from kdistill.cli_run import print_result
    from kdistill.results import DISTILLED, SCRATCH, ExperimentResult, ModelResult
    from kdistill.run.diagnostics import write_diagnostics

    labels = torch.zeros(40, dtype=torch.long)
    distilled, scratch = one_hot_logits([0] * 32 + [1] * 8), one_hot_logits([0] * 20 + [1] * 12 + [0] + [1] * 7)
    write_diagnostics(tmp_path, diagnose({"teacher": one_hot_logits([0] * 40), SCRATCH: scratch, DISTILLED: distilled},
                                         labels, 2, "teacher", SCRATCH, DISTILLED))
    rows = [ModelResult("teacher", 1.0, 100, 400, 1.0), ModelResult(SCRATCH, 21 / 40, 10, 40, 0.1),
            ModelResult(DISTILLED, 32 / 40, 10, 40, 0.1)]
    console = Console(record=True, width=400)
    print_result(console, type("Config", (), {"name": "paired"})(), ExperimentResult(tmp_path, rows), tmp_path)
    lines = console.export_text().splitlines()
    assert lines[-3].startswith("Distillation recovered")
    assert lines[-2].startswith("Distilled against scratch on the same 40 test samples: the distilled student alone "
                                "is right on 12, the scratch student alone on 1")
