"""Losses on the logits: hard labels and Hinton's soft targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdistill.methods.base import Method, StepContext, require_non_negative, require_positive


def softened_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher_T || student_T) averaged over the batch, times T^2.

    The T^2 keeps the gradient's magnitude independent of T (Hinton et al. 2015, section 2), so the
    weight of the soft term need not be re-tuned when the temperature changes.
    """
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * temperature**2


class HardLabel(Method):
    name = "hard_label"
    summary = "cross-entropy with the ground-truth labels"
    reference = "-"
    needs_teacher = False
    needs_labels = True
    uses_logits = False

    def __init__(self, weight: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__(weight)
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing: must be in [0, 1) (got {label_smoothing})")
        self.label_smoothing = label_smoothing

    def loss_terms(self, ctx: StepContext) -> torch.Tensor:
        if ctx.labels is None:
            raise RuntimeError("hard_label needs labels, but the batch has none")
        return F.cross_entropy(ctx.student_logits.float(), ctx.labels, label_smoothing=self.label_smoothing)


class SoftTarget(Method):
    name = "soft_target"
    summary = "KL between temperature-softened teacher and student distributions, times T^2"
    reference = "Hinton, Vinyals, Dean 2015, Distilling the Knowledge in a Neural Network (arXiv:1503.02531)"

    def __init__(self, weight: float = 0.9, temperature: float = 4.0) -> None:
        super().__init__(weight)
        require_positive("temperature", temperature)
        self.temperature = float(temperature)

    def loss_terms(self, ctx: StepContext) -> torch.Tensor:
        return softened_kl(ctx.student_logits, ctx.teacher, self.temperature)

    def extra_repr(self) -> str:
        return f"weight={self.weight}, temperature={self.temperature}"


class LogitMSE(Method):
    name = "logit_mse"
    summary = "mean squared error between raw student and teacher logits"
    reference = "Ba and Caruana 2014, Do Deep Nets Really Need to be Deep?"

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__(weight)

    def loss_terms(self, ctx: StepContext) -> torch.Tensor:
        return F.mse_loss(ctx.student_logits.float(), ctx.teacher.float())


__all__ = ["HardLabel", "LogitMSE", "SoftTarget", "require_non_negative", "softened_kl"]
