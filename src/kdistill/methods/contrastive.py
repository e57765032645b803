"""Contrastive representation distillation (CRD) with a memory of negatives.

Student and teacher features (one vector per sample: maps and tokens are average-pooled, or
flattened with `flatten: true`) are projected by two trainable linear embeddings to `feature_dim`
and L2-normalised (CRD's `Embed`). Each sample's student embedding must pick out a teacher-side
vector of the *same* sample among `num_negatives` teacher-side vectors of other samples held in a
memory, and symmetrically for the teacher embedding against student-side vectors.

Loss (`objective`): InfoNCE by default (softmax cross-entropy over [positive, K negatives] with
temperature tau); `nce` is the NCE estimator of the CRD code (see below). For an anchor a with
positive p and negatives n_1..n_K (all unit vectors):

    l(a; p, n) = -log( exp(a.p / tau) / (exp(a.p / tau) + sum_k exp(a.n_k / tau)) )

    loss = mean_i l(s_i; p = P_t(i), n = N_t) + mean_i l(t_i; p = P_s(i), n = N_s)

s_i, t_i are this step's student and teacher embeddings (the anchors). Positives and negatives
carry no gradient and come from one source per side, read before this step's memory update:

- `memory: dataset`: P_t(i) = memory_t[i], the teacher memory's row of the anchor's own sample;
  N_t = K rows of memory_t drawn at random (the same for P_s, N_s with memory_s);
- `memory: queue`: P_t(i) = key_t(teacher features of sample i), N_t = the teacher queue, which
  holds earlier outputs of the same momentum key embedding key_t (the same for the student side).

So gradients flow only through the anchors: into the student and embed_s from the first term,
into embed_t from the second (CRD's code does the same). A term whose positive is an empty memory
row counts as 0 in its mean. InfoNCE needs no normalisation constant fitted on the first batch and
is the bound CRD's paper derives its objective from; at chance it is about 2 log(K + 1), so the
CRD weight 0.8 (tuned for the NCE form) may want re-tuning.

`objective: nce` (CRD's code, its ContrastMemory + ContrastLoss; dataset memory only: its noise
distribution is uniform over the N training samples). Scores x_j = exp(a.v_j / tau) / Z, and each
pair is a binary "data or noise?" decision against K noise samples of probability Pn = 1 / N:

    l(a; p, n) = -log( x_p / (x_p + K / N + eps) ) - sum_k log( (K / N) / (x_k + K / N + eps) )

with eps = 1e-7 and the loss the mean of l over the anchors (both directions summed, as above).
Z, one per direction, is fixed once from the first batch that has a positive: N times the mean of
exp(a.v / tau) over its valid (anchor, positive or negative) pairs (CRD fixes it on its first
batch; here the first epoch only fills the memory, so it is the first batch of the second).
Under DDP the mean is over the global batch, so every rank fixes the same Z. A masked negative
(empty, the anchor's own sample, or same-class with `other_classes`) drops its term from the sum.
InfoNCE stays the default, and NCE is there to compare against the reference's own objective
(the weight 0.8 was tuned for it), not as a recommendation. Measured on the collapse set-up below
(benchmarks/crd_objectives.py: digits, CE + CRD, 12 epochs, K = 512, 3 seeds; mean pairwise cosine
of the memories, 1 = one direction): InfoNCE from empty memories 0.29 / 0.26 (student / teacher
side); NCE from empty memories 0.22 / 0.92 (the teacher side collapses: 0.81-1.00); NCE from the
reference's random start 0.96 / 0.99 (both collapse); InfoNCE from a random start 0.50 / 0.48.

Why (issue 8). Before, the positive was the other side's embedding of this step, with gradient
into both sides, against negatives from the memory. Real CNN features share a direction (pooled
ReLU outputs are all positive: mean pairwise cosine 0.6-0.85, and 0.97 for a freshly initialised
student), and so do their embeddings. Pulling s_i and t_i together raises a.p for every anchor at
once along that shared direction, which the older (or still random) memory rows do not have, so a.n
stays low: both sides drift together onto one direction, away from their memories, and once the
memories catch up the loss sits at chance. Measured, CE + CRD for 12 epochs: resnet20 -> resnet8
on 2,000 CIFAR-10 images (K = 4096) ends with both memories at mean pairwise cosine 0.99 and the
CRD term rising 5.5 -> 13; on scikit-learn's digits (small CNNs) the current embeddings are at 0.99
after the first epoch; on fixed synthetic features it needs the shared direction (zero-mean
features: memories at 0.22-0.27; the same features made positive: 0.995). A stop-gradient on that
positive alone is not enough (the other side is trained by its own anchor term and drifts as fast:
queue memories still at 0.94-0.99 on digits, 0.83-0.86 on CIFAR): positive and negatives must come
from the same, equally stale source. The memory's start matters for the same reason: random rows
(as negatives, or as CRD's first-epoch positives) lack the shared direction, which drives the
drift in the first epoch, so memories start empty here (zero rows, never used), not random.
With both changes (12 epochs) the memories end at 0.23-0.31 (dataset) and 0.04-0.12 (queue) on
digits, with the CRD term falling to half of its first active epoch (tests/test_crd_collapse.py);
on the CIFAR set-up above at 0.67 (dataset, term 12.1 -> 10.6) and 0.42-0.47 (queue, K = 1024,
term 8.6 -> 7.1), below the raw features' 0.63 (teacher) - 0.69 (student).

Memories (buffers, saved in checkpoints; never parameters). A zero row is an empty entry: it is
masked out as a negative and, as a positive, drops its anchor's term (counted as 0 in the mean).

- `memory: dataset` (CRD): one student and one teacher embedding per training sample, sized to
  the data set (`ctx.num_samples`) and indexed by the batch's sample indices (`ctx.indices`). The
  positive of sample i is row i of the other side's memory (CRD's ContrastMemory, which reads the
  positive at the anchor's own index and the negatives from the same memory). After each step the
  entries of the batch become normalize(momentum * old + (1 - momentum) * new), new being the
  anchors; an empty row simply becomes new. K negatives are drawn uniformly with replacement per
  step, shared by the whole batch (CRD draws K per sample); a drawn entry that is the anchor's own
  sample, or still empty, is masked out. Departures from CRD's code: memory starts empty, not
  random, so the first epoch (every row still empty when read) only fills the memory and its CRD
  term is 0, where CRD's first epoch contrasts against random vectors.
- `memory: queue` (MoCo, He et al. 2020): the last K keys of each side in a FIFO queue; works for
  any data set size and needs no indices. There is no per-sample row to take the positive from, so
  it is taken as in MoCo: keys come from key embeddings, copies of embed_s / embed_t updated as
  key = key_momentum * key + (1 - key_momentum) * embedding before every training step (buffers,
  no gradient). The positive of s_i is the key of t_i (the teacher key embedding on this step's
  teacher features) and the negatives are earlier teacher keys, so positive and negatives come
  from the same slowly moving map, and symmetrically for t_i; the batch's keys are then enqueued.
  The student's backbone is not averaged (it is the model being distilled): student keys are the
  key embedding of this step's student features. When the batch carries indices they are stored
  with the queue and the anchor's own earlier entries are masked out. `momentum` is not used;
  `key_momentum` 0.99 (MoCo v3's; with MoCo v1's 0.999 the keys barely move in short runs).
  Keep K well below the data set size.

Which samples may be negatives (`negatives`). `all` (the default): any other sample. `other_classes`
(CRD's CIFAR code: its loader draws each anchor's negatives from the samples of other classes):
entries whose stored label equals the anchor's label are masked out too, so the objective no longer
pushes apart two images of the same class. The share of same-class negatives is 1/C for C balanced
classes: 1 % on CIFAR-100, where CRD was tuned, but 10 % on CIFAR-10, so the choice matters ten
times more there. It reads the batch's class labels (1-D integer labels, stored with the memory
rows); runs without labels (a transfer set) must keep `all`, and labels given as rows of class
probabilities (float (B, C): one-hot or soft) are refused: a soft row has no one class to exclude.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdistill.collectives import all_reduce_sum, gather_rows
from kdistill.methods.base import StepContext, require_positive
from kdistill.methods.features import FeatureMethod, layer_name, to_vectors

MEMORIES = ("dataset", "queue")
NEGATIVES = ("all", "other_classes")
OBJECTIVES = ("info_nce", "nce")
NCE_EPS = 1e-7  # CRD's ContrastLoss


def info_nce(anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, temperature: float,
             mask: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """InfoNCE of (B, D) anchors against their (B, D) positives and shared (K, D) negatives.

    `mask` (B, K), True where a negative must be ignored for that anchor. `reduction`: "mean" over
    the anchors, or "none" for one value per anchor.
    """
    positive = (anchors * positives).sum(dim=1, keepdim=True)
    negative = anchors @ negatives.t()
    if mask is not None:
        negative = negative.masked_fill(mask, float("-inf"))
    logits = torch.cat([positive, negative], dim=1) / temperature
    target = torch.zeros(len(anchors), dtype=torch.long, device=anchors.device)
    return F.cross_entropy(logits, target, reduction=reduction)


def filled(rows: torch.Tensor) -> torch.Tensor:
    """True for the memory rows that hold an embedding (empty rows are zero; embeddings have norm 1)."""
    return rows.ne(0).any(dim=1)


class CRD(FeatureMethod):
    """CRD: embeddings of student and teacher features contrasted against a memory of negatives.

    InfoNCE in both directions (student anchors vs teacher-side memory and the reverse), positive
    and negatives read from the same memory, gradients only through the anchors; memory `dataset`
    (CRD's, needs sample indices) or `queue` (MoCo's, with momentum key embeddings; any data). See
    the module doc for the exact loss and how it departs from the CRD code.
    """

    name = "crd"
    summary = "contrastive representation distillation: InfoNCE between embeddings, negatives from a memory"
    reference = "Tian, Krishnan, Isola 2020, Contrastive Representation Distillation (arXiv:1910.10699)"

    @classmethod
    def reads_labels(cls, options: dict[str, Any]) -> bool:
        return options.get("negatives", "all") == "other_classes"

    def __init__(self, student_layer: str, teacher_layer: str, weight: float = 0.8, feature_dim: int = 128,
                 num_negatives: int = 16384, nce_temperature: float = 0.07, momentum: float = 0.5,
                 memory: str = "dataset", flatten: bool = False, teacher: int = 0,
                 key_momentum: float = 0.99, negatives: str = "all", objective: str = "info_nce") -> None:
        super().__init__([layer_name("student_layer", student_layer)],
                         [layer_name("teacher_layer", teacher_layer)], weight, teacher)
        for key, value in (("feature_dim", feature_dim), ("num_negatives", num_negatives)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key}: must be an integer >= 1 (got {value!r})")
        require_positive("nce_temperature", nce_temperature)
        for key, value in (("momentum", momentum), ("key_momentum", key_momentum)):
            if not 0 <= value < 1:
                raise ValueError(f"{key}: must be in [0, 1) (got {value})")
        if memory not in MEMORIES:
            raise ValueError(f"memory: must be one of {', '.join(MEMORIES)} (got {memory!r})")
        if negatives not in NEGATIVES:
            raise ValueError(f"negatives: must be one of {', '.join(NEGATIVES)} (got {negatives!r})")
        if objective not in OBJECTIVES:
            raise ValueError(f"objective: must be one of {', '.join(OBJECTIVES)} (got {objective!r})")
        if objective == "nce" and memory != "dataset":
            raise ValueError("objective: nce needs memory: dataset (its noise distribution is uniform over the "
                             "training samples, which a queue does not hold); use objective: info_nce with a queue")
        self.objective = objective
        self.negatives = negatives
        self.feature_dim = feature_dim
        self.num_negatives = num_negatives
        self.nce_temperature = float(nce_temperature)
        self.momentum = float(momentum)
        self.key_momentum = float(key_momentum)
        self.memory = memory
        self.flatten = bool(flatten)
        self.embed_s: nn.Linear | None = None
        self.embed_t: nn.Linear | None = None

    # set-up ---------------------------------------------------------------------------------------
    def _require_indices(self, ctx: StepContext) -> torch.Tensor:
        if ctx.indices is None:
            raise ValueError(
                "crd with memory: dataset needs each sample's index in the data set, but the batch has none; "
                "yield an 'index' with each sample (kdistill's built-in data sets do), or set memory: queue"
            )
        return ctx.indices.reshape(-1).long()

    def _labels(self, ctx: StepContext, batch: int) -> torch.Tensor | None:
        """The batch's class ids when negatives exclude the anchor's class, else None."""
        if self.negatives == "all":
            return None
        labels = ctx.labels
        if labels is None or labels.dim() != 1 or len(labels) != batch or labels.is_floating_point():
            got = "none" if labels is None else f"shape {tuple(labels.shape)}, {labels.dtype}"
            raise ValueError(
                f"crd with negatives: other_classes needs one integer class label per sample (got {got}); "
                "set negatives: all for data without class labels (a transfer set, token labels, or rows of "
                "class probabilities: one-hot or soft), or give class ids"
            )
        return labels.long()

    def build(self, ctx: StepContext) -> None:
        fs, ft, _, _ = next(self.pairs(ctx))
        s, t = to_vectors(fs, self.flatten), to_vectors(ft, self.flatten)
        device = fs.device
        self.embed_s = nn.Linear(s.shape[1], self.feature_dim).to(device)
        self.embed_t = nn.Linear(t.shape[1], self.feature_dim).to(device)
        if self.memory == "dataset":
            indices = self._require_indices(ctx)
            if ctx.num_samples is None:
                raise ValueError("crd with memory: dataset needs the size of the training set, which this "
                                 "data does not tell (no len()); set memory: queue")
            if int(indices.max()) >= ctx.num_samples or int(indices.min()) < 0:
                raise ValueError(f"crd: sample index {int(indices.max())} is outside the data set of "
                                 f"{ctx.num_samples} samples; indices must be 0 .. N-1")
            rows = ctx.num_samples
        else:
            rows = self.num_negatives
            self.register_buffer("queue_index", torch.full((rows,), -1, dtype=torch.long, device=device))
            self.register_buffer("queue_pointer", torch.zeros((), dtype=torch.long, device=device))
            # MoCo's key encoders: momentum copies of the two embeddings
            for side, embed in (("s", self.embed_s), ("t", self.embed_t)):
                self.register_buffer(f"key_{side}_weight", embed.weight.detach().clone())
                self.register_buffer(f"key_{side}_bias", embed.bias.detach().clone())
        # empty (zero rows): never used as positive or negative until written
        self.register_buffer("memory_s", torch.zeros(rows, self.feature_dim, device=device))
        self.register_buffer("memory_t", torch.zeros(rows, self.feature_dim, device=device))
        if self.objective == "nce":  # Z of each direction (student anchors, teacher anchors); -1: not yet fixed
            self.register_buffer("nce_z", torch.full((2,), -1.0, device=device))
        if self.negatives == "other_classes":  # the class of each memory row; -1 while empty
            self.register_buffer("memory_label", torch.full((rows,), -1, dtype=torch.long, device=device))

    def draw_negatives(self, count: int, device: torch.device) -> torch.Tensor:
        """Indices of `count` memory entries, uniform with replacement (dataset memory)."""
        return torch.randint(0, self.memory_s.shape[0], (count,), device=device)

    # step -----------------------------------------------------------------------------------------
    def vectors(self, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's student and teacher feature vectors (float32), the embeddings' inputs."""
        fs, ft, _, _ = next(self.pairs(ctx))
        return to_vectors(fs.float(), self.flatten), to_vectors(ft.float(), self.flatten)

    def embed(self, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        if self.embed_s is None or self.embed_t is None:
            raise RuntimeError("crd: build(ctx) must run before the first step (it creates the embeddings)")
        s, t = self.vectors(ctx)
        return F.normalize(self.embed_s(s), dim=1), F.normalize(self.embed_t(t), dim=1)

    def loss_terms(self, ctx: StepContext) -> torch.Tensor:
        vs, vt = self.embed(ctx)
        labels = self._labels(ctx, len(vs))
        if self.memory == "dataset":
            return self._dataset_loss(vs, vt, self._require_indices(ctx), labels)
        return self._queue_loss(ctx, vs, vt, labels)

    def _same_class(self, rows: torch.Tensor | None, labels: torch.Tensor | None) -> torch.Tensor | None:
        """(B, K) True where memory entry k holds the anchor's class (other_classes only)."""
        if labels is None:
            return None
        stored = self.memory_label if rows is None else self.memory_label[rows]
        return stored.unsqueeze(0) == labels.unsqueeze(1)

    def _dataset_loss(self, vs: torch.Tensor, vt: torch.Tensor, indices: torch.Tensor,
                      labels: torch.Tensor | None) -> torch.Tensor:
        negatives = self.draw_negatives(self.num_negatives, vs.device)
        # reads (copies) before the update: positive = the anchor's own row of the other side's memory
        pos_s, pos_t = self.memory_s[indices], self.memory_t[indices]
        neg_s, neg_t = self.memory_s[negatives], self.memory_t[negatives]
        mask = (negatives.unsqueeze(0) == indices.unsqueeze(1)) | ~filled(neg_t).unsqueeze(0)
        same_class = self._same_class(negatives, labels)
        if same_class is not None:
            mask = mask | same_class
        active = filled(pos_t)
        if self.objective == "nce":
            terms = (self._nce(vs, pos_t, neg_t, mask, active, 0)
                     + self._nce(vt, pos_s, neg_s, mask, active, 1))
        else:
            terms = (info_nce(vs, pos_t, neg_t, self.nce_temperature, mask, reduction="none")
                     + info_nce(vt, pos_s, neg_s, self.nce_temperature, mask, reduction="none"))
        # an anchor whose row is still empty has no positive: its term is 0 (masked, so no 0 * nan)
        loss = terms.masked_fill(~active, 0.0).mean()
        if self.training:
            self._update_memory(vs.detach(), vt.detach(), indices, labels)
        return loss

    def _nce(self, anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, mask: torch.Tensor,
             active: torch.Tensor, side: int) -> torch.Tensor:
        """Per-anchor NCE loss of CRD's code (module doc); `side` picks the direction's Z. Computed in
        log space (log x = a.v / tau - log Z), so no score overflows or divides by an unset Z."""
        rows = self.memory_s.shape[0]
        noise = self.num_negatives / rows  # K * Pn with Pn = 1 / N
        logits = torch.cat([(anchors * positives).sum(dim=1, keepdim=True), anchors @ negatives.t()], dim=1)
        logits = logits / self.nce_temperature
        valid = torch.cat([active.unsqueeze(1), ~mask & active.unsqueeze(1)], dim=1)
        with torch.no_grad():  # this batch's estimate of Z: N x the mean score of its valid pairs (float64)
            totals = torch.stack([(logits.double().exp() * valid).sum(), valid.sum().double()])
            totals = all_reduce_sum(totals) if self.training else totals
            found = totals[1] > 0
            estimate = torch.where(found, totals[0] / totals[1].clamp(min=1) * rows, torch.ones_like(totals[0]))
            fixed = self.nce_z[side].double()
            log_z = torch.where(fixed > 0, fixed, estimate).log().to(logits.dtype)
            if self.training:  # fixed once, by the first batch with a valid pair
                self.nce_z[side] = torch.where((fixed <= 0) & found, estimate, fixed).to(self.nce_z.dtype)
        log_x = logits - log_z
        log_denominator = torch.logaddexp(log_x, torch.full_like(log_x, math.log(noise + NCE_EPS)))
        log_positive = log_x[:, 0] - log_denominator[:, 0]
        log_negative = (math.log(noise) - log_denominator[:, 1:]).masked_fill(~valid[:, 1:], 0.0)
        return -(log_positive + log_negative.sum(dim=1))

    def _queue_loss(self, ctx: StepContext, vs: torch.Tensor, vt: torch.Tensor,
                    labels: torch.Tensor | None) -> torch.Tensor:
        indices = ctx.indices.reshape(-1).long() if ctx.indices is not None else None
        with torch.no_grad():
            if self.training:  # MoCo: update the key embeddings, then compute this step's keys
                for side, embed in (("s", self.embed_s), ("t", self.embed_t)):
                    for name in ("weight", "bias"):
                        key = getattr(self, f"key_{side}_{name}")
                        key.mul_(self.key_momentum).add_(getattr(embed, name).detach(), alpha=1 - self.key_momentum)
            s, t = self.vectors(ctx)
            ks = F.normalize(F.linear(s, self.key_s_weight, self.key_s_bias), dim=1)
            kt = F.normalize(F.linear(t, self.key_t_weight, self.key_t_bias), dim=1)
        # copies: autograd needs these values after the queue is overwritten below
        neg_s, neg_t = self.memory_s.clone(), self.memory_t.clone()
        mask = ~filled(neg_t).unsqueeze(0).expand(len(vs), -1)
        if indices is not None:
            mask = mask | (self.queue_index.unsqueeze(0) == indices.unsqueeze(1))
        same_class = self._same_class(None, labels)
        if same_class is not None:
            mask = mask | same_class
        loss = (info_nce(vs, kt, neg_t, self.nce_temperature, mask)
                + info_nce(vt, ks, neg_s, self.nce_temperature, mask))
        if self.training:
            self._update_memory(ks, kt, indices, labels)
        return loss

    @torch.no_grad()
    def _update_memory(self, vs: torch.Tensor, vt: torch.Tensor, indices: torch.Tensor | None,
                       labels: torch.Tensor | None = None) -> None:
        """Dataset memory: mix the anchors into their rows. Queue: enqueue the keys."""
        # under DDP: every rank's rows, same memory everywhere
        vs, vt, indices, labels = gather_rows(vs, vt, indices, labels)
        if self.memory == "dataset":
            assert indices is not None
            if labels is not None:
                self.memory_label.index_copy_(0, indices, labels)
            for buffer, new in ((self.memory_s, vs), (self.memory_t, vt)):
                # an empty (zero) row becomes normalize(new) = new
                mixed = buffer[indices] * self.momentum + new * (1 - self.momentum)
                buffer.index_copy_(0, indices, F.normalize(mixed, dim=1))
            return
        # entry j of the batch goes to slot (pointer + j) % size, as if enqueued one by one; a batch
        # larger than the queue keeps its last `size` entries. Tensor arithmetic: no host sync.
        size, count = self.memory_s.shape[0], len(vs)
        dropped = max(count - size, 0)
        vs, vt = vs[dropped:], vt[dropped:]
        indices = indices[dropped:] if indices is not None else None
        slots = (torch.arange(dropped, count, device=vs.device) + self.queue_pointer) % size
        self.memory_s[slots] = vs
        self.memory_t[slots] = vt
        self.queue_index[slots] = indices if indices is not None else -1
        if labels is not None:
            self.memory_label[slots] = labels[dropped:]
        self.queue_pointer.copy_((self.queue_pointer + count) % size)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, feature_dim={self.feature_dim}, "
                f"num_negatives={self.num_negatives}, nce_temperature={self.nce_temperature}, "
                f"momentum={self.momentum}, memory={self.memory}, key_momentum={self.key_momentum}, "
                f"negatives={self.negatives}, objective={self.objective}")


__all__ = ["CRD", "MEMORIES", "NEGATIVES", "OBJECTIVES", "info_nce"]
