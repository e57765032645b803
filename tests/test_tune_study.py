"""`kdistill tune` end to end on the digits: an interrupted 3-trial search resumes with its first trials
kept, the test split is never read, a hopeless trial is pruned, and best.yaml runs as an experiment."""

from __future__ import annotations

import json

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from sealed_data import SealedSplitRead

import kdistill.experiment
from kdistill.config import dump_config, load_config, validate
from kdistill.experiment import run_experiment
from kdistill.report import rebuild_reports, tuning_trial
from kdistill.tune.data import held_out, tuning_raw
from kdistill.tune.objective import make_objective
from kdistill.tune.study import BEST_CONFIG, open_study, run_search, search_plan


def experiment(**tune) -> dict:
    space = {"methods[0].temperature": {"low": 1, "high": 8},
             "training.optimizer.lr": {"low": 3e-3, "high": 3e-2, "log": True}}
    return {"name": "tiny", "seed": 0, "data": {"name": "digits", "batch_size": 64},
            "teacher": {"name": "mlp", "options": {"hidden": [64]}, "training": {"epochs": 3}},
            "student": {"name": "mlp", "options": {"hidden": [16]}},
            "methods": [{"name": "soft_target", "weight": 0.9, "temperature": 4.0},
                        {"name": "hard_label", "weight": 0.1}],
            "training": {"epochs": 2, "optimizer": {"name": "adam", "lr": 0.01}},
            "tune": {"trials": 3, "space": space, "sampler": "random", **tune}}


@pytest.fixture(autouse=True)
def _no_run_reports(monkeypatch):
    """Each trial's report.md / report.html is not what these tests check, and costs seconds a trial."""
    monkeypatch.setattr(kdistill.experiment, "write_report", lambda *args, **kwargs: None)


def finished(study) -> list:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def test_interrupted_search_resumes_to_three_trials_keeping_the_first(tmp_path, monkeypatch):
    run_dir = tmp_path / "search"
    real = kdistill.experiment.run_experiment
    calls = []

    def interrupt_third(config, where, **kwargs):
        calls.append(where)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C during the third trial
        return real(config, where, **kwargs)

    monkeypatch.setattr(kdistill.experiment, "run_experiment", interrupt_third)
    with pytest.raises(KeyboardInterrupt):
        run_search(experiment(), run_dir)
    monkeypatch.setattr(kdistill.experiment, "run_experiment", real)
    before = optuna.load_study(study_name="kdistill-tune", storage=f"sqlite:///{run_dir / 'study.db'}")
    first = [(t.number, t.params, t.value) for t in finished(before)]
    cut = [t for t in before.trials if t.state == TrialState.FAIL]
    assert len(first) == 2 and len(cut) == 1 and cut[0].user_attrs["interrupted"]
    teacher_weights = (run_dir / "teacher" / "student.pt").stat().st_mtime_ns

    result = run_search(None, run_dir, resume=True)
    after = finished(result.study)
    assert len(after) == 3  # reached the target; the cut trial does not count
    assert [(t.number, t.params, t.value) for t in after[:2]] == first  # kept, not re-run
    assert after[2].params == cut[0].params  # the interrupted values were run again
    assert (run_dir / "teacher" / "student.pt").stat().st_mtime_ns == teacher_weights  # the teacher is not retrained
    for name in ("tune-history.png", "tune-importances.png", "tune.md", "tune.json"):
        assert (run_dir / name).stat().st_size > 0
    summary = json.loads((run_dir / "tune.json").read_text())
    assert [t["state"] for t in summary["trials"]] == ["complete", "complete", "fail", "complete"]

    # best.yaml: the experiment with the best values, loads and runs as an experiment (on the test set)
    best = max(after, key=lambda t: t.value)
    assert result.best_params == best.params
    best_raw = yaml.safe_load((run_dir / BEST_CONFIG).read_text())
    assert "tune" not in best_raw
    config = load_config(run_dir / BEST_CONFIG, ["training.epochs=1", "teacher.training.epochs=1"])
    assert config.methods[0].options()["temperature"] == pytest.approx(best.params["methods[0].temperature"])
    assert config.training.optimizer.lr == pytest.approx(best.params["training.optimizer.lr"])
    outcome = run_experiment(config, tmp_path / "best-run", progress=False)
    assert 0.3 < outcome.by_role("student (distilled)").accuracy <= 1.0
    assert not tuning_trial(dump_config(config))  # its report is a run on the test set, not a trial's


