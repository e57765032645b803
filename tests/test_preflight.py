"""Checks before any work (issue 9, item 1): option types, taps, outputs, labels; models left as they came."""

from __future__ import annotations

import os
import sys
import time

import pytest
import torch

from kdistill.config import ConfigError, load_config
from kdistill.data.transforms import Normalize
from kdistill.experiment import run_experiment
from kdistill.methods import Hint, SoftTarget
from kdistill.models import build_model
from kdistill.option_types import matches, option_type_problems
from kdistill.registry import import_attribute
from kdistill.run.preflight import Model, label_problems, preflight

TINY = {"name": "t", "data": {"name": "digits", "batch_size": 32}, "training": {"epochs": 1},
        "teacher": {"name": "cnn", "options": {"channels": [8, 16]}, "training": {"epochs": 1}},
        "student": {"name": "mlp", "options": {"hidden": [16]}}}


def config_with(methods, **changes):
    return load_config(None, values={**TINY, "methods": methods, **changes})


# option types -------------------------------------------------------------------------------------------
def test_option_types_follow_the_constructor_hints():
    assert option_type_problems(SoftTarget, {"temperature": "abc"}) == ["temperature: must be a number (got 'abc')"]
    assert option_type_problems(SoftTarget, {"temperature": 4, "weight": 0.5}) == []  # YAML ints are numbers
    assert option_type_problems(SoftTarget, {"temperature": True}) == ["temperature: must be a number (got True)"]
    assert option_type_problems(Hint, {"teacher": 1.5})[0].startswith("teacher: must be an integer")
    assert matches("layer3", list[str])  # one layer where a list is taken: the methods accept it
    assert not matches([1, 2], list[str])
    assert matches(None, float | None) and not matches("x", float | None)


def test_a_string_temperature_is_named_by_the_config():
    with pytest.raises(ConfigError) as error:
        config_with([{"name": "soft_target", "temperature": "abc"}])
    assert error.value.problems == ["methods[0].temperature: must be a number (got 'abc')"]


# modules in the working directory ------------------------------------------------------------------------
def test_module_factory_is_found_in_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "kd_cwd_plugin.py").write_text("def make():\n    return 42\n")
    monkeypatch.chdir(tmp_path)
    # as under the `kdistill` console script: neither '' nor the directory is on the path
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd(), str(tmp_path))])
    monkeypatch.delitem(sys.modules, "kd_cwd_plugin", raising=False)
    assert import_attribute("kd_cwd_plugin:make")() == 42


# the dry forward --------------------------------------------------------------------------------------
def models(teacher_classes=10):
    teacher = build_model("cnn", teacher_classes, (1, 8, 8), {"channels": [8, 16]})
    student = build_model("mlp", 10, (1, 8, 8), {"hidden": [16]})
    return teacher, student


def run_preflight(config, teacher, student, bundle, train):
    norm = Normalize(bundle.mean, bundle.std)
    from kdistill.run.build import build_methods

    preflight(config, bundle, train, [Model("teacher", teacher, norm, 10)], None, build_methods(config),
              Model("student", student, norm, 10))


def test_preflight_leaves_the_models_and_the_rng_as_they_were(digits):
    bundle, train, _ = digits
    config = config_with([{"name": "hint", "student_layer": "hidden.0", "teacher_layer": "head:input"},
                          {"name": "rkd", "student_layer": "head:input", "teacher_layer": "head:input"}])
    teacher, student = models()
    teacher.train()
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (teacher, student)]
    rng = torch.get_rng_state()
    run_preflight(config, teacher, student, bundle, train)
    assert teacher.training and student.training
    assert torch.equal(torch.get_rng_state(), rng)
    for model, state in zip((teacher, student), before, strict=True):
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # BatchNorm stats too
        assert not any(m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("method, expected", [
    ({"name": "rkd", "student_layer": "hidden", "teacher_layer": "pool"},
     "methods[0].student_layer: 'hidden' exists in student (MLP) but does not run"),
    ({"name": "rkd", "student_layer": "hiden.0", "teacher_layer": "pool"},
     "methods[0].student_layer: student (MLP) has no module 'hiden.0'; closest: hidden.0"),
    ({"name": "sp", "student_layers": ["hidden.0"], "teacher_layers": ["featurs"]},
     "methods[0].teacher_layers: teacher (SmallCNN) has no module 'featurs'; closest: features"),
    ({"name": "hint", "student_layer": "hidden.0", "teacher_layer": "features"},
     "methods[0] (hint, student <- teacher): ValueError: cannot adapt student 'hidden.0' of shape (16, 16)"),
])
def test_preflight_names_the_method_field_and_the_layer(digits, method, expected):
    bundle, train, _ = digits
    teacher, student = models()
    with pytest.raises(ConfigError) as error:
        run_preflight(config_with([method]), teacher, student, bundle, train)
    assert any(p.startswith(expected) for p in error.value.problems), error.value.problems


def test_an_unrun_student_layer_does_not_blame_a_teacher_layer_that_ran(digits):
    """The teacher's outputs are read (and cleared) before the student's forward fails: its layers
    ran and must not be reported as "does not run"."""
    bundle, train, _ = digits
    teacher, student = models()
    method = {"name": "rkd", "student_layer": "hidden", "teacher_layer": "features.0"}
    with pytest.raises(ConfigError) as error:
        run_preflight(config_with([method]), teacher, student, bundle, train)
    assert len(error.value.problems) == 1, error.value.problems
    assert error.value.problems[0].startswith("methods[0].student_layer: 'hidden' exists in student (MLP)")


def test_preflight_counts_the_teachers_outputs(digits):
    bundle, train, _ = digits
    teacher, student = models(teacher_classes=100)
    with pytest.raises(ConfigError, match=r"teacher: outputs logits of shape \(16, 100\).* 10 classes"):
        run_preflight(config_with([{"name": "soft_target"}]), teacher, student, bundle, train)


def test_labels_must_be_class_indices():
    assert label_problems(torch.tensor([0, 3, 9]), 10, "training") == []
    assert "found 0..10" in label_problems(torch.tensor([0, 10]), 10, "training")[0]
    assert "found -1..2" in label_problems(torch.tensor([-1, 2]), 10, "test")[0]
    assert "integer class indices" in label_problems(torch.tensor([0.0, 1.0]), 10, "training")[0]


def test_a_misspelt_layer_stops_the_run_before_the_teacher_trains(tmp_path):
    config = config_with([{"name": "hint", "student_layer": "hidden.0", "teacher_layer": "featurs"}],
                         teacher={"name": "cnn", "training": {"epochs": 200}}, baseline=True)
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"methods\[0\].teacher_layer: .*closest: features"):
        run_experiment(config, tmp_path / "run", progress=False)
    assert time.perf_counter() - started < 60  # 200 teacher epochs would take minutes
    assert not (tmp_path / "run" / "teacher").exists() and not (tmp_path / "run" / "student-scratch").exists()


def test_born_again_checks_teacher_layers_on_the_students_architecture(digits):
    # `pool` exists in the CNN teacher, but generation 2 is taught by generation 1, an MLP
    config = config_with([{"name": "rkd", "student_layer": "hidden.0", "teacher_layer": "pool"}],
                         strategy={"name": "born_again", "generations": 2})
    bundle, train, _ = digits
    teacher, student = models()
    with pytest.raises(ConfigError, match=r"teacher_layer: student \(as the teacher of the next generation\)"):
        run_preflight(config, teacher, student, bundle, train)
