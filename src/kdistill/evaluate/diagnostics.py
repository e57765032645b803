"""What a distilled student took from its teacher, beyond one accuracy number.

Everything here works on logits already computed on the test set (`predict_logits`), so the numbers
can be saved once (`diagnostics.json` in the run directory) and every report rebuilt from them
without the models:

- top-1 agreement: the share of samples where student and teacher predict the same class;
- KL(teacher || student) at temperature 1, in nats, averaged over samples: how far the student's
  whole distribution is from the teacher's, not only its argmax;
- expected calibration error with `bins` equal-width confidence bins over (0, 1] (a sample whose top
  probability is p falls in bin ceil(p * bins) - 1), and the reliability diagram's data per bin;
- per-class accuracy and the confusion matrix (rows: true class, columns: predicted class);
- the classes where the teacher is weak and the student inherited it (`inherited_weakness`);
- each model's right / wrong per sample (packed bits), and the distilled student against the scratch
  one by McNemar's exact test on the same samples (`kdistill.evaluate.paired`).

The weakness rule (also written into every report): a class is *teacher-weak* when the teacher's
accuracy on it is at least `weak_margin` (5 points) below the teacher's mean per-class accuracy. A
teacher-weak class is *inherited* when the distilled student is at least `inherit_margin` (2 points)
worse on it than the student trained from scratch (distillation cost the student accuracy exactly
where the teacher is weak). Without a scratch student the comparison is with the student itself: the
class is flagged when the distilled student is also weak on it by the same `weak_margin` rule.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdistill.evaluate.paired import compare_outcomes, outcome_bits

WEAK_MARGIN = 0.05
INHERIT_MARGIN = 0.02
ECE_BINS = 15


def agreement(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> float:
    """Share of samples where both models' top-1 class is the same."""
    return int((student_logits.argmax(1) == teacher_logits.argmax(1)).sum()) / max(len(student_logits), 1)


