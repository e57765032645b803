"""Losses on the logits: hard labels, Hinton's soft targets, decoupled KD (DKD) and DIST."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdistill.collectives import position_mean_scale
from kdistill.methods.base import Method, StepContext, require_non_negative, require_positive


def softened_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                temperature: float) -> torch.Tensor:
    """KL(teacher_T || student_T) averaged over the batch, times T^2.

    The T^2 keeps the gradient's magnitude independent of T (Hinton et al. 2015, section 2), so the
    weight of the soft term need not be re-tuned when the temperature changes.
    """
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * temperature**2


IGNORE_INDEX = -100  # F.cross_entropy's default: positions that are not scored (padding)


class HardLabel(Method):
    name = "hard_label"
    summary = "cross-entropy with the ground-truth labels"
    reference = "-"
    needs_teacher = False
    needs_labels = True
    uses_logits = False
    supervises_labels = True

    def __init__(self, weight: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__(weight)
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing: must be in [0, 1) (got {label_smoothing})")
        self.label_smoothing = label_smoothing

    def loss_terms(self, ctx: StepContext) -> torch.Tensor:
        if ctx.labels is None:
            raise RuntimeError("hard_label needs labels, but the batch has none")
        logits = ctx.student_logits.float()
        if ctx.labels.dim() < 2 or ctx.labels.is_floating_point():
            return F.cross_entropy(logits, ctx.labels, label_smoothing=self.label_smoothing)
        # one label per position (a language model's (B, T)): the mean over the scored positions of
        # the global batch, so that N processes equal one also when a padded block holds fewer
        summed = F.cross_entropy(logits, ctx.labels, label_smoothing=self.label_smoothing, reduction="sum")
        positions = int((ctx.labels != IGNORE_INDEX).sum())
        scale = position_mean_scale(positions, ctx.labels.shape[0], logits.device)
        return summed * scale if positions else logits.sum() * 0.0


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


class DKD(Method):
    """Decoupled KD: KD split into a target-class term (TCKD) and a non-target-class term (NCKD).

    With p = softmax(z / T), b = (p_gt, 1 - p_gt) the binary target / non-target distribution and
    p^ the distribution over the non-target classes only (renormalised),

        TCKD = KL(b_teacher || b_student) * T^2,   NCKD = KL(p^_teacher || p^_student) * T^2

    (both averaged over the batch) and the loss is `alpha * TCKD + beta * NCKD`, times a warm-up
    factor that ramps linearly from 0 to 1 per step over the first `warmup` share of the run
    (default 20/240: mdistiller's 20 of 240 epochs, as a share, so a 24-epoch run ramps over 2
    epochs rather than never reaching full weight or skipping the ramp), or over `warmup_epochs`
    (fractional) epochs when that is given instead. mdistiller ramps per epoch, min(epoch / 20, 1)
    with 1-based epochs; the per-step ramp is the same line without the stairs. Defaults are the
    paper's CIFAR settings for res32x4 -> res8x4 (beta 8); mdistiller uses beta 2 for res56 ->
    res20. Returns the terms `tckd` and `nckd` (already multiplied by alpha / beta and the
    warm-up factor). The cross-entropy on labels is not included: add `hard_label` (mdistiller
    uses CE weight 1); the engine warns when a run has no label term. Labels given as rows of class
    probabilities (float (B, C): one-hot, or soft labels) set each sample's target class to the row's
    argmax: exact for one-hot rows, the most probable class for soft ones.
    """

    name = "dkd"
    summary = "decoupled KD: target-class (TCKD) and non-target-class (NCKD) KL terms, weighted separately"
    reference = "Zhao, Cui, Song, Qiu, Liang 2022, Decoupled Knowledge Distillation (arXiv:2203.08679)"
    needs_labels = True

    def __init__(self, weight: float = 1.0, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0,
                 warmup: float = 20 / 240, warmup_epochs: float | None = None) -> None:
        super().__init__(weight)
        require_non_negative("alpha", alpha)
        require_non_negative("beta", beta)
        require_positive("temperature", temperature)
        for key, value in (("warmup", warmup), ("warmup_epochs", warmup_epochs)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
                raise ValueError(f"{key}: must be a number >= 0 (got {value!r})")
        if not warmup <= 1:
            raise ValueError(f"warmup: must be a share of the run in [0, 1] (got {warmup!r})")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.temperature = float(temperature)
        self.warmup = float(warmup)
        self.warmup_epochs = None if warmup_epochs is None else float(warmup_epochs)

    def warmup_factor(self, ctx: StepContext) -> float:
        """Linear ramp 0 -> 1 over the warm-up, evaluated per step from the run's progress."""
        span = self.warmup_epochs if self.warmup_epochs is not None else self.warmup * ctx.num_epochs
        if span <= 0:
            return 1.0
        return min(ctx.epochs_done / span, 1.0)

    def loss_terms(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        if ctx.labels is None:
            raise RuntimeError("dkd needs labels, but the batch has none")
        labels = ctx.labels.argmax(1) if ctx.labels.is_floating_point() else ctx.labels  # probability rows
        tckd, nckd = dkd_terms(ctx.student_logits, ctx.teacher, labels, self.temperature)
        factor = self.warmup_factor(ctx)
        return {"tckd": factor * self.alpha * tckd, "nckd": factor * self.beta * nckd}

    def extra_repr(self) -> str:
        return (f"weight={self.weight}, alpha={self.alpha}, beta={self.beta}, "
                f"temperature={self.temperature}, warmup={self.warmup}, warmup_epochs={self.warmup_epochs}")


def dkd_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
              temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(TCKD, NCKD), each a batch-mean KL times T^2, computed in log space (no log(0))."""
    zs = student_logits.float() / temperature
    zt = teacher_logits.float() / temperature
    batch, classes = zs.shape
    if classes < 2:
        raise ValueError(f"dkd needs at least 2 classes (got logits of shape {tuple(zs.shape)})")
    gt = torch.zeros_like(zs, dtype=torch.bool).scatter_(1, labels.reshape(-1, 1).long(), True)

    def binary_log_probs(z: torch.Tensor) -> torch.Tensor:
        log_all = torch.logsumexp(z, dim=1)
        log_gt = z[gt] - log_all
        log_other = torch.logsumexp(z.masked_fill(gt, float("-inf")), dim=1) - log_all
        return torch.stack([log_gt, log_other], dim=1)

    bs, bt = binary_log_probs(zs), binary_log_probs(zt)
    tckd = F.kl_div(bs, bt, reduction="batchmean", log_target=True) * temperature**2
    others_s = F.log_softmax(zs[~gt].view(batch, classes - 1), dim=1)
    others_t = F.log_softmax(zt[~gt].view(batch, classes - 1), dim=1)
    nckd = F.kl_div(others_s, others_t, reduction="batchmean", log_target=True) * temperature**2
    return tckd, nckd


def pearson_rows(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation of each row of `a` with the same row of `b`."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


class DIST(Method):
    """DIST: match the *relations* of predictions with a Pearson correlation instead of exact KL.

    With Y = softmax(z / T) (B x C),

        inter = T^2 * (1 - mean_i pearson(Y_s[i, :], Y_t[i, :]))   (each sample's class ranking)
        intra = T^2 * (1 - mean_c pearson(Y_s[:, c], Y_t[:, c]))   (each class across the batch)

    and the loss is `beta * inter + gamma * intra` (returned as the terms `inter` and `intra`,
    already multiplied by beta / gamma), as in the authors' code (eps 1e-8 in the correlation).
    Defaults are the paper's ImageNet settings (beta = gamma = 1, T = 1); its CIFAR-100 runs use
    T = 4 and beta = gamma = 2. The intra-class term compares samples with each other, so under
    DDP both terms are computed on the global batch (`Method.global_batch`).
    """

    name = "dist"
    compares_samples = True
    summary = ("Pearson-correlation matching of predictions: inter-class (per sample) and intra-class "
               "(per class)")
    reference = ("Huang, You, Wang, Qian, Xu 2022, Knowledge Distillation from A Stronger Teacher "
                 "(arXiv:2205.10536)")

    def __init__(self, weight: float = 1.0, beta: float = 1.0, gamma: float = 1.0,
                 temperature: float = 1.0) -> None:
        super().__init__(weight)
        require_non_negative("beta", beta)
        require_non_negative("gamma", gamma)
        require_positive("temperature", temperature)
        self.beta = float(beta)
        self.gamma = float(gamma)
        self.temperature = float(temperature)

    def loss_terms(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        t = self.temperature
        # the intra-class term correlates each class across the batch: under DDP, the global batch
        student, teacher = self.global_batch(ctx.student_logits.float(), ctx.teacher.float())
        ys = F.softmax(student / t, dim=1)
        yt = F.softmax(teacher / t, dim=1)
        inter = t**2 * (1 - pearson_rows(ys, yt).mean())
        intra = t**2 * (1 - pearson_rows(ys.t(), yt.t()).mean())
        return {"inter": self.beta * inter, "intra": self.gamma * intra}

    def extra_repr(self) -> str:
        return f"weight={self.weight}, beta={self.beta}, gamma={self.gamma}, temperature={self.temperature}"


__all__ = ["DIST", "DKD", "HardLabel", "LogitMSE", "SoftTarget", "dkd_terms", "pearson_rows",
           "require_non_negative", "softened_kl"]
