"""Token-level distillation of language models: a divergence between the teacher's and the student's
next-token distributions at every position, padding masked.

Scores are (B, V, T) -- vocabulary on dimension 1, PyTorch's per-position convention, which is what
`kdistill.lm.CausalLMScores` gives -- or (B, V) for one position. Positions whose label is -100
(padding, the last position of a block) are left out; the loss is the mean over the other
positions of the divergence (summed over the vocabulary), times T^2 at temperature T (as soft-target
KD, so the gradient's scale does not shrink with T).

Under DDP the mean is over the positions of the global batch, exactly as one process takes it (each
rank scales its sum by the global counts: see `kdistill.collectives.position_mean_scale`), so a 2-process run
equals a 1-process one even when blocks hold different numbers of positions. (With gradient
accumulation each micro-batch is weighted by its share of blocks, exact when every block has the
same number of positions, as all but a text's last block do.)

- `forward_kl`: KL(p || q), p the teacher, q the student: mass-covering; the usual word-level KD
  (Kim & Rush 2016).
- `reverse_kl`: KL(q || p): mode-seeking (MiniLLM, Gu et al. 2024).
- `jsd`: the generalised Jensen-Shannon divergence of GKD (Agarwal et al. 2024),
  beta KL(p || m) + (1 - beta) KL(q || m) with m = beta p + (1 - beta) q. For small beta it is
  beta times the forward KL to first order, near 1 (1 - beta) times the reverse KL; the endpoints are
  defined as those limits: beta = 0 is the forward KL, beta = 1 the reverse KL (as TRL's GKD does).

Top-k teachers. The top-k teacher cache (kdistill.lm.topk_cache) keeps each position's k largest
logits and one fill value for the other V - k tokens, chosen so that they keep their total
probability, spread evenly: `fill = T (logsumexp(rest / T) - log(V - k))` (as the vision cache
does). The reconstructed teacher is then exact on its top k and on the tail's total mass, and every
divergence above is computed on full distributions; `top_k` here does the same to a live teacher,
so the live and cached paths compute the same value. (Restricting both distributions to the top k
and renormalising there was tried first and fails: the student's own mass outside the top k is
then free, and on SST-2 a top-32 student's held-out perplexity rose to 394 against 74 with the
full teacher; see benchmarks/lm.py.)

Tokens the teacher rules out (a logit of -inf: p_i = 0; a top-k teacher whose fill is -inf because
its tail has no mass). The forward KL is finite and computed exactly on the student's full
distribution: KL(p || q) = sum over p_i > 0 of p_i log(p_i / q_i), its terms with p_i = 0 are 0,
and its gradient q_i - p_i = q_i still pushes the student's mass off the ruled-out tokens.
(Renormalising q on the teacher's support would add log Q_S <= 0, the log of the student's mass
there, to that value, and drop exactly that push.) The generalised JSD with 0 < beta < 1 is finite
and exact too: m_i = (1 - beta) q_i > 0 wherever p_i = 0. The reverse KL is infinite whenever the
student puts any mass on a ruled-out token (q_i log(q_i / 0)); it is defined here as the KL of the
student conditioned on the teacher's support, KL(q|S || p) with q|S = q / Q_S, which is finite and
equal to the true value when Q_S = 1; the same for the JSD at beta = 1. Gradients stay finite: no
-inf ever meets a subtraction.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kdistill.collectives import position_mean_scale
from kdistill.methods.base import Method, StepContext, require_positive
from kdistill.methods.logits import IGNORE_INDEX


def position_rows(scores: torch.Tensor, labels: torch.Tensor | None, ignore_index: int = IGNORE_INDEX
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(N, V) rows of (B, V, T) or (B, V) scores, and the mask of rows to keep (None: all)."""
    rows = scores.movedim(1, -1).reshape(-1, scores.shape[1])
    if labels is None:
        return rows, None
    if labels.numel() != rows.shape[0]:
        raise ValueError(f"labels {tuple(labels.shape)} do not match scores {tuple(scores.shape)}: give one label "
                         "per position (B, T) for (B, V, T) scores")
    return rows, labels.reshape(-1) != ignore_index


def top_k_logits(logits: torch.Tensor, k: int, dim: int = 1, temperature: float = 1.0) -> torch.Tensor:
    """`logits` with the k largest per position kept and every other one set to the fill value that
    keeps their total probability at temperature T, spread evenly (what the top-k cache stores)."""
    size = logits.shape[dim]
    if k >= size:
        return logits
    values, indices = logits.topk(k, dim=dim)
    rest = logits.scatter(dim, indices, float("-inf"))
    fill = temperature * (torch.logsumexp(rest / temperature, dim=dim, keepdim=True) - math.log(size - k))
    return fill.expand_as(logits).clone().scatter_(dim, indices, values)