def kl_teacher_student(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> float:
    """Mean over samples of KL(softmax(teacher) || softmax(student)), in nats, at temperature 1."""
    teacher_log = F.log_softmax(teacher_logits.double(), dim=1)
    student_log = F.log_softmax(student_logits.double(), dim=1)
    return float((teacher_log.exp() * (teacher_log - student_log)).sum(1).mean())


@dataclass
class Reliability:
    """Per equal-width confidence bin: sample count, mean confidence and accuracy (NaN where empty)."""

    edges: list[float]
    count: list[int]
    confidence: list[float]
    accuracy: list[float]
    ece: float

    def as_dict(self) -> dict[str, Any]:
        return {"edges": self.edges, "count": self.count, "confidence": self.confidence,
                "accuracy": self.accuracy, "ece": self.ece}


def reliability(logits: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> Reliability:
    """The reliability diagram's bins and the ECE: sum over bins of (n_b / N) |accuracy_b - confidence_b|."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1 (got {bins})")
    probs = F.softmax(logits.double(), dim=1)
    confidence, predicted = probs.max(1)
    correct = (predicted == labels).double()
    index = (torch.ceil(confidence * bins).long() - 1).clamp(0, bins - 1)
    count = torch.bincount(index, minlength=bins)
    conf_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, confidence)
    correct_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, correct)
    total = max(len(labels), 1)
    ece = float((conf_sum - correct_sum).abs().sum() / total)  # |n_b acc_b - n_b conf_b| / N, summed
    safe = count.clamp(min=1).double()
    mean_conf = [float(v) if n else math.nan for v, n in zip(conf_sum / safe, count, strict=True)]
    mean_acc = [float(v) if n else math.nan for v, n in zip(correct_sum / safe, count, strict=True)]
    return Reliability([i / bins for i in range(bins + 1)], count.tolist(), mean_conf, mean_acc, ece)


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts: row = true class, column = predicted class."""
    flat = labels.long() * num_classes + predicted.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(confusion: torch.Tensor) -> list[float]:
    """Diagonal over row sums; NaN for a class absent from the labels."""
    totals = confusion.sum(1)
    return [float(confusion[c, c] / totals[c]) if totals[c] else math.nan for c in range(len(confusion))]


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def weak_classes(class_accuracy: list[float], margin: float = WEAK_MARGIN) -> list[int]:
    """Classes at least `margin` below the model's mean per-class accuracy."""
    mean = _nanmean(class_accuracy)
    return [c for c, acc in enumerate(class_accuracy) if not math.isnan(acc) and acc <= mean - margin + 1e-12]


def inherited_weakness(teacher: list[float], distilled: list[float], scratch: list[float] | None = None,
                       weak_margin: float = WEAK_MARGIN, inherit_margin: float = INHERIT_MARGIN) -> dict[str, Any]:
    """The teacher-weak classes, and which of them the distilled student inherited (rule: module docstring)."""
    teacher_weak = weak_classes(teacher, weak_margin)
    if scratch is not None:
        basis = "scratch"
        inherited = [c for c in teacher_weak if distilled[c] <= scratch[c] - inherit_margin + 1e-12]
    else:
        basis = "student"
        student_weak = set(weak_classes(distilled, weak_margin))
        inherited = [c for c in teacher_weak if c in student_weak]
    return {"teacher_weak": teacher_weak, "inherited": inherited, "basis": basis,
            "weak_margin": weak_margin, "inherit_margin": inherit_margin}


def labels_digest(labels: torch.Tensor) -> str:
    """A fingerprint of the test labels in order: two runs' per-sample outcomes are compared only when
    it matches (same samples, same order), since the outcomes alone do not say which samples they cover."""
    return hashlib.sha256(labels.detach().to("cpu", torch.int64).numpy().tobytes()).hexdigest()[:16]


def model_summary(logits: torch.Tensor, labels: torch.Tensor, num_classes: int, bins: int = ECE_BINS) -> dict[str, Any]:
    """Accuracy, calibration, per-class accuracy and confusion matrix of one model."""
    predicted = logits.argmax(1)
    confusion = confusion_matrix(predicted, labels, num_classes)
    correct = predicted == labels
    return {"accuracy": int(correct.sum()) / max(len(labels), 1),
            "reliability": reliability(logits, labels, bins).as_dict(),
            "per_class_accuracy": per_class_accuracy(confusion), "confusion": confusion.tolist(),
            "correct": outcome_bits(correct)}


def rule_text(weak_margin: float = WEAK_MARGIN, inherit_margin: float = INHERIT_MARGIN) -> str:
    """The weakness rule in one sentence, for the reports."""
    return (f"a class is teacher-weak when the teacher's accuracy on it is at least {100 * weak_margin:g} points "
            f"below its mean per-class accuracy; it is inherited when the distilled student is at least "
            f"{100 * inherit_margin:g} points worse on it than the scratch student (without a scratch student: "
            f"when the distilled student is also weak on it by the same rule).")


def diagnose(logits: dict[str, torch.Tensor], labels: torch.Tensor, num_classes: int, teacher: str | None,
             scratch: str | None, distilled: str | None, classes: list[str] | None = None,
             bins: int = ECE_BINS) -> dict[str, Any]:
    """Every model's summary, each student's agreement and KL with the teacher, the inherited weakness.

    `logits` maps a role (a row of the results table) to its test logits; `teacher`, `scratch` and
    `distilled` name the roles playing those parts (None where the run has none)."""
    labels = labels.long()
    models = {role: model_summary(values, labels, num_classes, bins) for role, values in logits.items()}
    pairs = {}
    if teacher is not None:
        for role, values in logits.items():
            if role != teacher:
                pairs[role] = {"teacher": teacher, "agreement": agreement(values, logits[teacher]),
                               "kl": kl_teacher_student(values, logits[teacher])}
    weakness = None
    if teacher is not None and distilled is not None:
        weakness = inherited_weakness(models[teacher]["per_class_accuracy"], models[distilled]["per_class_accuracy"],
                                      models[scratch]["per_class_accuracy"] if scratch is not None else None)
        weakness.update({"teacher": teacher, "distilled": distilled, "scratch": scratch, "rule": rule_text()})
    paired = None
    if scratch is not None and distilled is not None:
        comparison = compare_outcomes(logits[distilled].argmax(1) == labels, logits[scratch].argmax(1) == labels)
        paired = {"distilled": distilled, "scratch": scratch, **comparison.as_dict()}
    return {"test_samples": len(labels), "labels_digest": labels_digest(labels), "num_classes": num_classes,
            "classes": list(classes) if classes else [str(c) for c in range(num_classes)], "bins": bins,
            "roles": {"teacher": teacher, "scratch": scratch, "distilled": distilled},
            "models": models, "pairs": pairs, "weakness": weakness, "distilled_vs_scratch": paired}


@torch.no_grad()
def predict_logits(model: nn.Module, loader: Any, device: torch.device, normalize: nn.Module | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) of a model over a loader, in the loader's order, as float32 on the CPU."""
    from kdistill.data.transforms import Normalize, to_float
    from kdistill.engine.batch import call_model, class_labels, label_classes, logits_of, split_batch, to_device

    was_training = model.training
    model.eval().to(device)
    normalize = (normalize or Normalize(None, None)).to(device)
    outputs, targets = [], []
    for batch in loader:
        inputs, labels, _ = split_batch(to_device(batch, device))
        if torch.is_tensor(inputs):
            inputs = normalize(to_float(inputs))
        outputs.append(logits_of(call_model(model, inputs)).float().cpu())
        targets.append(label_classes(class_labels(labels, outputs[-1])).cpu())  # probability rows: their argmax
    model.train(was_training)
    return torch.cat(outputs), torch.cat(targets)
