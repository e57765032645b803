"""Strategies are plugins: a user's strategy by `module:attr` from YAML, and one rule for every stage (fit_or_load)."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
import yaml

from kdistill.config import ConfigError, load_config
from kdistill.experiment import run_experiment
from kdistill.models import build_model
from kdistill.strategies import STRATEGIES, StageExists, StageMismatch, fit_or_load, resolve_strategy, weights_digest

USER_STRATEGY = '''
"""A user's own strategy: the config's methods, then a second round taught by the first round's student."""

from kdistill.results import DISTILLED
from kdistill.strategies import strategy

CALLS = []


@strategy(options=("second_round_epochs",))
def two_rounds(ctx):
    CALLS.append(sorted(ctx.options.items()))
    first = ctx.build_student()
    ctx.fit_stage("round-1", first)
    first.eval()
    second = ctx.build_student(seed=ctx.student_seed + 1)
    training = ctx.config.training.model_copy(update={"epochs": ctx.options["second_round_epochs"]})
    ctx.fit_stage("round-2", second, ctx.fresh_methods(), teacher=first, teacher_name="round-1", training=training,
                  record={"note": "second round"})
    if not ctx.is_main:
        return []
    return [ctx.profile("round 1", first), ctx.profile(DISTILLED, second)]


def plain(ctx):
    return []
