"""Losses on intermediate features: FitNets hints, attention transfer, similarity preserving, RKD,
PKT and NST.

Every method names the layers it compares with taps (`path` or `path:selector`, see
`kdistill.taps`): one pair (`student_layer`, `teacher_layer`) or several (`student_layers`,
`teacher_layers`, same length). Teacher features come from teacher `teacher` (default 0).

Losses, defaults and weights follow the reference implementations of the CRD benchmark
(RepDistiller, Tian et al. 2020) and mdistiller, which reproduce the papers; each class says where
it departs from them. Everything, adapters included, is computed in float32 with autocast
switched off (`FeatureMethod.forward`): Gram matrices, distances and kernels lose too much in
bf16 / fp16.

Vector methods (RKD, PKT) compare one vector per sample. Given a feature map (B, C, H, W) or a
token sequence (B, L, D) they global-average-pool it to (B, C) / (B, D) by default: the reference
code applies them to the pooled penultimate features ("pooled_feat"). With `flatten: true` the
feature is flattened to (B, C*H*W) instead (what the reference loss functions do with any input).

SP, RKD and PKT compare the samples of a batch with each other. Under DDP each process holds a
shard, so in training they gather the global batch first (`Method.global_batch`, with gradients):
N processes compute the loss of one process on the whole batch, at the cost of holding the global
B x B matrices (RKD's angles: B^3) on every process. Hint, attention transfer and NST are means of
per-sample terms and need no gather.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kdistill.errors import BadInput
from kdistill.methods.adapters import build_adapter, feature_tensor, resize_map
from kdistill.methods.base import Method, StepContext, require_non_negative, require_positive


# helpers ------------------------------------------------------------------------------------------
def layer_list(key: str, value: str | Sequence[str]) -> list[str]:
    """A non-empty list of tap strings (a single string is one layer)."""
    layers = [value] if isinstance(value, str) else list(value) if isinstance(value, list | tuple) else None
    if not layers or not all(isinstance(v, str) and v.strip() for v in layers):
        raise ValueError(f"{key}: must be a non-empty list of layer names (got {value!r})")
    return [v.strip() for v in layers]


def layer_name(key: str, value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key}: must be a layer name such as 'layer3' or 'linear:input' (got {value!r})")
    return value.strip()


def teacher_number(value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"teacher: must be an integer >= 0 (got {value!r})")
    return value


def to_vectors(x: torch.Tensor, flatten: bool = False) -> torch.Tensor:
    """(B, D) from (B, D), (B, L, D) or (B, C, H, W): mean over positions, or flatten if asked."""
    if x.dim() == 2:
        return x
    if x.dim() < 2:
        raise ValueError(f"expected a batch of features, got a tensor of shape {tuple(x.shape)}")
    if flatten:
        return x.flatten(1)
    if x.dim() == 3:  # tokens (B, L, D)
        return x.mean(dim=1)
    return x.flatten(2).mean(dim=2)  # maps (B, C, ...)


def require_map(x: torch.Tensor, tap: str, owner: str, method: str) -> torch.Tensor:
    if x.dim() != 4:
        raise ValueError(f"{method} compares feature maps (B, C, H, W), but {owner} tap '{tap}' has shape "
                         f"{tuple(x.shape)}; tap a convolutional layer")
    return x


def to_common_size(fs: torch.Tensor, ft: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool the larger of two maps down to the smaller spatial size (as in RepDistiller)."""
    size = (min(fs.shape[2], ft.shape[2]), min(fs.shape[3], ft.shape[3]))
    return resize_map(fs, size), resize_map(ft, size)


