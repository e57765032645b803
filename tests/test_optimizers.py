"""Any torch.optim optimiser and lr_scheduler by name with its arguments, from YAML and from Python
alike (one set of settings models); bad arguments are refused before any training, naming the field."""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from helpers import StopAtStep, scheduled_lrs
from pydantic import ValidationError

import kdistill
import kdistill.engine
import kdistill.engine.cache
import kdistill.engine.optim
import kdistill.settings
from kdistill import Distiller, OptimizerSettings, ScheduleSettings, TrainingInterrupted
from kdistill.config import ConfigError, dump_config, load_config, validate
from kdistill.engine.optim import build_optimizer
from kdistill.experiment import Teachers, _cache_settings
from kdistill.methods import HardLabel
from kdistill.models import build_model
from kdistill.settings import CacheSettings


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))


def _optimizer_from_yaml(text: str) -> torch.optim.Optimizer:
    config = load_config(None, [f"training.optimizer={text}"])
    return build_optimizer(_model().parameters(), config.training.optimizer)


@pytest.mark.parametrize("text, cls, expected", [
    ("{name: adamw, lr: 1.0e-3, weight_decay: 0.05, betas: [0.9, 0.95]}", torch.optim.AdamW,
     {"lr": 1e-3, "weight_decay": 0.05, "betas": (0.9, 0.95), "eps": 1e-8}),
    ("{name: RMSprop, lr: 0.01, alpha: 0.9}", torch.optim.RMSprop,  # torch's defaults for the rest
     {"lr": 0.01, "alpha": 0.9, "momentum": 0, "weight_decay": 0, "centered": False}),
    ("{name: adam, lr: 0.002, amsgrad: true}", torch.optim.Adam,
     {"lr": 0.002, "amsgrad": True, "weight_decay": 0, "betas": (0.9, 0.999)}),
    ("{name: Adagrad, lr: 0.05, lr_decay: 0.001}", torch.optim.Adagrad, {"lr": 0.05, "lr_decay": 0.001}),
    # kdistill's defaults of the first version: lr 0.1, SGD momentum 0.9 and weight decay 5e-4, AdamW 5e-4
    ("{name: sgd}", torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False}),
    ("{name: SGD, lr: 0.05, momentum: 0.8, nesterov: true}", torch.optim.SGD,
     {"lr": 0.05, "momentum": 0.8, "weight_decay": 5e-4, "nesterov": True}),
    ("{name: ADAMW, lr: 0.003}", torch.optim.AdamW, {"lr": 0.003, "weight_decay": 5e-4, "betas": (0.9, 0.999)}),
])
def test_optimizer_from_yaml_is_the_torch_class_with_its_arguments(text, cls, expected):
    optimizer = _optimizer_from_yaml(text)
    assert type(optimizer) is cls
    group = optimizer.param_groups[0]
    for key, value in expected.items():
        assert group[key] == value, key
    assert len(group["params"]) == 4


