"""The scratch baseline: off for a user's experiment, on for the demo and where asked, reused by digest."""

from __future__ import annotations

import json

import pytest
import yaml

from kdistill import cli
from kdistill.config import load_config
from kdistill.engine import Distiller
from kdistill.experiment import run_experiment
from kdistill.run.baseline import baseline_digest, baseline_inputs

EXPERIMENT = {
    "name": "baseline",
    "data": {"name": "digits", "batch_size": 128},
    "teacher": {"name": "mlp", "options": {"hidden": [32]}, "training": {"epochs": 1}},
    "student": {"name": "mlp", "options": {"hidden": [16]}},
    "training": {"epochs": 1, "optimizer": {"name": "adamw", "lr": 0.01}},
}


@pytest.fixture
def experiment(tmp_path):
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(EXPERIMENT))
    return path


@pytest.fixture
def fitted(monkeypatch):
    """The stage folders `Distiller.fit` trained in, in order."""
    stages: list[str] = []
    original = Distiller.fit

    def fit(self, *args, **kwargs):
        stages.append(self.run_dir.name if self.run_dir is not None else None)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Distiller, "fit", fit)
    return stages


def test_off_for_a_user_experiment_on_for_the_demo(experiment):
    assert load_config(experiment).baseline is False
    assert load_config(None).baseline is True  # the built-in demo's preset asks for it
    assert load_config(experiment, ["baseline=true"]).baseline is True


@pytest.mark.slow
def test_a_second_run_reuses_the_baseline_and_other_epochs_do_not(tmp_path, experiment, fitted, capsys):
    # first run: `kdistill run --baseline` trains the scratch student and keeps it beside the run directory
    code = cli.main(["run", str(experiment), "--baseline", "--no-progress", "--output-dir", str(tmp_path / "a")])
    assert code == 0
    assert fitted == ["teacher", "student-scratch", "student-distilled"]
    first = tmp_path / "a" / "student-scratch"
    info = json.loads((first / "baseline.json").read_text())
    assert info["reused"] is False
    store = tmp_path / ".baselines" / info["digest"]
    assert (store / "student.pt").read_bytes() == (first / "student.pt").read_bytes()
    assert "student (scratch)" in capsys.readouterr().out

    # same data, student, training and seed: copied, not trained
    fitted.clear()
    config = load_config(experiment, ["baseline=true"])
    second = run_experiment(config, tmp_path / "b", progress=False)
    assert fitted == ["teacher", "student-distilled"]
    reused = tmp_path / "b" / "student-scratch"
    for name in ("student.pt", "metrics.jsonl", "stage.json"):
        assert (reused / name).read_bytes() == (first / name).read_bytes(), name
    assert json.loads((reused / "baseline.json").read_text())["reused"] is True
    first_results = json.loads((tmp_path / "a" / "results.json").read_text())["rows"]
    scratch = next(r for r in first_results if r["role"] == "student (scratch)")
    assert second.by_role("student (scratch)").accuracy == scratch["accuracy"]
    assert "was not trained in this run" in (tmp_path / "b" / "report.md").read_text()
    # resuming the finished run loads its (reused) stage: nothing trains
    fitted.clear()
    run_experiment(config, tmp_path / "b", resume=True, progress=False)
    assert fitted == []

    # other epochs: another digest, so the scratch student trains again
    fitted.clear()
    longer = load_config(experiment, ["baseline=true", "training.epochs=2"])
    assert baseline_digest(baseline_inputs(longer, None, None)) != baseline_digest(baseline_inputs(config, None, None))
    run_experiment(longer, tmp_path / "c", progress=False)
    assert fitted == ["teacher", "student-scratch", "student-distilled"]
    other = tmp_path / "c" / "student-scratch"
    assert json.loads((other / "baseline.json").read_text())["reused"] is False
    assert len((other / "metrics.jsonl").read_text().splitlines()) == 2
    assert (other / "student.pt").read_bytes() != (first / "student.pt").read_bytes()
    assert len(list((tmp_path / ".baselines").iterdir())) == 2


def test_the_digest_covers_data_student_training_and_seed_only(experiment, tmp_path):
    base = load_config(experiment, ["baseline=true"])
    digest = baseline_digest(baseline_inputs(base, None, None))
    same = [f"output_dir={tmp_path / 'elsewhere'}", "name=other", "methods=[{name: hard_label}]",
            "teacher.options.hidden=[64]", "strategy.name=born_again", f"baselines_dir={tmp_path}"]
    for override in same:
        assert baseline_digest(baseline_inputs(load_config(experiment, [override]), None, None)) == digest, override
    # fields added later are left out while unset, so baselines stored before them keep their digests
    later = {"vocabulary", "vocabulary_size", "vocabulary_fallback"}
    assert later.isdisjoint(baseline_inputs(base, None, None)["student"])
    for override in ("seed=1", "student.options.hidden=[24]", "data.batch_size=64", "training.optimizer.lr=0.02",
                     "student.vocabulary=training"):
        assert baseline_digest(baseline_inputs(load_config(experiment, [override]), None, None)) != digest, override
    trimmed = baseline_digest(baseline_inputs(load_config(experiment, ["student.vocabulary=training"]), None, None))
    nearest = load_config(experiment, ["student.vocabulary=training", "student.vocabulary_fallback=nearest"])
    assert baseline_digest(baseline_inputs(nearest, None, None)) != trimmed
