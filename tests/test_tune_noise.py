"""The noise bound of a search's validation scores: binomial standard errors against hand values, the
paired (McNemar) bound from the trials' kept outcomes, which trials the best cannot be told from, and
the warning tune.md and the CLI print."""

from __future__ import annotations

import json

import pytest
import torch

from kdistill.evaluate.paired import outcome_bits
from kdistill.tune.noise import accuracy_standard_error, is_accuracy, tied_with_best
from kdistill.tune.objective import trial_dir
from kdistill.tune.spec import TuneSpec
from kdistill.tune.study import markdown, noise_bound, noise_sentence, open_study, sampler_sentence

# the 12 trials of benchmarks/hinton_mnist_tune.yaml (2026-11-30): errors out of 5,999 validation images
HINTON_ERRORS = [60, 54, 54, 52, 57, 57, 61, 57, 66, 62, 55, 56]


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
    """Every one of the 12 trials is within the noise of the winner (52 errors against 52-66)."""
    accuracies = [1 - e / 5999 for e in HINTON_ERRORS]
    assert tied_with_best(accuracies, 5999) == list(range(12))


def test_only_accuracies_have_a_binomial_bound():
    assert is_accuracy("val/acc") and is_accuracy("val/acc_top5")
    assert not is_accuracy("val/loss") and not is_accuracy("val/perplexity") and not is_accuracy("val/acc_balanced")


def summary_of(values: list[float], samples: int | None, metric: str = "val/acc", search_dir=None) -> dict:
    spec = TuneSpec(space={"methods[0].temperature": {"low": 1, "high": 8}}, metric=metric)
    trials = [{"number": i, "state": "complete", "value": v, "params": {"methods[0].temperature": 2.0 + i},
               "evaluations": [v]} for i, v in enumerate(values)]
    trials.append({"number": len(values), "state": "pruned", "value": 0.999, "params": {}, "evaluations": [0.999]})
    best = max(range(len(values)), key=lambda i: values[i])
    return {"metric": metric, "direction": spec.resolved_direction(), "space": list(spec.space), "trials": trials,
            "best": {"number": best, "value": values[best], "params": trials[best]["params"]},
            "best_config": "best.yaml", "plots": {},
            "noise": noise_bound(trials, samples, metric, spec.resolved_direction() == "maximize", search_dir)}


def test_tune_md_warns_when_the_best_is_not_alone():
    flat = summary_of([1 - e / 5999 for e in HINTON_ERRORS[:4]], 5999)
    assert flat["noise"]["test"] == "binomial"  # no trial kept its outcomes
    assert flat["noise"]["best"] == 3  # 52 errors
    assert flat["noise"]["tied_with_best"] == [0, 1, 2]  # the pruned trial's score does not count
    sentence = noise_sentence(flat)
    # cut-off at the best (52 errors): 2 * sqrt(2) * sqrt(p (1 - p) / 5999) with p = 1 - 52 / 5999: 0.003385
    assert flat["noise"]["cutoff"] == pytest.approx(0.003385, abs=1e-6)
    assert sentence.startswith("3 of the 3 other complete trials (trials 0, 1, 2) are within 0.0034 of the best, "
                               "trial 3: two standard errors of a difference of two binomial accuracies on 5,999 "
                               "validation")
    assert f"**Within noise.** {sentence}" in markdown(flat)

    clear = summary_of([0.90, 0.99], 6000)
    assert clear["noise"]["tied_with_best"] == [] and noise_sentence(clear) is None
    assert "Within noise" not in markdown(clear)
    assert summary_of([0.5, 0.51], None)["noise"] is None  # split size unknown: no claim
    assert summary_of([0.5, 0.51], 100, metric="val/loss")["noise"] is None  # a loss has no binomial bound
    assert summary_of([0.5, 0.51], 100, metric="val/acc_balanced")["noise"] is None  # nor a balanced accuracy


def keep_outcomes(search_dir, number: int, correct: torch.Tensor) -> None:
    """A trial's diagnostics.json as a run writes it, reduced to what the paired bound reads."""
    where = trial_dir(search_dir, number)
    where.mkdir(parents=True)
    model = {"accuracy": float(correct.float().mean()), "correct": outcome_bits(correct)}
    (where / "diagnostics.json").write_text(json.dumps(
        {"test_samples": len(correct), "roles": {"distilled": "student (distilled)"},
         "models": {"student (distilled)": model}}))


