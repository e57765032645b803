"""Diagnostics against hand-computed values: ECE and the reliability bins, agreement, KL, confusion,
per-class accuracy and the inherited-weakness rule."""

from __future__ import annotations

import math

import pytest
import torch

from kdistill.evaluate.diagnostics import (
    agreement,
    confusion_matrix,
    diagnose,
    inherited_weakness,
    kl_teacher_student,
    per_class_accuracy,
    reliability,
    weak_classes,
)


def logits_of(probabilities: list[list[float]]) -> torch.Tensor:
    """Logits whose softmax is exactly these probabilities (log p; softmax normalises)."""
    return torch.tensor(probabilities, dtype=torch.float64).log()


def test_ece_and_reliability_bins_by_hand():
    # 5 bins of width 0.2; confidences 0.9, 0.9 (bin 4), 0.7, 0.65 (bin 3)
    logits = logits_of([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.65, 0.35]])
    labels = torch.tensor([0, 1, 1, 0])
    rel = reliability(logits, labels, bins=5)
    assert rel.count == [0, 0, 0, 2, 2]
    assert rel.accuracy[3] == pytest.approx(1.0) and rel.accuracy[4] == pytest.approx(0.5)
    assert rel.confidence[3] == pytest.approx(0.675) and rel.confidence[4] == pytest.approx(0.9)
    assert all(math.isnan(v) for v in rel.accuracy[:3])
    # bin 4: 2/4 * |0.5 - 0.9| = 0.2; bin 3: 2/4 * |1 - 0.675| = 0.1625
    assert rel.ece == pytest.approx(0.3625)
    assert rel.edges == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])


def test_a_perfectly_calibrated_set_has_zero_ece():
    # confidence 0.75 on four samples, three right: accuracy 0.75 in that bin
    logits = logits_of([[0.75, 0.25]] * 4)
    assert reliability(logits, torch.tensor([0, 0, 0, 1]), bins=10).ece == pytest.approx(0.0, abs=1e-9)


def test_agreement_and_kl_by_hand():
    teacher = logits_of([[0.5, 0.5], [0.2, 0.8], [0.9, 0.1]])
    student = logits_of([[0.25, 0.75], [0.2, 0.8], [0.4, 0.6]])
    # argmax: teacher [0 (tie -> first), 1, 0], student [1, 1, 1]
    assert agreement(student, teacher) == pytest.approx(1 / 3)
    kl = [0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75), 0.0,
          0.9 * math.log(0.9 / 0.4) + 0.1 * math.log(0.1 / 0.6)]
    assert kl_teacher_student(student, teacher) == pytest.approx(sum(kl) / 3)
    assert kl_teacher_student(teacher, teacher) == pytest.approx(0.0, abs=1e-12)


def test_confusion_and_per_class_accuracy():
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    predicted = torch.tensor([0, 1, 1, 1, 2, 0])
    confusion = confusion_matrix(predicted, labels, 4)
    assert confusion.tolist() == [[1, 1, 0, 0], [0, 2, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    accuracy = per_class_accuracy(confusion)
    assert accuracy[:3] == pytest.approx([0.5, 2 / 3, 0.0]) and math.isnan(accuracy[3])  # class 3 never seen


def test_weak_and_inherited_classes_follow_the_documented_rule():
    teacher = [1.0, 0.9, 0.7, 0.95]  # mean 0.8875: weak at <= 0.8375 -> class 2 only
    assert weak_classes(teacher) == [2]
    scratch = [0.9, 0.9, 0.8, 0.9]
    distilled_worse = [0.95, 0.9, 0.7, 0.9]  # 10 points below scratch on class 2: inherited
    distilled_same = [0.95, 0.9, 0.79, 0.9]  # 1 point below: within the 2-point margin
    assert inherited_weakness(teacher, distilled_worse, scratch)["inherited"] == [2]
    assert inherited_weakness(teacher, distilled_same, scratch)["inherited"] == []
    # without a scratch student: inherited when the distilled student is weak on it too
    result = inherited_weakness(teacher, [0.95, 0.95, 0.6, 0.95])
    assert result["basis"] == "student" and result["inherited"] == [2]


def test_diagnose_puts_it_together():
    labels = torch.tensor([0, 1, 1, 0])
    teacher = logits_of([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])  # all right
    student = logits_of([[0.6, 0.4], [0.7, 0.3], [0.4, 0.6], [0.8, 0.2]])  # second wrong
    result = diagnose({"teacher": teacher, "student (distilled)": student}, labels, 2, "teacher", None,
                      "student (distilled)", ["cat", "dog"], bins=5)
    assert result["models"]["teacher"]["accuracy"] == 1.0
    assert result["models"]["student (distilled)"]["per_class_accuracy"] == pytest.approx([1.0, 0.5])
    assert result["pairs"]["student (distilled)"]["agreement"] == pytest.approx(0.75)
    assert "teacher" not in result["pairs"]
    assert result["classes"] == ["cat", "dog"] and result["weakness"]["teacher_weak"] == []


def test_bad_bin_count_is_refused():
    with pytest.raises(ValueError, match="bins"):
        reliability(torch.zeros(2, 3), torch.tensor([0, 1]), bins=0)
