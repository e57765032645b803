"""Hinton's soft-target loss against values computed by hand, including the T^2 gradient scale."""

from __future__ import annotations

import math

import pytest
import torch

from kdistill.methods import HardLabel, SoftTarget, StepContext, build_method


def hand_kl(student: list[float], teacher: list[float], temperature: float) -> float:
    def softmax(z):
        exps = [math.exp(v / temperature) for v in z]
        total = sum(exps)
        return [e / total for e in exps]

    p_s, p_t = softmax(student), softmax(teacher)
    return sum(t * math.log(t / s) for s, t in zip(p_s, p_t, strict=True))


def test_soft_target_matches_hand_computation():
    student = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    teacher = [[2.0, 1.0, 0.0], [0.5, 0.5, 2.0]]
    temperature = 3.0
    expected = sum(hand_kl(s, t, temperature) for s, t in zip(student, teacher, strict=True)) / 2 * temperature**2
    method = SoftTarget(weight=1.0, temperature=temperature)
    ctx = StepContext(torch.tensor(student), teacher_logits=[torch.tensor(teacher)])
    value = method(ctx)["soft_target"]
    assert value.item() == pytest.approx(expected, rel=1e-5)
    assert expected > 0.05  # the case is not degenerate


def test_soft_target_gradient_has_t_squared_scale():
    """d/dz_s [T^2 KL] = T (softmax(z_s/T) - softmax(z_t/T)) / B: magnitude ~ 1/T, not 1/T^2."""
    torch.manual_seed(0)
    student = torch.randn(4, 5, requires_grad=True)
    teacher = torch.randn(4, 5)
    for temperature in (1.0, 4.0, 20.0):
        student.grad = None
        SoftTarget(weight=1.0, temperature=temperature)(StepContext(student, teacher_logits=[teacher]))[
            "soft_target"].backward()
        expected = temperature * (torch.softmax(student.detach() / temperature, 1)
                                  - torch.softmax(teacher / temperature, 1)) / 4
        torch.testing.assert_close(student.grad, expected, rtol=1e-5, atol=1e-7)
    # At high T, Hinton's eq. 4 gives (z_s - z_t) / (N T^2) per sample for the unscaled KL; the T^2
    # factor cancels it, leaving (z_s - z_t) / (N B): independent of T.
    zs = student.detach() - student.detach().mean(1, keepdim=True)
    zt = teacher - teacher.mean(1, keepdim=True)
    student_centred = zs.clone().requires_grad_(True)
    SoftTarget(weight=1.0, temperature=1000.0)(StepContext(student_centred, teacher_logits=[zt]))[
        "soft_target"].backward()
    torch.testing.assert_close(student_centred.grad, (zs - zt) / (5 * 4), rtol=1e-2, atol=1e-5)


def test_weight_scales_the_term_and_hard_label_is_cross_entropy():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    labels = torch.tensor([0])
    expected_ce = -math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-1)))
    terms = HardLabel(weight=0.25)(StepContext(logits, labels))
    assert terms["hard_label"].item() == pytest.approx(0.25 * expected_ce, rel=1e-6)


@pytest.mark.parametrize("options, message", [
    ({"temperature": 0}, "temperature: must be > 0"),
    ({"temperature": -1}, "temperature: must be > 0"),
    ({"weight": -0.5}, "weight: must be >= 0"),
    ({"temprature": 4}, "temprature: not an option of 'soft_target'"),
])
def test_bad_options_name_the_key(options, message):
    with pytest.raises(ValueError, match=message):
        build_method("soft_target", options)
