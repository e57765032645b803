"""Token-level LM losses against hand-computed values (methods/token_level.py)."""

from __future__ import annotations

import math

import pytest
import torch
from lm_fixtures import one_thread  # noqa: F401  (autouse: one thread)

from kdistill.methods import METHODS, ForwardKL, GeneralizedJSD, ReverseKL, StepContext, build_method
from kdistill.methods.token_level import forward_kl, generalized_jsd, reverse_kl, top_k_logits

P = (0.7, 0.2, 0.1)  # teacher
Q = (0.2, 0.5, 0.3)  # student


def logits(probs) -> torch.Tensor:
    return torch.log(torch.tensor([probs], dtype=torch.float64)).float()


def kl(a, b) -> float:
    return sum(x * math.log(x / y) for x, y in zip(a, b, strict=True))


# the same numbers written out: 0.7 ln 3.5 + 0.2 ln 0.4 + 0.1 ln(1/3), and 0.2 ln(2/7) + 0.5 ln 2.5 + 0.3 ln 3
FORWARD = 0.7 * math.log(3.5) + 0.2 * math.log(0.4) + 0.1 * math.log(1 / 3)
REVERSE = 0.2 * math.log(2 / 7) + 0.5 * math.log(2.5) + 0.3 * math.log(3)


def test_forward_and_reverse_kl_hand_values():
    assert pytest.approx(0.583815, abs=1e-6) == FORWARD
    assert pytest.approx(0.537176, abs=1e-6) == REVERSE
    assert float(forward_kl(logits(Q), logits(P))) == pytest.approx(FORWARD, abs=1e-6)
    assert float(reverse_kl(logits(Q), logits(P))) == pytest.approx(REVERSE, abs=1e-6)


def test_jsd_hand_value_and_beta_limits():
    m = [(p + q) / 2 for p, q in zip(P, Q, strict=True)]  # (0.45, 0.35, 0.2)
    expected = 0.5 * kl(P, m) + 0.5 * kl(Q, m)
    assert float(generalized_jsd(logits(Q), logits(P), beta=0.5)) == pytest.approx(expected, abs=1e-6)
    beta = 0.3
    m = [beta * p + (1 - beta) * q for p, q in zip(P, Q, strict=True)]
    assert float(generalized_jsd(logits(Q), logits(P), beta=beta)) == pytest.approx(
        beta * kl(P, m) + (1 - beta) * kl(Q, m), abs=1e-6)
    # the endpoints are the limits: beta 0 the forward KL, beta 1 the reverse KL
    assert float(generalized_jsd(logits(Q), logits(P), beta=0.0)) == pytest.approx(FORWARD, abs=1e-6)
    assert float(generalized_jsd(logits(Q), logits(P), beta=1.0)) == pytest.approx(REVERSE, abs=1e-6)
    small = 1e-3
    student, teacher = logits(Q).double(), logits(P).double()
    assert float(generalized_jsd(student, teacher, beta=small)) / small == pytest.approx(FORWARD, rel=5e-3)
    assert float(generalized_jsd(student, teacher, beta=1 - small)) / small == pytest.approx(REVERSE, rel=5e-3)


def sequence_scores(rows: list[tuple[float, ...]]) -> torch.Tensor:
    """(1, V, T) scores whose position t has probabilities rows[t]."""
    return torch.log(torch.tensor(rows, dtype=torch.float64)).float().T.unsqueeze(0)


def test_methods_mask_padding_and_average_positions():
    teacher = sequence_scores([P, Q, (0.05, 0.05, 0.9)])
    student = sequence_scores([Q, P, (0.9, 0.05, 0.05)]).requires_grad_()
    labels = torch.tensor([[0, 2, -100]])  # the third position is padding
    ctx = StepContext(student.detach(), labels, [teacher])
    assert float(ForwardKL()(ctx)["forward_kl"]) == pytest.approx((FORWARD + kl(Q, P)) / 2, abs=1e-5)
    assert float(ReverseKL(weight=2.0)(ctx)["reverse_kl"]) == pytest.approx(2 * (REVERSE + kl(P, Q)) / 2, abs=1e-5)
    GeneralizedJSD(beta=0.5)(StepContext(student, labels, [teacher]))["jsd"].backward()
    assert torch.all(student.grad[0, :, 2] == 0)  # the padded position receives no gradient
    assert student.grad[0, :, :2].abs().sum() > 0
    everything = StepContext(student.detach(), None, [teacher])  # no labels: every position counts
    assert float(ForwardKL()(everything)["forward_kl"]) == pytest.approx(
        (FORWARD + kl(Q, P) + kl((0.05, 0.05, 0.9), (0.9, 0.05, 0.05))) / 3, abs=1e-5)


def test_temperature_scales_by_t_squared():
    student, teacher = torch.tensor([[1.0, -2.0, 0.5]]), torch.tensor([[3.0, 0.0, -1.0]])
    soft = lambda x: torch.softmax(x / 2, -1)[0].tolist()  # noqa: E731
    ctx = StepContext(student, None, [teacher])
    assert float(ForwardKL(temperature=2.0)(ctx)["forward_kl"]) == pytest.approx(
        4 * kl(soft(teacher), soft(student)), abs=1e-5)


