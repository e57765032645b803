"""The `tune:` section and its search space: valid spaces parse and set the right fields; a bad path,
bad bounds or a bound the field refuses is one `field: fix` line, before any trial runs."""

from __future__ import annotations

import subprocess
import sys

import optuna
import pytest
import yaml

from kdistill.config import validate
from kdistill.config_error import ConfigError
from kdistill.errors import BadInput
from kdistill.tune.space import check_space, with_params
from kdistill.tune.study import search_plan


def experiment(space: dict, **tune) -> dict:
    return {"name": "space", "data": {"name": "digits"}, "teacher": {"name": "mlp", "options": {"hidden": [8]}},
            "student": {"name": "mlp", "options": {"hidden": [8]}},
            "methods": [{"name": "soft_target", "weight": 0.9, "temperature": 4.0}, {"name": "hard_label",
                                                                                       "weight": 0.1}],
            "training": {"epochs": 1, "optimizer": {"name": "sgd", "lr": 0.1}},
            "tune": {"space": space, **tune}}


def problems(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        search_plan(raw)
    return caught.value.problems


def test_valid_space_sets_the_addressed_fields():
    raw = experiment({"methods[0].temperature": {"low": 1, "high": 8},
                      "training.optimizer.lr": {"low": 1e-3, "high": 1e-1, "log": True},
                      "methods.1.weight": {"choices": [0.1, 0.3]},
                      "training.epochs": {"low": 1, "high": 4, "integer": True}})
    spec, dimensions = search_plan(raw)
    assert [d.path for d in dimensions] == list(raw["tune"]["space"])
    assert spec.resolved_direction() == "maximize" and spec.metric == "val/acc"
    values = {"methods[0].temperature": 2.5, "training.optimizer.lr": 0.02, "methods.1.weight": 0.3,
              "training.epochs": 3}
    trial = optuna.trial.FixedTrial(values)
    params = {d.path: d.suggest(trial) for d in dimensions}
    assert params == values
    config = validate(with_params(raw, params))
    assert config.methods[0].options()["temperature"] == 2.5
    assert config.methods[1].options()["weight"] == 0.3
    assert config.training.optimizer.lr == 0.02 and config.training.epochs == 3
    assert raw["methods"][0]["temperature"] == 4.0  # the experiment itself is not changed


def test_a_path_that_is_not_a_field_is_one_line():
    found = problems(experiment({"training.optimiser.lr": {"low": 1e-3, "high": 1e-1}}))
    assert len(found) == 1
    assert found[0].startswith("tune.space['training.optimiser.lr']: ")
    assert "'training.optimiser' is not a field" in found[0]


@pytest.mark.parametrize("path", ["data.val_fraction", "data.options.test_fraction", "data.train_limit"])
def test_data_fields_are_not_searchable(path):
    # a trial's data settings are rewritten into the sealed validation set-up; searching them would
    # either break every trial or change nothing, and trials must share one validation split
    found = problems(experiment({path: {"choices": [0.1, 0.3]}}))
    assert len(found) == 1 and found[0].startswith(f"tune.space['{path}']: data fields cannot be searched")


def test_an_item_beyond_the_list_is_one_line():
    found = problems(experiment({"methods[5].temperature": {"low": 1, "high": 8}}))
    assert len(found) == 1 and "out of range" in found[0] and found[0].startswith("tune.space['methods[5]")


def test_a_bound_the_field_refuses_names_field_and_value():
    found = problems(experiment({"methods[0].temperature": {"low": 0, "high": 8}}))
    assert len(found) == 1
    assert "methods[0].temperature=0" in found[0] and "temperature" in found[0]


@pytest.mark.parametrize(("dimension", "expected"), [
    ({"low": 8, "high": 1}, "low must be below high"),
    ({"low": 0, "high": 1, "log": True}, "log range needs low > 0"),
    ({"low": 1, "high": 8, "choices": [1, 2]}, "either choices"),
    ({"choices": []}, "choices is empty"),
    ({"low": 1}, "give low and high"),
    ({"low": 1, "high": 8, "lo": 3}, "unknown key"),
])
def test_bad_bounds_are_one_line_naming_the_field(dimension, expected):
    with pytest.raises(ConfigError) as caught:
        validate(experiment({"methods[0].temperature": dimension}))
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith("tune.space.methods[0].temperature")
    assert expected in caught.value.problems[0]


def test_the_metric_must_be_a_validation_metric():
    with pytest.raises(ConfigError) as caught:
        validate(experiment({"methods[0].temperature": {"low": 1, "high": 8}}, metric="test/acc"))
    assert caught.value.problems == [caught.value.problems[0]] and "tune.metric" in caught.value.problems[0]
    assert "never scores on the test set" in caught.value.problems[0]
    # a misspelt one was found only after a whole trial (teacher included) had trained
    with pytest.raises(ConfigError) as caught:
        validate(experiment({"methods[0].temperature": {"low": 1, "high": 8}}, metric="val/accuracy"))
    assert "'val/accuracy' is not a metric of the validation evaluation; did you mean val/acc?" in \
        caught.value.problems[0]
    with_callback = experiment({"methods[0].temperature": {"low": 1, "high": 8}}, metric="val/f1")
    with_callback["training"]["callbacks"] = ["helpers:StageSteps"]  # a callback may add val/f1
    validate(with_callback)


def test_no_tune_section_is_bad_input():
    raw = experiment({})
    del raw["tune"]
    with pytest.raises(BadInput, match="no tune: section"):
        search_plan(raw)


def test_check_space_leaves_good_paths_alone():
    raw = experiment({"methods[0].temperature": {"low": 1, "high": 8}})
    dims = check_space(raw, validate(raw).tune)
    assert dims[0].extremes() == [1.0, 8.0]


def test_cli_prints_one_line_and_exits_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(experiment({"training.optimiser.lr": {"low": 1e-3, "high": 1e-1}})))
    done = subprocess.run([sys.executable, "-m", "kdistill.cli", "tune", str(path), "--output-dir",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "tune.space['training.optimiser.lr']" in lines[0], done.stderr
    assert not (tmp_path / "out").exists()  # nothing created for a search that cannot start
