"""Recipe options a paper's set-up needs (Hinton's MNIST: per-step warm-up, last partial batch dropped)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import scheduled_lrs

from kdistill import Distiller, OptimizerSettings, ScheduleSettings
from kdistill.config import ConfigError, load_config
from kdistill.data.base import InMemoryDataset
from kdistill.models import build_model


def _lrs(settings: ScheduleSettings, epochs: int, steps_per_epoch: int) -> list[float]:
    return scheduled_lrs(settings, epochs, steps_per_epoch, lr=1.0)  # base lr 1: the lr is the factor


def test_warmup_steps_ramp_linearly_then_cosine_to_zero():
    lrs = _lrs(ScheduleSettings(name="cosine", warmup_steps=500), epochs=10, steps_per_epoch=468)
    assert lrs[0] == pytest.approx(0.0, abs=1e-6)
    assert lrs[250] == pytest.approx(0.5, rel=1e-6)
    assert lrs[499] == pytest.approx(499 / 500, rel=1e-6)
    total = 10 * 468
    for step in (500, 2000, total - 1):  # cosine from the end of the warm-up to 0 at the last step
        expected = 0.5 * (1 + math.cos(math.pi * (step - 500) / (total - 500)))
        assert lrs[step] == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_both_warmups_are_refused():
    with pytest.raises(ValueError, match="warmup_epochs or warmup_steps"):
        _lrs(ScheduleSettings(warmup_steps=5, warmup_epochs=1), 1, 10)
    with pytest.raises(ConfigError, match="warmup_epochs or warmup_steps"):
        load_config(None, ["training.schedule.warmup_steps=5", "training.schedule.warmup_epochs=1"])


def test_a_warmup_longer_than_the_run_is_noted():
    """A recipe shrunk for a quick try (fewer epochs, less data) with its warm-up left as it was never
    reaches its learning rate: the run says so (log, notes.json, report) instead of training at 6e-6."""
    data = InMemoryDataset(torch.randn(300, 4), torch.randint(0, 3, (300,)))  # 3 steps per epoch at batch 128

    def notes(schedule: ScheduleSettings, epochs: int) -> list[str]:
        distiller = Distiller(None, build_model("mlp", 3, (4,), {"hidden": [8]}), batch_size=128, progress=False,
                              optimizer=OptimizerSettings(lr=0.01), schedule=schedule)
        distiller.fit(data, epochs=epochs)
        return [n for n in distiller.notes if "warm-up" in n]

    found = notes(ScheduleSettings(name="cosine", warmup_steps=500), epochs=2)
    assert len(found) == 1 and "(500 optimiser steps) does not end before the run does (6 steps)" in found[0]
    assert "peaks at 1% of the set lr" in found[0]  # the last step's factor: 5 / 500
    assert notes(ScheduleSettings(name="cosine", warmup_epochs=2), epochs=2)  # exactly the run: never decays
    assert not notes(ScheduleSettings(name="cosine", warmup_steps=5), epochs=2)
    assert not notes(ScheduleSettings(name="cosine"), epochs=2)


def test_drop_last_trains_on_full_batches_only():
    data = InMemoryDataset(torch.randn(300, 4), torch.randint(0, 3, (300,)))
    seen = []
    model = build_model("mlp", 3, (4,), {"hidden": [8]})
    model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]) if model.training else None)
    distiller = Distiller(None, model, batch_size=128, drop_last=True, progress=False,
                          optimizer=OptimizerSettings(lr=0.01))
    distiller.fit(data, epochs=2)
    assert seen == [128] * 4  # 2 batches per epoch; the 44 left over are dropped
    kept = Distiller(None, build_model("mlp", 3, (4,), {"hidden": [8]}), batch_size=128, progress=False)
    assert len(kept.make_loader(data, train=True)) == 3
