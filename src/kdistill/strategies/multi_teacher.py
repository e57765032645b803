"""Several teachers, one set of soft targets: aggregators for `Distiller(teacher_aggregator=...)`.

An aggregator turns the teachers' logits of one step into one tensor that every logit method then
reads as `ctx.teacher` (the individual teachers stay in `ctx.teacher_logits[1:]`, their features in
`ctx.teacher_features[i]`). Logit methods apply softmax(x / T) to what they get, so an aggregator
built with temperature T returns

    x = T * log(sum_i w_i * softmax(z_i / T))          (w_i >= 0, sum_i w_i = 1)

for which softmax(x / T) is exactly the weighted mixture of the teachers' distributions at T
(log-sum-exp in float32: no log(0), and a teacher with weight 0 contributes nothing). Give the
aggregator the temperature of the method that reads it (`SoftTarget(temperature=4)` with
`MeanAggregator(temperature=4)`). The three schemes:

- `mean`: w_i = 1 / K, the classic ensemble of soft targets;
- `weighted`: fixed w_i given by the user, normalised to sum 1;
- `confidence`: per-sample weights from each teacher's cross-entropy with the label, as in CA-MKD
  (Zhang, Chen, Wang 2022, "Confidence-Aware Multi-Teacher Knowledge Distillation", ICASSP,
  arXiv:2201.00007): w_{b,i} = (1 - softmax_i(CE_{b,i})) / (K - 1); see `ConfidenceAggregator`.

`check_teachers` and `check_label_spaces` are the checks to run before training: a teacher whose
class count differs from the data's is an error for logit methods, and fine for feature methods.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdistill.engine.batch import logits_of
from kdistill.methods.base import Method, require_positive
from kdistill.registry import Registry

AGGREGATORS: Registry = Registry("teacher aggregator")


def mixture_logits(teacher_logits: Sequence[torch.Tensor], weights: torch.Tensor, temperature: float) -> torch.Tensor:
    """T * log(sum_i w_i softmax(z_i / T)), with weights of shape (K,) or (B, K) summing to 1 over K."""
    if not teacher_logits:
        raise ValueError("no teacher logits to aggregate")
    stacked = torch.stack([z.float() for z in teacher_logits], dim=1)  # (B, K, C)
    log_p = F.log_softmax(stacked / temperature, dim=2)
    weights = weights.to(stacked.device, torch.float32)
    if weights.dim() == 1:
        weights = weights.expand(stacked.shape[0], -1)
    # log 0 = -inf for a zero weight: that teacher drops out of the log-sum-exp exactly
    log_w = torch.log(weights).unsqueeze(2)  # (B, K, 1)
    return temperature * torch.logsumexp(log_w + log_p, dim=1)


class Aggregator:
    """Base class: `aggregator(list_of_teacher_logits, labels_or_None) -> logits`."""

    name = "aggregator"

    def __init__(self, temperature: float = 1.0) -> None:
        require_positive("temperature", temperature)
        self.temperature = float(temperature)

    def weights(self, teacher_logits: Sequence[torch.Tensor], labels: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, teacher_logits: Sequence[torch.Tensor], labels: torch.Tensor | None = None) -> torch.Tensor:
        shapes = {tuple(z.shape) for z in teacher_logits}
        if len(shapes) > 1:
            raise ValueError(f"teachers disagree on the logits' shape {sorted(shapes)}; aggregated soft targets "
                             "need teachers over the same classes (see check_teachers)")
        return mixture_logits(teacher_logits, self.weights(teacher_logits, labels), self.temperature)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(temperature={self.temperature})"


@AGGREGATORS.register("mean", "average")
class MeanAggregator(Aggregator):
    """Mean of the teachers' probabilities at the temperature."""

    name = "mean"

    def weights(self, teacher_logits: Sequence[torch.Tensor], labels: torch.Tensor | None) -> torch.Tensor:
        k = len(teacher_logits)
        return torch.full((k,), 1.0 / k)


