"""The measures of benchmarks/cifar10_transfer.py (what a student took from its teacher), each
against a value known without the code: a squared correlation, an exact linear map, a hand KL."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def probe(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import cifar10_transfer

    return cifar10_transfer


def test_linear_cka_of_one_dimension_is_the_squared_correlation(probe):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(500, 1, generator=generator, dtype=torch.float64)
    y = 0.5 * x + torch.randn(500, 1, generator=generator, dtype=torch.float64)
    pearson = torch.corrcoef(torch.cat([x, y], dim=1).t())[0, 1]
    assert probe.linear_cka(x, y) == pytest.approx(float(pearson**2), rel=1e-9)


def test_linear_cka_ignores_rotation_and_scale_but_not_a_stretch(probe):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(400, 6, generator=generator, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, generator=generator, dtype=torch.float64))
    assert probe.linear_cka(x, 3.0 * x @ rotation) == pytest.approx(1.0, abs=1e-12)
    stretched = x * torch.tensor([10.0, 1, 1, 1, 1, 1], dtype=torch.float64)
    assert probe.linear_cka(x, stretched) < 0.9  # CKA is not invariant to any linear map: R^2 is


def test_linear_r2_is_one_for_any_linear_map_and_near_zero_for_noise(probe):
    generator = torch.Generator().manual_seed(2)
    student = torch.randn(1000, 8, generator=generator, dtype=torch.float64)
    mixing = torch.randn(8, 5, generator=generator, dtype=torch.float64)
    assert probe.linear_r2(student, student @ mixing + 4.0) == pytest.approx(1.0, abs=1e-6)
    unrelated = torch.randn(1000, 5, generator=generator, dtype=torch.float64)
    assert abs(probe.linear_r2(student, unrelated)) < 0.03


def test_linear_r2_matches_the_signal_share_of_a_noisy_map(probe):
    # y = 2 x + e with var(x) = 1, var(e) = 1: the best linear fit explains 4 / (4 + 1) of var(y)
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(20000, 1, generator=generator, dtype=torch.float64)
    y = 2 * x + torch.randn(20000, 1, generator=generator, dtype=torch.float64)
    assert probe.linear_r2(x, y) == pytest.approx(0.8, abs=0.01)


def test_correlation_gap_of_opposite_class_correlations_is_two(probe):
    base = torch.arange(10, dtype=torch.float64)
    teacher = torch.stack([base, 2 * base], dim=1)  # the two class logits rise together: corr +1
    student = torch.stack([base, -base], dim=1)  # one falls as the other rises: corr -1
    assert probe.corr_gap(teacher, student) == pytest.approx(2.0)
    assert probe.corr_gap(teacher, teacher + 5.0) == pytest.approx(0.0, abs=1e-12)


def test_kl_at_a_temperature_matches_the_hand_value(probe):
    teacher = torch.tensor([[4.0, 0.0]], dtype=torch.float64)
    student = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    p = 1 / (1 + math.exp(-1.0))  # softmax of (4, 0) / 4 = (1, 0)
    expected = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)
    assert probe.kl_at(teacher, student, 4.0) == pytest.approx(expected, rel=1e-9)