class FeatureMethod(Method):
    """Shared plumbing: layer pairs, taps, and reading the step's features."""

    uses_logits = False

    def __init__(self, student_layers: list[str], teacher_layers: list[str], weight: float, teacher: int,
                 keys: tuple[str, str] = ("student_layers", "teacher_layers")) -> None:
        super().__init__(weight)
        if len(student_layers) != len(teacher_layers):
            raise ValueError(f"{keys[1]}: must name as many layers as {keys[0]} "
                             f"({len(teacher_layers)} vs {len(student_layers)})")
        self.student_layers = student_layers
        self.teacher_layers = teacher_layers
        self.teacher = teacher_number(teacher)

    def student_taps(self) -> list[str]:
        return list(self.student_layers)

    def teacher_taps(self) -> list[str]:
        return list(self.teacher_layers)

    def teacher_index(self) -> int:
        return self.teacher

    def pairs(self, ctx: StepContext) -> Iterator[tuple[torch.Tensor, torch.Tensor, str, str]]:
        """(student feature, teacher feature, student tap, teacher tap) for each layer pair."""
        if len(ctx.teacher_features) <= self.teacher:
            raise RuntimeError(f"{self.name} reads teacher {self.teacher}'s features, but the step has "
                               f"{len(ctx.teacher_features)} teacher(s)")
        teacher_features = ctx.teacher_features[self.teacher]
        for s_tap, t_tap in zip(self.student_layers, self.teacher_layers, strict=True):
            fs = feature_tensor(ctx.student_features[s_tap], s_tap, "student")
            ft = feature_tensor(teacher_features[t_tap], t_tap, f"teacher {self.teacher}")
            if fs.shape[0] != ft.shape[0]:
                raise ValueError(f"student '{s_tap}' has batch size {fs.shape[0]} but teacher '{t_tap}' has "
                                 f"{ft.shape[0]}; tap outputs whose first dimension is the batch")
            yield fs, ft, s_tap, t_tap

    def forward(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        with torch.autocast(device_type=ctx.student_logits.device.type, enabled=False):
            return super().forward(ctx)

    def extra_repr(self) -> str:
        return f"weight={self.weight}, student={self.student_layers}, teacher={self.teacher_layers}"


# FitNets ------------------------------------------------------------------------------------------
class Hint(FeatureMethod):
    """FitNets hint: MSE between a learned regressor of the student's guided layer and the teacher's hint.

    loss = mean((r(f_s) - f_t)^2), with r the adapter of `kdistill.methods.adapters.build_adapter`
    (always learned, even for equal shapes, like FitNets' regressor): 1x1 conv + BN and a resize for
    maps, a Linear for vectors and tokens. RepDistiller's regressor is a strided / transposed /
    valid conv + BN + ReLU; kdistill's 1x1 conv + BN + resize is the general-purpose variant. The
    weight 100 is the CRD benchmark's. FitNets' two stages are written with `end_epoch` on the hint
    and `start_epoch` on the KD term.
    """

    name = "hint"
    summary = "FitNets: MSE between a learned regressor of a student layer and a teacher layer"
    reference = "Romero et al. 2015, FitNets: Hints for Thin Deep Nets (arXiv:1412.6550)"

    def __init__(self, student_layer: str, teacher_layer: str, weight: float = 100.0,
                 teacher: int = 0) -> None:
        super().__init__([layer_name("student_layer", student_layer)],
                         [layer_name("teacher_layer", teacher_layer)], weight, teacher)
        self.adapter: nn.Module | None = None

    def build(self, ctx: StepContext) -> None:
        for fs, ft, s_tap, t_tap in self.pairs(ctx):
            adapter = build_adapter(fs.shape, ft.shape, s_tap, t_tap, learn_when_equal=True)
            self.adapter = adapter.to(fs.device)

    def loss_terms(self, ctx: StepContext) -> torch.Tensor:
        if self.adapter is None:
            raise RuntimeError("hint: build(ctx) must run before the first step (it creates the regressor)")
        fs, ft, _, _ = next(self.pairs(ctx))
        return F.mse_loss(self.adapter(fs.float()), ft.float())


# Attention transfer ---------------------------------------------------------------------------------
def attention_map(f: torch.Tensor, p: float) -> torch.Tensor:
    """Activation-based spatial attention: L2-normalised mean over channels of |A|^p, (B, H*W)."""
    return F.normalize(f.float().abs().pow(p).mean(dim=1).flatten(1), dim=1)


class AttentionTransfer(FeatureMethod):
    """Attention transfer: match the normalised spatial attention maps of several layer pairs.

    For each pair, with Q = normalize(mean_c |A_c|^p) flattened over positions,
    loss_pair = mean((Q_s - Q_t)^2) (RepDistiller's form of the paper's ||Q_s - Q_t||_2 term); the
    loss is the sum over pairs. When the spatial sizes differ, the larger map is average-pooled to
    the smaller size before the attention is taken. Channels may differ (attention sums them out).
    A 1x1 map is refused at build: its normalised attention is constant, so the loss would be 0.
    Defaults p = 2 and weight 1000 are the CRD benchmark's. The paper's |A|^p is used (RepDistiller
    writes A^p; identical for p = 2).
    """

    name = "attention_transfer"
    summary = "attention transfer: match normalised spatial attention maps (mean_c |A|^p) of layer pairs"
    reference = ("Zagoruyko and Komodakis 2017, Paying More Attention to Attention (arXiv:1612.03928)")

    def __init__(self, student_layers: list[str], teacher_layers: list[str], weight: float = 1000.0,
                 p: float = 2.0, teacher: int = 0) -> None:
        super().__init__(layer_list("student_layers", student_layers),
                         layer_list("teacher_layers", teacher_layers), weight, teacher)
        require_positive("p", p)
        self.p = float(p)

    def build(self, ctx: StepContext) -> None:  # one position's normalised attention is 1: a loss of 0 always
        for fs, ft, s_tap, t_tap in self.pairs(ctx):
            for x, where in ((fs, f"student tap '{s_tap}'"), (ft, f"teacher {self.teacher} tap '{t_tap}'")):
                if x.dim() == 4 and x.shape[2] * x.shape[3] == 1:
                    raise BadInput(f"{self.label}: {where} has a 1x1 spatial map {tuple(x.shape)}: its normalised "
                                   "attention is constant, the loss 0; tap an earlier layer with a spatial map")

    def loss_terms(self, ctx: StepContext) -> torch.Tensor:
        total = None
        for fs, ft, s_tap, t_tap in self.pairs(ctx):
            fs = require_map(fs, s_tap, "student", self.name)
            ft = require_map(ft, t_tap, f"teacher {self.teacher}", self.name)
            fs, ft = to_common_size(fs.float(), ft.float())
            term = (attention_map(fs, self.p) - attention_map(ft, self.p)).pow(2).mean()
            total = term if total is None else total + term
        return total

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p}"