@pytest.mark.parametrize("override, expected", [
    ("training.optimizer={name: adamw, momentum: 0.9}",
     "training.optimizer.momentum: not an argument of torch.optim.AdamW; it takes: lr, betas, eps, weight_decay"),
    ("training.optimizer={name: adamw, nesterov: true}", "training.optimizer.nesterov: not an argument of "
                                                         "torch.optim.AdamW"),
    ("training.optimizer={name: sgd, betas: [0.9, 0.99]}", "training.optimizer.betas: not an argument of "
                                                           "torch.optim.SGD"),
    ("training.optimizer={name: RMSprop, alfa: 0.9}", "training.optimizer.alfa: not an argument of "
                                                      "torch.optim.RMSprop; it takes: lr, alpha,"),
    ("training.optimizer={name: adamx}", "training.optimizer.name: unknown optimizer 'adamx'; did you mean 'Adamax'?"),
    ("training.optimizer={name: lbfgs}", "training.optimizer.name: optimizer 'LBFGS' is not supported: its step() "
                                         "needs a closure"),
    ("training.optimizer={name: adam, betas: [1.5, 0.9]}", "training.optimizer: torch.optim.Adam refused these "
                                                           "arguments: Invalid beta parameter at index 0: 1.5"),
    ("training.optimizer={name: sgd, lr: 0}", "training.optimizer.lr: Input should be greater than 0"),
    ("training.schedule={name: ExponentialLR}",
     "training.schedule.gamma: required by torch.optim.lr_scheduler.ExponentialLR; add it"),
    ("training.schedule={name: CosineAnnealingLR, T_mux: 3}",
     "training.schedule.T_mux: not an argument of torch.optim.lr_scheduler.CosineAnnealingLR; it takes: T_max"),
    ("training.schedule={name: CosineAnnealingLR, T_max: soon}",
     "training.schedule: torch.optim.lr_scheduler.CosineAnnealingLR refused these arguments"),
    ("training.schedule={name: ExponentialLR, gamma: 0.9, warmup_epochs: 1}",
     "training.schedule.warmup_epochs: the warm-up belongs to kdistill's own schedules"),
    ("training.schedule={name: ExponentialLR, gamma: 0.9, min_lr_ratio: 0.1}",
     "training.schedule.min_lr_ratio: only for the built-in cosine schedule"),
    ("training.schedule={name: ReduceLROnPlateau}",
     "training.schedule.name: schedule 'ReduceLROnPlateau' is not supported"),
    ("training.schedule={name: cosinus}", "training.schedule.name: unknown schedule 'cosinus'; did you mean 'cosine'?"),
    ("training.schedule={name: cosine, warmup_epoch: 1}",
     "training.schedule.warmup_epoch: unknown key for the built-in schedule 'cosine'"),
    ("training.schedule={name: cosine, interval: epoch}",
     "training.schedule.interval: the built-in schedule 'cosine' changes the learning rate at every optimiser step"),
    ("training.schedule={name: StepLR, step_size: 2, interval: batch}",
     "training.schedule.interval: Input should be 'step' or 'epoch'"),
    ("teacher.training.optimizer={name: adamw, momentum: 0.5}",
     "teacher.training.optimizer.momentum: not an argument of torch.optim.AdamW"),
])
def test_bad_arguments_are_config_errors_naming_the_field(override, expected):
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    assert any(line.startswith(expected) for line in error.value.problems), error.value.problems


def test_the_python_api_checks_the_same_way():
    with pytest.raises(ValidationError) as error:
        OptimizerSettings(name="adamw", lr=1e-3, momentum=0.9)
    assert [e["loc"] for e in error.value.errors()] == [("momentum",)]
    assert "not an argument of torch.optim.AdamW" in str(error.value)
    with pytest.raises(ValueError, match="unknown optimizer 'sgdd'"):
        OptimizerSettings(name="sgdd")
    settings = OptimizerSettings(name="RMSprop", lr=0.01, alpha=0.9)
    assert settings.alpha == 0.9 and settings.kwargs() == {"lr": 0.01, "alpha": 0.9}
    with pytest.raises(ValidationError, match="frozen"):
        settings.lr = 0.1


def test_yaml_and_python_share_one_set_of_models():
    assert kdistill.OptimizerSettings is kdistill.engine.OptimizerSettings is kdistill.engine.optim.OptimizerSettings \
        is kdistill.settings.OptimizerSettings
    assert kdistill.ScheduleSettings is kdistill.engine.optim.ScheduleSettings is kdistill.settings.ScheduleSettings
    assert kdistill.engine.cache.CacheSettings is kdistill.settings.CacheSettings
    config = load_config(None, ["training.optimizer={name: adamw, lr: 0.001, betas: [0.9, 0.95]}",
                                "training.schedule={name: OneCycleLR, max_lr: 0.1}"])
    assert config.training.optimizer == OptimizerSettings(name="adamw", lr=0.001, betas=(0.9, 0.95))
    assert config.training.schedule == ScheduleSettings(name="OneCycleLR", max_lr=0.1, interval="step")
    # the resolved config (what --resume reads back) validates to the same settings
    assert validate(yaml.safe_load(dump_config(config))) == config
    dumped = yaml.safe_load(dump_config(config))["training"]
    assert dumped["optimizer"] == {"name": "adamw", "lr": 0.001, "weight_decay": 5e-4, "betas": [0.9, 0.95]}
    assert dumped["schedule"]["interval"] == "step"