@AGGREGATORS.register("weighted")
class WeightedAggregator(Aggregator):
    """Fixed weights, one per teacher (non-negative, not all zero), normalised to sum 1."""

    name = "weighted"

    def __init__(self, weights: Sequence[float], temperature: float = 1.0, num_teachers: int | None = None) -> None:
        super().__init__(temperature)
        values = list(weights) if isinstance(weights, list | tuple) else None
        if not values or not all(isinstance(w, int | float) and not isinstance(w, bool) for w in values):
            raise ValueError(f"weights: must be a non-empty list of numbers, one per teacher (got {weights!r})")
        if any(not math.isfinite(w) or w < 0 for w in values):
            raise ValueError(f"weights: must be finite and >= 0 (got {values})")
        if sum(values) <= 0:
            raise ValueError(f"weights: must not all be zero (got {values})")
        self.raw_weights = [float(w) for w in values]
        total = sum(self.raw_weights)
        self.normalised = torch.tensor([w / total for w in self.raw_weights])
        if num_teachers is not None:
            self.check(num_teachers)

    def check(self, num_teachers: int) -> None:
        if len(self.raw_weights) != num_teachers:
            raise ValueError(f"weights: {len(self.raw_weights)} weights for {num_teachers} teachers; give one "
                             "weight per teacher")

    def weights(self, teacher_logits: Sequence[torch.Tensor], labels: torch.Tensor | None) -> torch.Tensor:
        self.check(len(teacher_logits))
        return self.normalised

    def __repr__(self) -> str:
        return f"WeightedAggregator(weights={self.raw_weights}, temperature={self.temperature})"


@AGGREGATORS.register("confidence", "ca_mkd", "camkd")
class ConfidenceAggregator(Aggregator):
    """Per-sample teacher weights from each teacher's cross-entropy with the label (CA-MKD).

    With L_{b,i} = CE(z_i[b], y_b) at temperature 1 and K >= 2 teachers,

        w_{b,i} = (1 - softmax_i(L_{b,:} / sharpness)_i) / (K - 1)

    which is CA-MKD's formula (Zhang et al. 2022, arXiv:2201.00007, and their code:
    `(1 - softmax(loss_t, dim=0)) / (teacher_num - 1)`) with `sharpness` = 1: a teacher that is
    more confident in the right class than the others weighs more on that sample, and the weights
    of each sample sum to 1. CA-MKD weights the K per-teacher KL terms; kdistill mixes the teachers'
    distributions with those weights instead, so any logit method can read the result. Without
    labels (unlabelled transfer data), L is replaced by each teacher's prediction entropy (the
    cross-entropy with its own prediction), the entropy-based weighting of EBKD (Kwon et al. 2020).
    Labels given as rows of class probabilities (float (B, C): one-hot or soft) give L as the
    cross-entropy with those rows (for one-hot rows, the same as with the class ids). One teacher
    gets weight 1.
    """

    name = "confidence"

    def __init__(self, temperature: float = 1.0, sharpness: float = 1.0) -> None:
        super().__init__(temperature)
        require_positive("sharpness", sharpness)
        self.sharpness = float(sharpness)

    def weights(self, teacher_logits: Sequence[torch.Tensor], labels: torch.Tensor | None) -> torch.Tensor:
        k = len(teacher_logits)
        batch = teacher_logits[0].shape[0]
        if k == 1:
            return torch.ones(batch, 1, device=teacher_logits[0].device)
        stacked = torch.stack([z.float() for z in teacher_logits], dim=1)  # (B, K, C)
        log_p = F.log_softmax(stacked, dim=2)
        if labels is not None and labels.is_floating_point() and labels.dim() == 2:  # probability rows (B, C)
            losses = -(labels.float().unsqueeze(1) * log_p).sum(2)
        elif labels is not None:
            index = labels.reshape(-1, 1, 1).long().expand(-1, k, 1)
            losses = -log_p.gather(2, index).squeeze(2)  # (B, K)
        else:
            losses = -(log_p.exp() * log_p).sum(2)
        return (1.0 - F.softmax(losses / self.sharpness, dim=1)) / (k - 1)

    def __repr__(self) -> str:
        return f"ConfidenceAggregator(temperature={self.temperature}, sharpness={self.sharpness})"


