"""The Python API's arguments: forms that mean one thing are taken (and train); anything else is a
clear error at the call, naming the argument, what was given and what to give, before any work."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kdistill import Distiller, OptimizerSettings, ScheduleSettings
from kdistill.engine.cache import CacheSettings
from kdistill.errors import BadInput
from kdistill.methods import DKD, HardLabel, SoftTarget, build_method
from kdistill.models import build_model


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", 10, (1, 8, 8), {"hidden": [16]})


def distiller(teacher=None, student=None, methods=None, **kwargs) -> Distiller:
    kwargs = {"batch_size": 64, "device": "cpu", "progress": False, **kwargs}
    return Distiller(teacher, student if student is not None else mlp(1),
                     methods if methods is not None else [HardLabel()], **kwargs)


def trains_one_epoch(run: Distiller, train) -> None:
    history = run.fit(train, epochs=1)
    assert len(history) == 1 and math.isfinite(history[0]["train/loss"])


# 1. optimiser and schedule ------------------------------------------------------------------------
def test_optimizer_and_schedule_as_dicts_train(digits):
    _, train, _ = digits
    run = distiller(mlp(), methods=[SoftTarget(), HardLabel()], optimizer={"name": "adam", "lr": 1e-3},
                    schedule={"name": "constant", "warmup_epochs": 0})
    assert run.optimizer_settings == OptimizerSettings(name="adam", lr=1e-3)
    assert run.schedule_settings == ScheduleSettings(name="constant")
    trains_one_epoch(run, train)
    assert isinstance(run.optimizer, torch.optim.Adam) and run.optimizer.param_groups[0]["lr"] == 1e-3


def test_optimizer_and_schedule_by_name():
    assert OptimizerSettings.model_fields["lr"].default == 0.1  # a name alone is complete: lr has a default
    run = distiller(optimizer="adam", schedule="cosine")
    assert run.optimizer_settings == OptimizerSettings(name="adam")
    assert run.schedule_settings == ScheduleSettings(name="cosine")
    assert distiller().optimizer_settings == OptimizerSettings()  # None: the defaults, as before


def test_a_torch_optimizer_or_scheduler_is_refused_with_what_to_give():
    model = mlp(1)
    adam = torch.optim.Adam(model.parameters())
    with pytest.raises(BadInput) as error:
        distiller(student=model, optimizer=adam)
    message = str(error.value)
    assert message.startswith("optimizer: give kdistill.OptimizerSettings(name=..., lr=...) or a dict of its fields")
    assert "so that it can checkpoint and resume it (got torch.optim.adam.Adam)" in message
    with pytest.raises(BadInput, match=r"^optimizer: .*\(got the class torch\.optim\.adam\.Adam\)"):
        distiller(optimizer=torch.optim.Adam)
    with pytest.raises(BadInput, match=r"^schedule: give kdistill\.ScheduleSettings.*\(got "
                                       r"torch\.optim\.lr_scheduler\.StepLR\)"):
        distiller(schedule=torch.optim.lr_scheduler.StepLR(adam, 1))
    with pytest.raises(BadInput, match=r"^optimizer: .*\(got 0\.001\)"):
        distiller(optimizer=1e-3)


def test_a_bad_field_of_a_settings_dict_is_named():
    with pytest.raises(BadInput, match=r"^optimizer\.lr: Input should be greater than 0 \(got -1\)"):
        distiller(optimizer={"name": "adam", "lr": -1})
    with pytest.raises(BadInput, match=r"^schedule\.warmup_epochs: .*greater than or equal to 0 \(got -2\)"):
        distiller(schedule={"name": "cosine", "warmup_epochs": -2})


# 2. teacher cache ---------------------------------------------------------------------------------
def test_teacher_cache_as_a_path_or_a_dict(digits, tmp_path):
    _, train, _ = digits
    for given in (str(tmp_path / "a"), tmp_path / "b", {"directory": tmp_path / "c", "dtype": "float32"}):
        run = distiller(mlp(), methods=[SoftTarget(), HardLabel()], teacher_cache=given)
        assert isinstance(run.cache_settings, CacheSettings) and run.cache_settings.directory is not None
    assert run.cache_settings.dtype == "float32"
    assert distiller(mlp(), methods=[SoftTarget()], teacher_cache=False).cache_settings is None
    run = distiller(mlp(), methods=[SoftTarget(), HardLabel()], teacher_cache=str(tmp_path / "cache"))
    trains_one_epoch(run, train)
    assert run.cache is not None and run.cache.is_complete()
    assert run.cache_settings.directory == Path(tmp_path / "cache")


def test_teacher_cache_true_asks_for_a_directory():
    with pytest.raises(BadInput) as error:
        distiller(mlp(), methods=[SoftTarget()], teacher_cache=True)
    message = str(error.value)
    assert message.startswith("teacher_cache: give the directory")
    assert "CacheSettings('runs/cache'" in message and message.endswith("(got True)")
    with pytest.raises(BadInput, match=r"^teacher_cache\.dir: Extra inputs are not permitted"):
        distiller(mlp(), methods=[SoftTarget()], teacher_cache={"dir": "x"})


# 3. and 4. numbers --------------------------------------------------------------------------------
@pytest.mark.parametrize(("argument", "value", "expected"), [
    ("batch_size", 32.0, "batch_size: must be an integer >= 1 (got 32.0)"),
    ("batch_size", "32", "batch_size: must be an integer >= 1 (got '32')"),
    ("batch_size", True, "batch_size: must be an integer >= 1 (got True)"),
    ("batch_size", 0, "batch_size: must be an integer >= 1 (got 0)"),
    ("eval_batch_size", 0.5, "eval_batch_size: must be an integer >= 1 (got 0.5)"),
    ("num_workers", -1, "num_workers: must be an integer >= 0 (got -1)"),
    ("seed", "0", "seed: must be an integer (got '0')"),
    ("accumulate_steps", True, "accumulate_steps: must be an integer >= 1 (got True)"),
    ("eval_every_steps", 2.5, "eval_every_steps: must be an integer >= 1, or None (got 2.5)"),
    ("checkpoint_every_steps", 0, "checkpoint_every_steps: must be an integer >= 1, or None (got 0)"),
    ("grad_clip", -1.0, "grad_clip: must be a number > 0 (the largest gradient norm), or None for no clipping "
                        "(got -1.0)"),
    ("grad_clip", 0, "grad_clip: must be a number > 0"),
    ("grad_clip", math.nan, "grad_clip: must be a number > 0"),
    ("grad_clip", math.inf, "grad_clip: must be a number > 0"),
    ("grad_clip", "1", "grad_clip: must be a number > 0"),
])
def test_bad_numbers_are_refused_at_the_call(argument, value, expected):
    with pytest.raises(BadInput) as error:
        distiller(**{argument: value})
    assert str(error.value).startswith(expected)


def test_good_numbers_are_taken(digits):
    _, train, _ = digits
    run = distiller(batch_size=np.int64(64), grad_clip=1, eval_every_steps=None, num_workers=0, seed=3)
    trains_one_epoch(run, train)
    assert run.batch_size == 64 and run.grad_clip == 1


# 5. and 6. methods, teacher and student -----------------------------------------------------------
def test_one_method_without_a_list_trains(digits):
    _, train, _ = digits
    run = distiller(mlp(), methods=SoftTarget(weight=1.0))
    assert [m.name for m in run.methods] == ["soft_target"]
    trains_one_epoch(run, train)


def test_a_non_method_element_is_named_by_index():
    with pytest.raises(BadInput, match=r"^methods\[1\]: not a kdistill Method \(got 'hard_label'\)"):
        distiller(mlp(), methods=[SoftTarget(), "hard_label"])
    with pytest.raises(BadInput, match=r"^methods\[0\]: not a kdistill Method "
                                       r"\(got torch\.nn\.modules\.linear\.Linear\)"):
        distiller(methods=[nn.Linear(2, 2)])
    with pytest.raises(BadInput, match=r"^methods: give a list of kdistill methods.*\(got 'soft_target'\)"):
        distiller(mlp(), methods="soft_target")


def test_no_methods_with_a_teacher_is_refused_and_without_one_trains_on_labels(digits):
    _, train, _ = digits
    with pytest.raises(BadInput, match=r"teacher would go unused; give at least one method, "
                                       r"e\.g\. \[SoftTarget\(\), HardLabel\(\)\]"):
        distiller(mlp(), methods=[])
    with pytest.raises(BadInput, match="teacher would go unused"):
        Distiller(mlp(), mlp(1), device="cpu", progress=False)  # the default, no methods
    scratch = distiller(None, methods=[])  # unchanged: training from scratch on the labels
    assert [m.name for m in scratch.methods] == ["hard_label"]
    trains_one_epoch(scratch, train)


def test_the_student_cannot_be_a_teacher():
    model = mlp()
    with pytest.raises(BadInput, match=r"^teacher and the student are the same module; the teacher is frozen"):
        distiller(model, model, [SoftTarget()])
    with pytest.raises(BadInput, match=r"^teacher 1 and the student are the same module"):
        distiller([mlp(2), model], model, [SoftTarget()])
    with pytest.raises(BadInput, match=r"^teacher and the student share trainable parameters"):
        distiller(model, nn.Sequential(model, nn.Linear(10, 10)), [SoftTarget()])


def test_a_student_may_share_a_frozen_stem_with_its_teacher(digits):
    _, train, _ = digits
    torch.manual_seed(0)
    stem = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU()).requires_grad_(False)
    teacher, student = nn.Sequential(stem, nn.Linear(32, 10)), nn.Sequential(stem, nn.Linear(32, 10))
    trains_one_epoch(distiller(teacher, student, [SoftTarget(), HardLabel()]), train)


# 7. epochs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("epochs", [-1, 0, 2.0, True, "3"])
def test_bad_epochs_are_refused_before_any_work(digits, tmp_path, epochs):
    _, train, _ = digits
    run = distiller(run_dir=tmp_path / "run")
    with pytest.raises(BadInput, match=rf"^epochs: must be an integer >= 1 \(got {epochs!r}\)"):
        run.fit(train, epochs=epochs)
    assert not (tmp_path / "run").exists() and run.optimizer is None


# 8. method options --------------------------------------------------------------------------------
@pytest.mark.parametrize(("make", "expected"), [
    (lambda: SoftTarget(weight=math.inf), "weight: must be a finite number (got inf)"),
    (lambda: HardLabel(weight=math.nan), "weight: must be a finite number (got nan)"),
    (lambda: SoftTarget(temperature=math.inf), "temperature: must be a finite number (got inf)"),
    (lambda: SoftTarget(temperature="4"), "temperature: must be a number (got str '4'); write 4, without quotes"),
    (lambda: SoftTarget(weight=None), "weight: must be a number (got NoneType None)"),
    (lambda: DKD(alpha="one"), "alpha: must be a number (got str 'one')"),
    (lambda: SoftTarget(temperature=True), "temperature: must be a number (got bool True)"),
])
def test_bad_method_options_are_named(make, expected):
    with pytest.raises(BadInput) as error:
        make()
    assert str(error.value) == expected


def test_method_options_from_a_config_are_named_too():
    with pytest.raises(ValueError, match=r"^temperature: must be a number \(got str '4'\); write 4, without quotes"):
        build_method("soft_target", {"temperature": "4"})
    assert SoftTarget(weight=np.float32(0.5), temperature=2).temperature == 2.0  # numbers of any kind
    assert HardLabel(weight=0).weight == 0.0