# Similarity preserving ------------------------------------------------------------------------------
class SimilarityPreserving(FeatureMethod):
    """Similarity-preserving KD: match the row-normalised batch similarity (Gram) matrices.

    For each pair, with Q = features flattened to (B, N) and G = row-L2-normalise(Q Q^T),
    loss_pair = ||G_t - G_s||_F^2 / B^2; the loss is the sum over pairs. Shapes of the two sides may
    differ freely (the Gram matrix is B x B). Weight 3000 is the paper's / CRD benchmark's.
    """

    name = "sp"
    compares_samples = True
    summary = "similarity preserving: match row-normalised B x B similarity matrices of layer pairs"
    reference = "Tung and Mori 2019, Similarity-Preserving Knowledge Distillation (arXiv:1907.09682)"

    def __init__(self, student_layers: list[str], teacher_layers: list[str], weight: float = 3000.0,
                 teacher: int = 0) -> None:
        super().__init__(layer_list("student_layers", student_layers),
                         layer_list("teacher_layers", teacher_layers), weight, teacher)

    def loss_terms(self, ctx: StepContext) -> torch.Tensor:
        total = None
        for fs, ft, _, _ in self.pairs(ctx):
            qs, qt = self.global_batch(fs.float().flatten(1), ft.float().flatten(1))
            batch = qs.shape[0]
            gs = F.normalize(qs @ qs.t(), dim=1)
            gt = F.normalize(qt @ qt.t(), dim=1)
            term = (gt - gs).pow(2).sum() / (batch * batch)
            total = term if total is None else total + term
        return total