def test_tuning_never_reads_the_test_split(tmp_path):
    raw = experiment(trials=2)
    raw["data"]["name"] = "sealed_data:digits_sealed_test"
    with pytest.raises(SealedSplitRead):  # the seal works: a plain run reads the test split
        run_experiment(validate({k: v for k, v in raw.items() if k != "tune"}), tmp_path / "plain", progress=False)
    result = run_search(raw, tmp_path / "search")
    assert len(finished(result.study)) == 2 and result.best_value > 0.3
    # the noise bound counts the held-out split (10 % of the training images), still without the test split
    noise = json.loads((tmp_path / "search" / "tune.json").read_text())["noise"]
    assert noise["validation_samples"] == len(held_out("digits").val) == 136
    # a trial's reports (not written in these tests: `kdistill report` rebuilds them) say that their
    # "test" figures are validation figures
    rebuild_reports(tmp_path / "search" / "trials" / "trial-0000")
    trial_report = (tmp_path / "search" / "trials" / "trial-0000" / "report.md").read_text()
    assert "A tuning trial (kdistill tune)" in trial_report and "the test set was not read" in trial_report
    assert "A tuning trial" in (tmp_path / "search" / "trials" / "trial-0000" / "report.html").read_text()
    # each trial kept its right / wrong answers on those samples, so the bound is McNemar's paired one
    assert noise["test"] == "mcnemar" and set(noise["comparisons"]) == {"0", "1"}
    assert noise["comparisons"][str(noise["best"])] == {"best_only": 0, "trial_only": 0, "p_value": 1.0,
                                                        "differs": False}
    assert noise["best"] == result.study.best_trial.number  # the trial best.yaml holds


def test_a_hopeless_trial_is_pruned_after_its_first_evaluation(tmp_path):
    raw = experiment(pruner="median", startup_trials=2, warmup_epochs=0)
    raw["training"]["epochs"] = 4
    raw["teacher"] = {"name": "mlp", "options": {"hidden": [8]}, "training": {"epochs": 1}}
    raw["tune"]["space"] = {"training.optimizer.lr": {"low": 1e-8, "high": 3e-2, "log": True}}
    spec, dimensions = search_plan(raw)
    study = open_study(tmp_path, spec, seed=0)
    for lr in (0.01, 0.02, 1e-8):  # two good trials, then one that cannot learn
        study.enqueue_trial({"training.optimizer.lr": lr})
    study.optimize(make_objective(tuning_raw(raw), dimensions, spec, tmp_path), n_trials=3)
    good, also_good, hopeless = study.trials
    assert good.state == also_good.state == TrialState.COMPLETE
    assert len(good.intermediate_values) == 4
    assert hopeless.state == TrialState.PRUNED
    assert list(hopeless.intermediate_values) == [0]  # stopped after its first epoch
    assert hopeless.intermediate_values[0] < min(good.intermediate_values[0], also_good.intermediate_values[0])


def test_a_trial_left_running_by_a_killed_process_is_queued_again_once(tmp_path):
    from kdistill.tune.study import requeue_interrupted

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    killed = optuna.create_study(study_name="s", storage=storage)
    trial = killed.ask()
    trial.suggest_float("methods[0].temperature", 1, 8)  # the process dies here: the trial stays RUNNING
    study = optuna.load_study(study_name="s", storage=storage)
    assert requeue_interrupted(study) == [0]
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]
    study.optimize(lambda t: t.suggest_float("methods[0].temperature", 1, 8), n_trials=1)
    assert study.trials[1].params == study.trials[0].params  # the same values, run again
    assert requeue_interrupted(study) == []  # and only once