def build_aggregator(name: str, options: dict[str, Any] | None = None) -> Callable:
    """An aggregator from config: `build_aggregator('weighted', {'weights': [1, 2], 'temperature': 4})`."""
    factory = AGGREGATORS.get(name)
    try:
        return factory(**(options or {}))
    except TypeError as error:
        raise ValueError(f"bad options for aggregator '{name}': {error}") from error


# checks -------------------------------------------------------------------------------------------
@torch.no_grad()
def output_classes(model: nn.Module, input_shape: Sequence[int], device: str | torch.device | None = None) -> int:
    """How many classes `model` predicts: the logits' last dimension on a dummy batch of two."""
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    try:
        logits = logits_of(model(torch.zeros(2, *input_shape, device=device)))
    finally:
        model.train(was_training)
    return int(logits.shape[-1])


def check_teachers(teachers: nn.Module | Sequence[nn.Module], num_classes: int,
                   input_shape: Sequence[int]) -> list[int]:
    """Run each teacher on a dummy input; ValueError naming the first whose class count differs.

    Returns the teachers' class counts. For transfer through feature methods only (a teacher
    trained on other classes), use `check_label_spaces` instead.
    """
    teachers = list(teachers) if isinstance(teachers, list | tuple) else [teachers]
    counts = []
    for index, teacher in enumerate(teachers):
        try:
            count = output_classes(teacher, input_shape)
        except Exception as error:
            raise ValueError(f"teacher {index} ({type(teacher).__name__}) fails on an input of shape "
                             f"{tuple(input_shape)}: {error}") from error
        if count != num_classes:
            raise ValueError(f"teacher {index} ({type(teacher).__name__}) predicts {count} classes, but the data "
                             f"has {num_classes}")
        counts.append(count)
    return counts


def feature_method_names() -> list[str]:
    """Registered methods that need a teacher but never read its logits."""
    from kdistill.methods import METHODS

    return sorted({cls.name for _, cls in METHODS.items()
                   if isinstance(cls, type) and cls.needs_teacher and not cls.uses_logits})


def check_label_spaces(methods: Sequence[Method], teacher_num_classes: int | Sequence[int],
                       data_num_classes: int) -> None:
    """Logit methods need the teacher(s) to predict the data's classes; feature methods do not.

    Raises ValueError naming the logit methods when a teacher's class count differs from the data's.
    A teacher trained on a related task (other classes) still teaches through features: hint,
    attention_transfer, rkd, sp, pkt, nst, crd.
    """
    counts = [teacher_num_classes] if isinstance(teacher_num_classes, int) else list(teacher_num_classes)
    mismatched = [(i, c) for i, c in enumerate(counts) if c != data_num_classes]
    if not mismatched:
        return
    logit_methods = [getattr(m, "label", m.name) for m in methods if m.needs_teacher and m.uses_logits]
    if logit_methods:
        which = ", ".join(f"teacher {i}: {c} classes" for i, c in mismatched)
        raise ValueError(
            f"methods {logit_methods} compare logits, so they need the teacher's label space to match the data's "
            f"({which}; data: {data_num_classes} classes). Feature methods ({', '.join(feature_method_names())}) "
            "transfer from a teacher trained on other classes: use those, or a teacher trained on these classes"
        )


__all__ = ["AGGREGATORS", "Aggregator", "ConfidenceAggregator", "MeanAggregator", "WeightedAggregator",
           "build_aggregator", "check_label_spaces", "check_teachers", "feature_method_names", "mixture_logits",
           "output_classes"]