def test_top_k_teacher_keeps_the_tail_mass_spread_evenly():
    p = (0.6, 0.25, 0.1, 0.05)
    q = (0.1, 0.2, 0.3, 0.4)
    teacher, student = torch.log(torch.tensor([p])), torch.log(torch.tensor([q]))
    sparse = top_k_logits(teacher, 2)
    # the top 2 kept; the other two share the rest's 0.15 evenly: 0.075 each
    assert torch.allclose(sparse[0, :2], teacher[0, :2])
    assert torch.allclose(torch.softmax(sparse, -1), torch.tensor([[0.6, 0.25, 0.075, 0.075]]), atol=1e-6)
    kept = (0.6, 0.25, 0.075, 0.075)
    assert forward_kl(student, sparse).item() == pytest.approx(kl(kept, q), abs=1e-6)
    assert reverse_kl(student, sparse).item() == pytest.approx(kl(q, kept), abs=1e-6)
    ctx = StepContext(student, None, [teacher])  # the method's top_k on a live teacher: the same
    assert float(ForwardKL(top_k=2)(ctx)["forward_kl"]) == pytest.approx(kl(kept, q), abs=1e-6)
    m = [(a + b) / 2 for a, b in zip(kept, q, strict=True)]
    assert float(GeneralizedJSD(top_k=2)(ctx)["jsd"]) == pytest.approx(0.5 * kl(kept, m) + 0.5 * kl(q, m), abs=1e-6)
    # at temperature 2 the fill keeps the rest's mass of the softened distribution
    soft = torch.softmax(teacher / 2, -1)
    assert torch.softmax(top_k_logits(teacher, 2, temperature=2.0) / 2, -1)[0, 2:].sum() == pytest.approx(
        float(soft[0, 2:].sum()), abs=1e-6)
    assert torch.equal(top_k_logits(teacher, 4), teacher)


def test_a_teacher_that_rules_tokens_out():
    """Forward KL and JSD: exact on the student's full distribution (finite, and the ruled-out token's
    gradient is q - p = q, pushing its mass off); reverse KL (infinite in truth): the student
    conditioned on the teacher's support."""
    teacher = torch.log(torch.tensor([[0.7, 0.2, 0.1]]))
    teacher[0, 2] = float("-inf")
    p = (0.7 / 0.9, 0.2 / 0.9)  # the teacher's distribution: 0 on the third token
    q_full = (0.2, 0.5, 0.3)
    student = torch.log(torch.tensor([q_full])).requires_grad_()
    forward = forward_kl(student, teacher)
    # KL(p || q) = sum over p > 0 of p log(p / q), q unrenormalised: 0.7/0.9 ln(3.889) + 0.2/0.9 ln(0.444)
    assert forward.item() == pytest.approx(p[0] * math.log(p[0] / 0.2) + p[1] * math.log(p[1] / 0.5), abs=1e-6)
    assert forward.item() == pytest.approx(0.876, abs=1e-3)  # renormalising q on the support would give 0.520
    forward.backward()
    expected_grad = torch.tensor([[0.2 - p[0], 0.5 - p[1], 0.3]])  # d KL / d logits = q - p
    assert torch.allclose(student.grad, expected_grad, atol=1e-6)
    student.grad = None
    value = reverse_kl(student, teacher)
    q = (0.2 / 0.7, 0.5 / 0.7)  # the student on the teacher's two tokens
    assert value.item() == pytest.approx(kl(q, p), abs=1e-6)
    value.backward()
    assert torch.isfinite(student.grad).all() and student.grad[0, 2] == 0
    student.grad = None
    # JSD at beta 0.5: m = (p + q) / 2 is positive everywhere, so the value is finite and exact
    m = [(a + b) / 2 for a, b in zip((*p, 0.0), q_full, strict=True)]
    exact = 0.5 * kl(p, m[:2]) + 0.5 * kl(q_full, m)
    jsd = generalized_jsd(student, teacher, beta=0.5)
    assert jsd.item() == pytest.approx(exact, abs=1e-6)
    jsd.backward()
    assert torch.isfinite(student.grad).all() and student.grad[0, 2] > 0


def test_a_top_k_teacher_with_an_empty_tail_is_exact():
    """A teacher whose tail has no mass (fill -inf): forward KL equals the KL on the top k alone."""
    teacher = torch.log(torch.tensor([[0.6, 0.4, 0.0, 0.0]]))  # -inf on the last two
    sparse = top_k_logits(teacher, 2)
    assert torch.isinf(sparse[0, 2:]).all()
    student = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]]))
    assert forward_kl(student, sparse).item() == pytest.approx(0.6 * math.log(6) + 0.4 * math.log(2), abs=1e-6)


def test_registered_by_name_with_checked_options():
    assert METHODS.get("fkl") is ForwardKL and METHODS.get("rkl") is ReverseKL and METHODS.get("gkd") is GeneralizedJSD
    assert build_method("jsd", {"beta": 0.1}).beta == 0.1
    with pytest.raises(ValueError, match="beta"):
        build_method("jsd", {"beta": 1.5})
    with pytest.raises(ValueError, match="top_k"):
        build_method("forward_kl", {"top_k": 0})
    with pytest.raises(ValueError, match="one tokenizer"):
        ForwardKL()(StepContext(torch.zeros(1, 4, 2), None, [torch.zeros(1, 5, 2)]))