def test_a_resumed_search_tries_the_values_the_uninterrupted_one_tries(tmp_path, monkeypatch):
    real = kdistill.experiment.run_experiment
    whole = run_search(experiment(), tmp_path / "whole")
    calls = []

    def interrupt_second(config, where, **kwargs):
        calls.append(where)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C during the second of three trials
        return real(config, where, **kwargs)

    monkeypatch.setattr(kdistill.experiment, "run_experiment", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        run_search(experiment(), tmp_path / "cut")
    monkeypatch.setattr(kdistill.experiment, "run_experiment", real)
    resumed = run_search(None, tmp_path / "cut", resume=True)
    tried = [(t.params, t.value) for t in finished(resumed.study)]
    assert tried == [(t.params, t.value) for t in finished(whole.study)]
    assert resumed.best_params == whole.best_params


def test_a_search_stopped_while_its_teacher_trains_resumes(tmp_path, monkeypatch):
    import kdistill.tune.study as study_module

    real = study_module.pretrain_teachers

    def stop_in_teacher(*args, **kwargs):
        raise KeyboardInterrupt  # the shared teacher trains before the study exists

    monkeypatch.setattr(study_module, "pretrain_teachers", stop_in_teacher)
    with pytest.raises(KeyboardInterrupt):
        run_search(experiment(trials=1), tmp_path / "search")
    assert not (tmp_path / "search" / "study.db").exists()
    monkeypatch.setattr(study_module, "pretrain_teachers", real)
    assert len(finished(run_search(None, tmp_path / "search", resume=True).study)) == 1


def test_a_resumed_search_draws_new_values(tmp_path):
    spec, dimensions = search_plan(experiment())

    def objective(trial):
        return sum(d.suggest(trial) for d in dimensions)

    open_study(tmp_path, spec, seed=0).optimize(objective, n_trials=2)
    study = open_study(tmp_path, spec, seed=0)  # a new process opening the same study
    study.optimize(objective, n_trials=2)
    params = [tuple(t.params.values()) for t in study.trials]
    assert len(set(params)) == 4, params


def test_the_leading_trials_are_trained_again_with_other_seeds(tmp_path, monkeypatch):
    """confirm_top: the two best of three trials run twice more (seeds 1 and 2) on the same split; the
    first seed's score is the trial's own; best.yaml holds the best mean; a resumed search reruns only
    a run that has no score yet, and gets the same score again."""
    raw = experiment(trials=3, confirm_top=2)
    raw["data"]["train_limit"] = 1200  # a seeded subset: it must not move with the seed either
    run_dir = tmp_path / "search"
    real = kdistill.experiment.run_experiment
    seeds_run = []

    def count(config, where, **kwargs):
        seeds_run.append((where.name, config.seed))
        return real(config, where, **kwargs)

    monkeypatch.setattr(kdistill.experiment, "run_experiment", count)
    result = run_search(raw, run_dir)
    trials = sorted(finished(result.study), key=lambda t: t.value, reverse=True)
    summary = json.loads((run_dir / "tune.json").read_text())
    rows = summary["confirmation"]
    assert sorted(r["number"] for r in rows) == sorted(t.number for t in trials[:2])
    split = json.loads((run_dir / "trials" / "trial-0000" / "diagnostics.json").read_text())["labels_digest"]
    for row in rows:
        trial = result.study.trials[row["number"]]
        assert row["seeds"] == [0, 1, 2] and row["values"][0] == trial.value
        assert len(set(row["values"])) > 1  # the seed moves the training
        runs = [run_dir / "confirm" / f"trial-{trial.number:04d}-seed-{s}" for s in (1, 2)]
        assert [(run.name, s) for run, s in zip(runs, (1, 2), strict=True)] == [r for r in seeds_run if
                                                                                 r[0] in {run.name for run in runs}]
        kept = [json.loads((run / "confirm.json").read_text()) for run in runs]
        assert [k["value"] for k in kept] == row["values"][1:] and [k["seed"] for k in kept] == [1, 2]
        for run in runs:  # the same validation samples, in the same order, as the trials
            assert json.loads((run / "diagnostics.json").read_text())["labels_digest"] == split
        assert row["mean"] == pytest.approx(sum(row["values"]) / 3)
    assert len(seeds_run) == 3 + 4  # three trials, then two more seeds of two trials
    assert rows[0]["mean"] >= rows[1]["mean"]
    chosen = result.study.trials[rows[0]["number"]]
    assert result.best_params == chosen.params and result.best_value == pytest.approx(rows[0]["mean"])
    assert yaml.safe_load((run_dir / BEST_CONFIG).read_text())["training"]["optimizer"]["lr"] == pytest.approx(
        chosen.params["training.optimizer.lr"])
    assert f"The best mean is trial {rows[0]['number']}" in (run_dir / "tune.md").read_text()
    # a confirmation run cut short is run again on --resume; the scored ones are not
    (run_dir / "confirm" / f"trial-{rows[1]['number']:04d}-seed-2" / "confirm.json").unlink()
    seeds_run.clear()
    again = run_search(None, run_dir, resume=True)
    assert seeds_run == [(f"trial-{rows[1]['number']:04d}-seed-2", 2)]
    assert json.loads((run_dir / "tune.json").read_text())["confirmation"] == summary["confirmation"]
    assert again.best_params == result.best_params


def test_trials_whose_training_diverges_are_pruned_and_the_search_goes_on(tmp_path):
    # a NaN training loss stops a run (TrainingDiverged); in a search it is the trial's result, not the search's end
    raw = experiment(trials=2)
    raw["training"]["optimizer"] = {"name": "sgd", "lr": 0.01}
    raw["tune"]["space"] = {"training.optimizer.lr": {"low": 1e5, "high": 1e6, "log": True}}
    result = run_search(raw, tmp_path / "search")
    assert [t.state for t in result.study.trials] == [TrialState.PRUNED, TrialState.PRUNED]


def test_a_confirmation_run_that_diverges_ranks_its_trial_last(tmp_path, monkeypatch):
    raw = experiment(trials=2, confirm_top=2, confirm_seeds=2)
    real = kdistill.experiment.run_experiment
    single = {}

    def diverge_the_single_best(config, where, **kwargs):
        if where.parent.name == "confirm" and where.name.startswith(f"trial-{single['best']:04d}"):
            raise optuna.TrialPruned("val/acc is NaN (the training diverged)")
        return real(config, where, **kwargs)

    search = run_search(raw, tmp_path / "first")  # the same search, to learn which trial leads on one seed
    single["best"] = search.study.best_trial.number
    monkeypatch.setattr(kdistill.experiment, "run_experiment", diverge_the_single_best)
    result = run_search(raw, tmp_path / "search")
    rows = json.loads((tmp_path / "search" / "tune.json").read_text())["confirmation"]
    assert rows[-1]["number"] == single["best"] and rows[-1]["mean"] is None and rows[-1]["values"][1] is None
    assert result.best_params == result.study.trials[rows[0]["number"]].params  # the other trial, by its mean
    assert "diverged" in (tmp_path / "search" / "tune.md").read_text()