def _scaled(student: torch.Tensor, teacher: torch.Tensor, temperature: float
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(log q, log p) at temperature T on the full vocabulary, and the teacher's support (None:
    every token, the usual case, with no masking at all)."""
    student, teacher = student.float() / temperature, teacher.float() / temperature
    finite = torch.isfinite(teacher)
    support = None if bool(finite.all()) else finite
    return F.log_softmax(student, dim=-1), F.log_softmax(teacher, dim=-1), support


def _kl(log_a: torch.Tensor, log_b: torch.Tensor, support_of_a: torch.Tensor | None = None) -> torch.Tensor:
    """KL(a || b) per row; terms where a is 0 (off `support_of_a`) are exactly 0, with finite gradients."""
    if support_of_a is None:
        return (log_a.exp() * (log_a - log_b)).sum(-1)
    safe_a = log_a.masked_fill(~support_of_a, 0.0)  # -inf never enters a subtraction
    return torch.where(support_of_a, safe_a.exp() * (safe_a - log_b), 0.0).sum(-1)


def forward_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) per row of (N, V) logits; exact also where the teacher rules tokens out."""
    log_q, log_p, support = _scaled(student, teacher, temperature)
    return _kl(log_p, log_q, support)


def reverse_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(student || teacher) per row of (N, V) logits; where the teacher rules tokens out, the student
    conditioned on the teacher's support (the true value is infinite; see the module's docstring)."""
    log_q, log_p, support = _scaled(student, teacher, temperature)
    if support is None:
        return _kl(log_q, log_p)
    conditioned = F.log_softmax((student.float() / temperature).masked_fill(~support, float("-inf")), dim=-1)
    return _kl(conditioned, log_p.masked_fill(~support, 0.0), support)


def generalized_jsd(student: torch.Tensor, teacher: torch.Tensor, beta: float = 0.5,
                    temperature: float = 1.0) -> torch.Tensor:
    """beta KL(p || m) + (1 - beta) KL(q || m), m = beta p + (1 - beta) q, per row; beta 0 / 1: the
    forward / reverse KL (the limits of JSD / beta and JSD / (1 - beta))."""
    if beta == 0:
        return forward_kl(student, teacher, temperature)
    if beta == 1:
        return reverse_kl(student, teacher, temperature)
    log_q, log_p, support = _scaled(student, teacher, temperature)
    log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log1p(-beta))  # finite: m >= (1 - beta) q > 0
    return beta * _kl(log_p, log_m, support) + (1 - beta) * _kl(log_q, log_m)


class TokenDivergence(Method):
    """The shared part: rows per position, padding masked, mean over positions, times T^2."""

    name = "token_divergence"

    def __init__(self, weight: float = 1.0, temperature: float = 1.0, top_k: int | None = None,
                 ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__(weight)
        require_positive("temperature", temperature)
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k: must be >= 1 or null (got {top_k})")
        self.temperature, self.top_k, self.ignore_index = float(temperature), top_k, ignore_index

    def divergence(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss_terms(self, ctx: StepContext) -> torch.Tensor:
        teacher = ctx.teacher
        if teacher.shape != ctx.student_logits.shape:
            raise ValueError(f"{self.label}: teacher scores {tuple(teacher.shape)} and student scores "
                             f"{tuple(ctx.student_logits.shape)} differ; teacher and student need one tokenizer")
        if self.top_k is not None:
            teacher = top_k_logits(teacher, self.top_k, temperature=self.temperature)
        student_rows, keep = position_rows(ctx.student_logits, ctx.labels, self.ignore_index)
        teacher_rows, _ = position_rows(teacher, None)
        if keep is not None:
            student_rows, teacher_rows = student_rows[keep], teacher_rows[keep]
        total = self.divergence(student_rows, teacher_rows).sum() if student_rows.shape[0] else None
        scale = position_mean_scale(student_rows.shape[0], ctx.student_logits.shape[0], ctx.student_logits.device)
        if total is None or scale == 0:
            return ctx.student_logits.sum() * 0.0  # a batch of padding alone: no term, still a graph
        return total * scale * self.temperature ** 2

    def extra_repr(self) -> str:
        return f"weight={self.weight}, temperature={self.temperature}, top_k={self.top_k}"


class ForwardKL(TokenDivergence):
    name = "forward_kl"
    summary = "token-level KL(teacher || student) at every position, padding masked (LMs; scores (B, V, T))"
    reference = "Kim & Rush 2016, Sequence-Level Knowledge Distillation (arXiv:1606.07947), word-level KD"

    def divergence(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return forward_kl(student, teacher, self.temperature)


class ReverseKL(TokenDivergence):
    name = "reverse_kl"
    summary = "token-level KL(student || teacher): mode-seeking, padding masked (LMs; scores (B, V, T))"
    reference = "Gu, Dong, Wei, Huang 2024, MiniLLM (arXiv:2306.08543)"

    def divergence(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return reverse_kl(student, teacher, self.temperature)


class GeneralizedJSD(TokenDivergence):
    name = "jsd"
    summary = "generalised Jensen-Shannon mix of forward and reverse KL (beta 0: forward, 1: reverse), per token"
    reference = "Agarwal et al. 2024, On-Policy Distillation of Language Models (GKD, arXiv:2306.13649)"

    def __init__(self, weight: float = 1.0, beta: float = 0.5, temperature: float = 1.0, top_k: int | None = None,
                 ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__(weight, temperature, top_k, ignore_index)
        if not 0 <= beta <= 1:
            raise ValueError(f"beta: must be in [0, 1] (got {beta})")
        self.beta = float(beta)

    def divergence(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return generalized_jsd(student, teacher, self.beta, self.temperature)


__all__ = ["ForwardKL", "GeneralizedJSD", "ReverseKL", "TokenDivergence", "forward_kl", "generalized_jsd",
           "reverse_kl", "top_k_logits"]
