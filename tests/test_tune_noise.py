"""The noise bound of a search's validation scores: binomial standard errors against hand values,
which trials the best cannot be told from, and the warning tune.md and the CLI print."""

from __future__ import annotations

import pytest

from kdistill.tune.noise import accuracy_standard_error, is_accuracy, tied_with_best
from kdistill.tune.spec import TuneSpec
from kdistill.tune.study import markdown, noise_bound, noise_sentence

# the 12 trials of benchmarks/hinton_mnist_tune.yaml (2026-11-30): errors out of 5,999 validation images
HINTON_ERRORS = [60, 54, 54, 52, 57, 57, 61, 57, 66, 67, 55, 56]


def test_standard_error_is_the_binomial_one():
    assert accuracy_standard_error(0.99, 6000) == pytest.approx(0.0012845, abs=1e-7)  # sqrt(0.99 * 0.01 / 6000)
    assert accuracy_standard_error(1.0, 100) == 0.0
    with pytest.raises(ValueError, match="samples must be >= 1"):
        accuracy_standard_error(0.5, 0)


def test_tied_is_two_standard_errors_of_a_difference():
    # n = 10,000, best 0.95: the cut-off is 2 * sqrt(2) * sqrt(0.95 * 0.05 / 1e4) = 0.00616;
    # 0.94 is 0.010 away (beyond), 0.945 is 0.005 away (inside)
    assert tied_with_best([0.95, 0.94], 10_000) == [0]
    assert tied_with_best([0.95, 0.945], 10_000) == [0, 1]
    assert tied_with_best([0.90, None, 0.99], 6000) == [2]  # a clear winner stands alone; a pruned trial is skipped
    assert tied_with_best([0.10, 0.30, 0.105, 0.11], 10_000, maximize=False) == [0, 2]  # lower is better; 0.11 is
    # 0.010 from 0.10, beyond 2 * sqrt(2) * sqrt(0.10 * 0.90 / 1e4) = 0.00849
    assert tied_with_best([None], 100) == []


def test_the_hinton_search_was_all_noise():
    """Every one of the 12 trials is within the noise of the winner (52 errors against 52-67)."""
    accuracies = [1 - e / 5999 for e in HINTON_ERRORS]
    assert tied_with_best(accuracies, 5999) == list(range(12))


def test_only_accuracies_have_a_binomial_bound():
    assert is_accuracy("val/acc") and is_accuracy("val/acc_top5")
    assert not is_accuracy("val/loss") and not is_accuracy("val/perplexity") and not is_accuracy("val/acc_balanced")


def summary_of(values: list[float], samples: int | None, metric: str = "val/acc") -> dict:
    spec = TuneSpec(space={"methods[0].temperature": {"low": 1, "high": 8}}, metric=metric)
    trials = [{"number": i, "state": "complete", "value": v, "params": {"methods[0].temperature": 2.0 + i},
               "evaluations": [v]} for i, v in enumerate(values)]
    trials.append({"number": len(values), "state": "pruned", "value": 0.999, "params": {}, "evaluations": [0.999]})
    best = max(range(len(values)), key=lambda i: values[i])
    return {"metric": metric, "direction": spec.resolved_direction(), "space": list(spec.space), "trials": trials,
            "best": {"number": best, "value": values[best], "params": trials[best]["params"]},
            "best_config": "best.yaml", "plots": {}, "noise": noise_bound(trials, samples, spec)}


def test_tune_md_warns_when_the_best_is_not_alone():
    flat = summary_of([1 - e / 5999 for e in HINTON_ERRORS[:4]], 5999)
    assert flat["noise"]["tied_with_best"] == [0, 1, 2, 3]  # the pruned trial's score does not count
    sentence = noise_sentence(flat)
    # cut-off at the best (52 errors): 2 * sqrt(2) * sqrt(p (1 - p) / 5999) with p = 1 - 52 / 5999: 0.003385
    assert flat["noise"]["cutoff"] == pytest.approx(0.003385, abs=1e-6)
    assert sentence.startswith("4 of the 4 complete trials are within 0.0034 of the best (trials 0, 1, 2, 3): two "
                               "standard errors of a difference of two binomial accuracies on 5,999 validation")
    assert f"**Within noise.** {sentence}" in markdown(flat)

    clear = summary_of([0.90, 0.99], 6000)
    assert clear["noise"]["tied_with_best"] == [1] and noise_sentence(clear) is None
    assert "Within noise" not in markdown(clear)
    assert summary_of([0.5, 0.51], None)["noise"] is None  # split size unknown: no claim
    assert summary_of([0.5, 0.51], 100, metric="val/loss")["noise"] is None  # a loss has no binomial bound
    assert summary_of([0.5, 0.51], 100, metric="val/acc_balanced")["noise"] is None  # nor a balanced accuracy