def test_builtin_schedule_settings_dump_as_the_first_version_did():
    """The fields and defaults of the first version's dataclass (benchmarks key recorded results by them)."""
    assert ScheduleSettings(name="cosine", warmup_steps=500).model_dump() == {
        "name": "cosine", "warmup_epochs": 0.0, "warmup_steps": 500, "step_size": 30, "milestones": [150, 180, 210],
        "gamma": 0.1, "min_lr_ratio": 0.0}
    assert OptimizerSettings(name="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4).model_dump() == {
        "name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}


def test_per_epoch_torch_scheduler_changes_the_lr_at_epoch_ends_only():
    config = load_config(None, ["training.schedule={name: ExponentialLR, gamma: 0.5, interval: epoch}"])
    settings = config.training.schedule
    lrs = scheduled_lrs(settings, epochs=4, steps_per_epoch=7)
    for epoch in range(4):
        assert lrs[epoch * 7: (epoch + 1) * 7] == pytest.approx([0.1 * 0.5 ** epoch] * 7, rel=1e-12)
    # every torch class but OneCycleLR / CyclicLR steps per epoch unless told otherwise
    assert ScheduleSettings(name="StepLR", step_size=2).interval == "epoch"
    lrs = scheduled_lrs(ScheduleSettings(name="steplr", step_size=2, gamma=0.1), epochs=5, steps_per_epoch=3)
    assert lrs[::3] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001], rel=1e-9)


def test_cosine_annealing_spans_the_run_in_the_intervals_units():
    # T_max not given: the run's length, 4 epochs per epoch, 4 * 5 steps per step
    lrs = scheduled_lrs(ScheduleSettings(name="CosineAnnealingLR", eta_min=0.01), epochs=4, steps_per_epoch=5)
    for epoch in range(4):
        assert lrs[epoch * 5] == pytest.approx(0.01 + 0.09 * (1 + math.cos(math.pi * epoch / 4)) / 2, rel=1e-9)
    lrs = scheduled_lrs(ScheduleSettings(name="CosineAnnealingLR", interval="step"), epochs=4, steps_per_epoch=5)
    assert lrs == pytest.approx([0.1 * (1 + math.cos(math.pi * s / 20)) / 2 for s in range(20)], rel=1e-6, abs=1e-12)


def test_one_cycle_runs_per_step_over_the_whole_run():
    settings = ScheduleSettings(name="OneCycleLR", max_lr=0.1)
    assert settings.interval == "step"
    lrs = scheduled_lrs(settings, epochs=2, steps_per_epoch=10)  # total_steps = 20; stepping past it would raise
    assert lrs[0] == pytest.approx(0.1 / 25)  # max_lr / div_factor
    assert max(lrs) == pytest.approx(0.1) and lrs.index(max(lrs)) == 5  # peak after pct_start 0.3 of 20 steps
    assert lrs[19] == pytest.approx(0.1 / 25 / 1e4)  # initial lr / final_div_factor at the last step