# RKD ----------------------------------------------------------------------------------------------
def pairwise_distances(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean distances between rows, zero on the diagonal (RKD's pdist, non-squared)."""
    square = e.pow(2).sum(dim=1)
    d = (square.unsqueeze(1) + square.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps).sqrt()
    eye = torch.eye(len(e), dtype=torch.bool, device=e.device)
    return d.masked_fill(eye, 0.0)


def _mean_normalised(d: torch.Tensor) -> torch.Tensor:
    positive = d > 0
    return d / (d[positive].sum() / positive.sum().clamp(min=1)).clamp(min=1e-12)


def triplet_cosines(e: torch.Tensor) -> torch.Tensor:
    """cos of the angle at vertex i between (e_j - e_i) and (e_k - e_i), for all i, j, k (B^3)."""
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # [i, j] = unit(e_j - e_i)
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()


class RKD(FeatureMethod):
    """Relational KD: match the pairwise distances and triplet angles of a batch of embeddings.

    distance = smooth_l1(d_s / mean(d_s), d_t / mean(d_t)) over all B^2 pairs (means over the
    non-zero distances); angle = smooth_l1(cos_s, cos_t) over all B^3 triplets, the cosine of the
    angle at each vertex i between the directions to j and k. Returns the terms `distance` and
    `angle`, already multiplied by distance_weight = 25 and angle_weight = 50 (the paper's and the
    CRD benchmark's values). Feature maps / tokens are pooled to vectors (see the module doc).
    """

    name = "rkd"
    compares_samples = True
    summary = "relational KD: match normalised pairwise distances and triplet angles of embeddings"
    reference = "Park, Kim, Lu, Cho 2019, Relational Knowledge Distillation (arXiv:1904.05068)"

    def __init__(self, student_layer: str, teacher_layer: str, weight: float = 1.0,
                 distance_weight: float = 25.0, angle_weight: float = 50.0, flatten: bool = False,
                 teacher: int = 0) -> None:
        super().__init__([layer_name("student_layer", student_layer)],
                         [layer_name("teacher_layer", teacher_layer)], weight, teacher)
        require_non_negative("distance_weight", distance_weight)
        require_non_negative("angle_weight", angle_weight)
        self.distance_weight = float(distance_weight)
        self.angle_weight = float(angle_weight)
        self.flatten = bool(flatten)

    def loss_terms(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        fs, ft, _, _ = next(self.pairs(ctx))
        s, t = self.global_batch(to_vectors(fs.float(), self.flatten), to_vectors(ft.float(), self.flatten))
        if s.shape[0] < 2:  # no pairs in a batch of one
            zero = s.sum() * 0.0
            return {"distance": zero, "angle": zero}
        with torch.no_grad():
            t_d = _mean_normalised(pairwise_distances(t))
            t_angle = triplet_cosines(t)
        s_d = _mean_normalised(pairwise_distances(s))
        s_angle = triplet_cosines(s)
        return {"distance": self.distance_weight * F.smooth_l1_loss(s_d, t_d),
                "angle": self.angle_weight * F.smooth_l1_loss(s_angle, t_angle)}

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, distance_weight={self.distance_weight}, "
                f"angle_weight={self.angle_weight}")


# PKT ----------------------------------------------------------------------------------------------
def cosine_kernel_probabilities(x: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Rows: the conditional probabilities p(j|i) of PKT's cosine kernel, (cos + 1) / 2 normalised."""
    x = x / (x.norm(dim=1, keepdim=True) + eps)
    k = (x @ x.t() + 1.0) / 2.0
    return k / k.sum(dim=1, keepdim=True)


class PKT(FeatureMethod):
    """Probabilistic knowledge transfer: match the distributions of cosine similarities in a batch.

    With p(j|i) = K(i, j) / sum_j K(i, j) and K = (cos + 1) / 2 for each side,
    loss = mean_{i,j} p_t(j|i) * log((p_t(j|i) + eps) / (p_s(j|i) + eps)), eps = 1e-7 (the
    authors' cosine-kernel form as in RepDistiller; a mean, not a sum, over the B^2 entries).
    Weight 30000 is the CRD benchmark's. Feature maps / tokens are pooled (see the module doc).
    """

    name = "pkt"
    compares_samples = True
    summary = "probabilistic KT: KL between the cosine-similarity distributions of a batch"
    reference = ("Passalis and Tefas 2018, Learning Deep Representations with Probabilistic Knowledge "
                 "Transfer (ECCV 2018, arXiv:1803.10837)")

    def __init__(self, student_layer: str, teacher_layer: str, weight: float = 30000.0, flatten: bool = False,
                 teacher: int = 0) -> None:
        super().__init__([layer_name("student_layer", student_layer)],
                         [layer_name("teacher_layer", teacher_layer)], weight, teacher)
        self.flatten = bool(flatten)

    def loss_terms(self, ctx: StepContext) -> torch.Tensor:
        eps = 1e-7
        fs, ft, _, _ = next(self.pairs(ctx))
        s, t = self.global_batch(to_vectors(fs.float(), self.flatten), to_vectors(ft.float(), self.flatten))
        ps = cosine_kernel_probabilities(s, eps)
        pt = cosine_kernel_probabilities(t, eps)
        return (pt * torch.log((pt + eps) / (ps + eps))).mean()


# NST ----------------------------------------------------------------------------------------------
def polynomial_kernel_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """mean over the batch and all channel pairs of (a_i . b_j)^2; a: (B, Ca, N), b: (B, Cb, N)."""
    return torch.bmm(a, b.transpose(1, 2)).pow(2).mean()


class NST(FeatureMethod):
    """Neuron selectivity transfer: MMD between the distributions of student and teacher channels.

    Each channel's activation pattern over the H*W positions is a sample (L2-normalised); for each
    pair the loss is the squared MMD with the polynomial kernel k(x, y) = (x . y)^2 (d = 2, c = 0,
    the paper's choice), averaged over the batch:

        MMD^2 = mean k(t_i, t_j) + mean k(s_i, s_j) - 2 mean k(s_i, t_j)

    summed over pairs; the constant teacher-teacher term is kept so the value is the MMD itself.
    Spatial mismatch: the larger map is average-pooled to the smaller size; the numbers of channels
    may differ. Weight 50 is the CRD benchmark's.
    """

    name = "nst"
    summary = "neuron selectivity transfer: polynomial-kernel MMD between channel activation patterns"
    reference = ("Huang and Wang 2017, Like What You Like: Knowledge Distill via Neuron Selectivity "
                 "Transfer (arXiv:1707.01219)")

    def __init__(self, student_layers: list[str], teacher_layers: list[str], weight: float = 50.0,
                 teacher: int = 0) -> None:
        super().__init__(layer_list("student_layers", student_layers),
                         layer_list("teacher_layers", teacher_layers), weight, teacher)

    def loss_terms(self, ctx: StepContext) -> torch.Tensor:
        total = None
        for fs, ft, s_tap, t_tap in self.pairs(ctx):
            fs = require_map(fs, s_tap, "student", self.name)
            ft = require_map(ft, t_tap, f"teacher {self.teacher}", self.name)
            fs, ft = to_common_size(fs.float(), ft.float())
            s = F.normalize(fs.flatten(2), dim=2)
            t = F.normalize(ft.flatten(2), dim=2)
            term = (polynomial_kernel_mean(t, t).detach() + polynomial_kernel_mean(s, s)
                    - 2 * polynomial_kernel_mean(s, t))
            total = term if total is None else total + term
        return total


__all__ = ["NST", "PKT", "RKD", "AttentionTransfer", "FeatureMethod", "Hint", "SimilarityPreserving",
           "attention_map", "layer_list", "layer_name", "to_vectors"]