'''


def experiment_yaml(tmp_path, strategy: dict) -> str:
    raw = {
        "name": "plugin",
        "data": {"name": "digits", "batch_size": 128},
        "teacher": {"name": "mlp", "options": {"hidden": [32]},
                    "training": {"epochs": 3, "optimizer": {"name": "adamw", "lr": 0.01}}},
        "student": {"name": "mlp", "options": {"hidden": [16]}},
        "methods": [{"name": "soft_target", "weight": 0.9, "temperature": 4}, {"name": "hard_label", "weight": 0.1}],
        "training": {"epochs": 2, "optimizer": {"name": "adamw", "lr": 0.01}},
        "strategy": strategy,
    }
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "my_kd_strategies.py").write_text(textwrap.dedent(USER_STRATEGY))
    monkeypatch.syspath_prepend(str(folder))
    yield "my_kd_strategies"
    import sys

    sys.modules.pop("my_kd_strategies", None)


def test_user_strategy_from_yaml_runs_end_to_end_and_resumes(tmp_path, user_module):
    path = experiment_yaml(tmp_path, {"name": f"{user_module}:two_rounds", "second_round_epochs": 1})
    config = load_config(path)
    assert config.baseline is False  # a user's experiment: no scratch baseline unless asked
    result = run_experiment(config, tmp_path / "run", progress=False)
    assert [row.role for row in result.rows] == ["teacher", "round 1", "student (distilled)"]
    assert result.by_role("round 1").accuracy > 0.5
    run = tmp_path / "run"
    assert not (run / "student-scratch").exists()
    first = json.loads((run / "round-1" / "stage.json").read_text())
    second = json.loads((run / "round-2" / "stage.json").read_text())
    assert first["teacher"] == ["mlp"] and first["epochs"] == 2
    assert first["methods"] == ["soft_target", "hard_label"]
    teacher = build_model("mlp", 10, (1, 8, 8), {"hidden": [32]})
    teacher.load_state_dict(torch.load(run / "teacher" / "student.pt", weights_only=True))
    assert first["teacher_weights"] == weights_digest(teacher)
    assert second["teacher"] == "round-1" and second["epochs"] == 1 and second["note"] == "second round"
    assert second["teacher_weights"] == weights_digest(result_model(run / "round-1"))
    assert len((run / "round-2" / "metrics.jsonl").read_text().splitlines()) == 1
    module = __import__(user_module)
    assert module.CALLS == [[("second_round_epochs", 1)]]

    # resumed: every stage is done, so every stage is loaded, and the table is the same
    again = run_experiment(load_config(run / "config.yaml"), run, resume=True, progress=False)
    assert [r.accuracy for r in again.rows] == [r.accuracy for r in result.rows]
    # the resolved config keeps the user's strategy and its option
    assert yaml.safe_load((run / "config.yaml").read_text())["strategy"]["second_round_epochs"] == 1


def result_model(stage_dir):
    model = build_model("mlp", 10, (1, 8, 8), {"hidden": [16]})
    model.load_state_dict(torch.load(stage_dir / "student.pt", weights_only=True))
    return model


def test_user_strategy_config_errors(tmp_path, user_module):
    with pytest.raises(ConfigError) as error:
        load_config(experiment_yaml(tmp_path, {"name": f"{user_module}:two_rounds", "second_round_epoch": 1}))
    assert error.value.problems == ["strategy.second_round_epoch: not an option of strategy "
                                    f"'{user_module}:two_rounds'; accepted: second_round_epochs"]
    with pytest.raises(ConfigError) as error:
        load_config(experiment_yaml(tmp_path, {"name": f"{user_module}:no_such"}))
    assert error.value.problems[0].startswith(f"strategy.name: module '{user_module}' has no attribute 'no_such'")
    with pytest.raises(ConfigError) as error:
        load_config(experiment_yaml(tmp_path, {"name": "teacher-assistant"}))
    assert error.value.problems == ["strategy.assistants: teacher_assistant needs at least one assistant model"]
    with pytest.raises(ConfigError) as error:
        load_config(experiment_yaml(tmp_path, {"name": "mutal"}))
    assert len(error.value.problems) == 1 and "did you mean 'mutual'" in error.value.problems[0]
    # a plain function is a strategy with the defaults
    assert load_config(experiment_yaml(tmp_path, {"name": f"{user_module}:plain"})).strategy.name.endswith(":plain")
    assert resolve_strategy(f"{user_module}:plain").needs_teacher


def test_builtin_strategies_are_registered_whatever_was_imported():
    assert sorted(STRATEGIES) == ["born_again", "mutual", "standard", "teacher_assistant"]
    assert resolve_strategy("standard").teacher_cache and not resolve_strategy("mutual").needs_teacher


# fit_or_load: one rule for every stage --------------------------------------------------------------------
def _done_stage(stage_dir, model, record):
    stage_dir.mkdir(parents=True)
    torch.save(model.state_dict(), stage_dir / "student.pt")
    (stage_dir / "stage.json").write_text(json.dumps(record))
    (stage_dir / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val/acc": 0.5}) + "\n")


def _never():
    raise AssertionError("a done stage must not build a Distiller")


def test_fit_or_load_loads_a_done_stage_and_refuses_another_teacher(tmp_path):
    torch.manual_seed(0)
    trained = build_model("mlp", 10, (1, 8, 8), {"hidden": [8]})
    record = {"teacher": "teacher", "teacher_weights": "abc", "epochs": 2, "methods": ["soft_target"], "seed": 0}
    stage = tmp_path / "stage"
    _done_stage(stage, trained, record)
    fresh = build_model("mlp", 10, (1, 8, 8), {"hidden": [8]})
    outcome = fit_or_load(stage, fresh, _never, None, None, 2, resume=True, record=record)
    assert not outcome.trained and outcome.history == [{"epoch": 1, "val/acc": 0.5}]
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), trained.state_dict().values(),
                                                 strict=True))
    with pytest.raises(StageMismatch, match="teacher_weights='abc'.*teacher_weights='other'"):
        fit_or_load(stage, fresh, _never, None, None, 2, resume=True, record={**record, "teacher_weights": "other"})
    with pytest.raises(StageExists, match="resume=True"):  # never overwritten without resume
        fit_or_load(stage, fresh, _never, None, None, 2, resume=False, record=record)


def test_fit_or_load_refuses_to_resume_an_interrupted_stage_against_another_teacher(tmp_path):
    stage = tmp_path / "stage"
    (stage / "checkpoints").mkdir(parents=True)
    (stage / "checkpoints" / "last.pt").write_bytes(b"not read")
    record = {"teacher": ["cnn"], "teacher_weights": "abc", "epochs": 2, "methods": ["soft_target"], "seed": 0}
    (stage / "stage.json").write_text(json.dumps(record))
    model = build_model("mlp", 10, (1, 8, 8), {"hidden": [8]})
    with pytest.raises(StageMismatch, match="teacher_weights"):
        fit_or_load(stage, model, _never, None, None, 2, resume=True, record={**record, "teacher_weights": "xyz"})
    with pytest.raises(StageExists):
        fit_or_load(stage, model, _never, None, None, 2, resume=False, record=record)


def test_resuming_a_run_whose_teacher_checkpoint_changed_is_refused(tmp_path):
    """The experiment's stages record their teacher's weights: a resume against other weights is an error."""
    checkpoint = tmp_path / "teacher.pt"
    torch.manual_seed(1)
    torch.save(build_model("mlp", 10, (1, 8, 8), {"hidden": [32]}).state_dict(), checkpoint)
    path = experiment_yaml(tmp_path, {"name": "standard"})
    config = load_config(path, [f"teacher.checkpoint={checkpoint}", "training.epochs=1"])
    run_experiment(config, tmp_path / "run", progress=False)
    torch.manual_seed(2)
    torch.save(build_model("mlp", 10, (1, 8, 8), {"hidden": [32]}).state_dict(), checkpoint)
    with pytest.raises(ConfigError, match="student-distilled: this stage was started with teacher_weights="):
        run_experiment(load_config(tmp_path / "run" / "config.yaml"), tmp_path / "run", resume=True, progress=False)