def test_kept_outcomes_give_a_paired_bound(tmp_path):
    """Three trials on 200 samples. Against the best (180 right), trial 1 (172 right) disagrees on 8
    samples only, all in the best's favour: McNemar p = 2 / 2**8 = 0.0078, it differs, although the
    binomial yardstick (cut-off 0.085 at 0.90) counts an 0.04 gap as noise; trial 2 (176 right)
    splits 10 disagreements 7 : 3, p = 2 * 176 / 1024 = 0.34, not shown to differ."""
    best = torch.zeros(200, dtype=torch.bool)
    best[:180] = True
    second = best.clone()
    second[172:180] = False
    third = best.clone()
    third[160:167] = False
    third[180:183] = True
    for number, correct in enumerate([best, second, third]):
        keep_outcomes(tmp_path, number, correct)
    summary = summary_of([0.90, 0.86, 0.88], 200, search_dir=tmp_path)
    noise = summary["noise"]
    assert noise["test"] == "mcnemar" and noise["best"] == 0
    # Holm over the two comparisons: 0.0078 < 0.05 / 2 is shown, then 0.34 >= 0.05 / 1 is not
    assert noise["comparisons"]["1"] == {"best_only": 8, "trial_only": 0, "p_value": pytest.approx(2 / 256),
                                         "differs": True}
    assert noise["comparisons"]["2"] == {"best_only": 7, "trial_only": 3, "p_value": pytest.approx(2 * 176 / 1024),
                                         "differs": False}
    assert noise["tied_with_best"] == [2]
    assert noise_sentence(summary).startswith(
        "1 of the 2 other complete trials (trial 2) is not shown to differ from the best, trial 0, by an exact "
        "McNemar test of their right and wrong answers on the same 200 validation samples (2 comparisons with "
        "the best, Holm-corrected at 0.05")
    assert summary_of([0.90, 0.86, 0.88], 200)["noise"]["test"] == "binomial"  # trial folders not found
    assert summary_of([0.90, 0.86, 0.88], 200)["noise"]["tied_with_best"] == [1, 2]


def test_outcomes_that_do_not_give_the_score_are_not_paired(tmp_path):
    """The paired test must compare what the search ranked: a trial whose kept outcomes give another
    accuracy than its score (another model), a top-5 metric, or a missing trial folder fall back."""
    correct = torch.ones(100, dtype=torch.bool)
    correct[:10] = False
    keep_outcomes(tmp_path, 0, correct)
    keep_outcomes(tmp_path, 1, correct)
    assert summary_of([0.90, 0.90], 100, search_dir=tmp_path)["noise"]["test"] == "mcnemar"
    assert summary_of([0.90, 0.95], 100, search_dir=tmp_path)["noise"]["test"] == "binomial"  # outcomes give 0.90
    assert summary_of([0.90, 0.90], 200, search_dir=tmp_path)["noise"]["test"] == "binomial"  # another split size
    assert summary_of([0.90, 0.90], 100, metric="val/acc_top5", search_dir=tmp_path)["noise"]["test"] == "binomial"
    assert summary_of([0.90], 100, search_dir=tmp_path)["noise"]["test"] == "mcnemar"


def test_a_search_no_longer_than_tpes_random_start_says_it_is_random(tmp_path):
    summary = summary_of([0.90, 0.99], 6000)  # two complete trials and a pruned one
    summary["sampler"] = {"name": "tpe", "random_trials": 10}
    assert sampler_sentence(summary).startswith("**A random search.** TPE draws its first 10 trials at random "
                                                "(`tune.random_trials`) and the search has 3")
    assert "**A random search.**" in markdown(summary)
    summary["sampler"]["random_trials"] = 2
    assert sampler_sentence(summary) == ("Sampler: TPE; its first 2 trials were random draws (`tune.random_trials`), "
                                         "the 1 after them chosen from the ones before.")
    summary["sampler"] = {"name": "random", "random_trials": None}
    assert sampler_sentence(summary) is None
    spec = TuneSpec(space={"methods[0].temperature": {"low": 1, "high": 8}}, random_trials=4)
    assert open_study(tmp_path, spec, seed=0).sampler._n_startup_trials == 4  # what Optuna's TPE is given
    assert TuneSpec(space={"methods[0].temperature": {"low": 1, "high": 8}}).random_trials == 10  # Optuna's default


def test_the_best_is_the_trial_the_search_reports_and_one_split_is_compared(tmp_path):
    """Tied scores: the bound compares with the trial best.yaml holds (Optuna's pick), not the first
    of the tied; outcomes over differently ordered labels are not paired."""
    first = torch.ones(100, dtype=torch.bool)
    first[:10] = False
    second = torch.ones(100, dtype=torch.bool)
    second[90:] = False  # same score, other samples wrong: 10 : 10 disagreements
    keep_outcomes(tmp_path, 0, first)
    keep_outcomes(tmp_path, 1, second)
    spec = TuneSpec(space={"methods[0].temperature": {"low": 1, "high": 8}})
    trials = [{"number": n, "state": "complete", "value": 0.9, "params": {}} for n in (0, 1)]
    assert noise_bound(trials, 100, spec.metric, True, tmp_path)["best"] == 0
    named = noise_bound(trials, 100, spec.metric, True, tmp_path, best_number=1)
    assert named["best"] == 1 and named["tied_with_best"] == [0]
    assert named["comparisons"]["0"]["best_only"] == 10 and named["comparisons"]["0"]["trial_only"] == 10
    where = trial_dir(tmp_path, 1) / "diagnostics.json"
    diagnostics = json.loads(where.read_text())
    where.write_text(json.dumps({**diagnostics, "labels_digest": "another split"}))
    (trial_dir(tmp_path, 0) / "diagnostics.json").write_text(json.dumps(
        {**json.loads((trial_dir(tmp_path, 0) / "diagnostics.json").read_text()), "labels_digest": "one split"}))
    assert noise_bound(trials, 100, spec.metric, True, tmp_path)["test"] == "binomial"