def test_builtin_schedules_are_unchanged():
    lrs = scheduled_lrs(ScheduleSettings(name="multistep", milestones=[1, 3], gamma=0.5), epochs=4, steps_per_epoch=2)
    assert lrs == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.025, 0.025])
    lrs = scheduled_lrs(ScheduleSettings(name="cosine", warmup_epochs=1, min_lr_ratio=0.1), epochs=3, steps_per_epoch=4)
    assert lrs[:4] == pytest.approx([1e-9, 0.025, 0.05, 0.075], abs=1e-8)
    assert lrs[4] == pytest.approx(0.1)
    assert lrs[8] == pytest.approx(0.01 + 0.09 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def _distiller(train, run_dir, optimizer, schedule, extra=()):
    torch.manual_seed(5)
    model = build_model("mlp", 10, (1, 8, 8), {"hidden": [16]})
    return Distiller(None, model, [HardLabel(), *extra], optimizer=optimizer, schedule=schedule, batch_size=64,
                     run_dir=run_dir, progress=False, seed=0)


def test_distiller_logs_the_per_epoch_lr(digits, tmp_path):
    _, train, _ = digits
    schedule = ScheduleSettings(name="ExponentialLR", gamma=0.5, interval="epoch")
    distiller = _distiller(train, None, OptimizerSettings(name="adam", lr=0.01), schedule)
    history = distiller.fit(train, epochs=3)
    # the lr logged after epoch k is the one epoch k + 1 trains with
    assert [r["lr"] for r in history] == pytest.approx([0.005, 0.0025, 0.00125], rel=1e-12)
    assert type(distiller.optimizer) is torch.optim.Adam


@pytest.mark.parametrize("schedule", [
    {"name": "ExponentialLR", "gamma": 0.7, "interval": "epoch"},
    {"name": "OneCycleLR", "max_lr": 0.05},
])
@pytest.mark.parametrize("stop_in_epoch, stop_at_step", [(0, 5), (1, 3)])
def test_resume_with_a_torch_scheduler_equals_an_uninterrupted_run(digits, tmp_path, schedule, stop_in_epoch,
                                                                    stop_at_step):
    _, train, _ = digits
    epochs = 3
    optimizer = OptimizerSettings(name="adamw", lr=0.01, weight_decay=0.01)
    settings = ScheduleSettings(**schedule)
    reference = _distiller(train, tmp_path / "ref", optimizer, settings)
    reference.fit(train, epochs=epochs)

    steps_per_epoch = math.ceil(len(train) / 64)
    ref: list = []
    interrupted = _distiller(train, tmp_path / "run", optimizer, settings,
                             [StopAtStep(ref, stop_in_epoch * steps_per_epoch + stop_at_step)])
    ref.append(interrupted)
    with pytest.raises(TrainingInterrupted):
        interrupted.fit(train, epochs=epochs)
    resumed = _distiller(train, tmp_path / "run", optimizer, settings, [StopAtStep([None], 10**9)])
    resumed.fit(train, epochs=epochs, resume=True)
    for (name, a), (_, b) in zip(reference.student.model.state_dict().items(),
                                 resumed.student.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), f"{name} differs after resume"
    assert [r["lr"] for r in resumed.history] == [r["lr"] for r in reference.history]
    assert resumed.scheduler.state_dict() == reference.scheduler.state_dict()


def test_cache_settings_from_yaml_and_python(tmp_path):
    assert CacheSettings("runs/c", views=2) == CacheSettings(directory="runs/c", views=2)
    with pytest.raises(ValidationError, match="views"):
        CacheSettings("c", views=0)
    config = load_config(None, ["teacher.cache=true"])
    assert config.teacher.cache_spec() == CacheSettings()
    teachers = Teachers([config.teacher], [], [])
    assert _cache_settings(config, teachers, tmp_path) == CacheSettings(tmp_path / "teacher-cache")
    config = load_config(None, [f"teacher.cache={{directory: {tmp_path / 'mine'}, top_k: 5, extra_taps: [head]}}"])
    assert _cache_settings(config, Teachers([config.teacher], [], []), tmp_path) == \
        CacheSettings(tmp_path / "mine", top_k=5, extra_taps=("head",))
    config = load_config(None, ["teacher.cache={enabled: false, top_k: 5}"])
    assert config.teacher.cache_spec() is None
    assert _cache_settings(config, Teachers([config.teacher], [], []), tmp_path) is None
