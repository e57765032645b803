"""Contrastive representation distillation (CRD) with a memory of negatives.

Student and teacher features (one vector per sample: maps and tokens are average-pooled, or
flattened with `flatten: true`) are projected by two trainable linear embeddings to `feature_dim`
and L2-normalised (CRD's `Embed`). Each sample's student embedding must pick out the teacher
embedding of the *same* sample among `num_negatives` teacher embeddings of other samples held in a
memory, and symmetrically for the teacher embedding against student negatives.

Loss variant: InfoNCE (softmax cross-entropy over [positive, K negatives] with temperature tau),
not the NCE-with-constant-Z estimator of the CRD code. For an anchor a with positive p and
negatives n_1..n_K (all unit vectors):

    l(a) = -log( exp(a.p / tau) / (exp(a.p / tau) + sum_k exp(a.n_k / tau)) )

    loss = mean_i l(s_i; p = t_i, n = teacher memory) + mean_i l(t_i; p = s_i, n = student memory)

The positive is the other side's embedding of the sample computed in this step (CRD uses the
momentum-averaged memory entry). InfoNCE needs no normalisation constant fitted on the first
batch and is the bound CRD's paper derives its objective from; its magnitude at start is about
2 log(K + 1), so the CRD weight 0.8 (tuned for the NCE form) may want re-tuning.

Memories (buffers, saved in checkpoints; never parameters):

- `memory: dataset` (CRD): one student and one teacher embedding per training sample, sized to
  the data set (`ctx.num_samples`) and indexed by the batch's sample indices (`ctx.indices`); after
  each step the entries of the batch become normalize(momentum * old + (1 - momentum) * new). K
  negatives are drawn uniformly with replacement per step, shared by the whole batch (CRD draws
  K per sample); a drawn entry that is the anchor's own sample is masked out. (CRD's CIFAR loader
  draws negatives from other classes only; kdistill draws from all samples.)
- `memory: queue` (MoCo-style): the last K embeddings of each side in a FIFO queue; works for any
  data set size and needs no indices. When the batch carries indices they are stored with the
  queue and the anchor's own earlier entries are masked out. `momentum` is not used. Keep K well
  below the data set size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdistill.engine.distributed import gather_rows
from kdistill.methods.base import StepContext, require_positive
from kdistill.methods.features import FeatureMethod, layer_name, to_vectors

MEMORIES = ("dataset", "queue")


def info_nce(anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, temperature: float,
             mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean InfoNCE of (B, D) anchors against their (B, D) positives and shared (K, D) negatives.

    `mask` (B, K), True where a negative must be ignored for that anchor.
    """
    positive = (anchors * positives).sum(dim=1, keepdim=True)
    negative = anchors @ negatives.t()
    if mask is not None:
        negative = negative.masked_fill(mask, float("-inf"))
    logits = torch.cat([positive, negative], dim=1) / temperature
    target = torch.zeros(len(anchors), dtype=torch.long, device=anchors.device)
    return F.cross_entropy(logits, target)


def random_unit_vectors(rows: int, dim: int, device: torch.device) -> torch.Tensor:
    return F.normalize(torch.randn(rows, dim, device=device), dim=1)


class CRD(FeatureMethod):
    """CRD: embeddings of student and teacher features contrasted against a memory of negatives.

    InfoNCE in both directions (student anchors vs teacher negatives and the reverse); memory
    `dataset` (CRD's, needs sample indices) or `queue` (any data). See the module doc for the
    exact loss and how it departs from the CRD code.
    """

    name = "crd"
    summary = "contrastive representation distillation: InfoNCE between embeddings, negatives from a memory"
    reference = "Tian, Krishnan, Isola 2020, Contrastive Representation Distillation (arXiv:1910.10699)"

    def __init__(self, student_layer: str, teacher_layer: str, weight: float = 0.8, feature_dim: int = 128,
                 num_negatives: int = 16384, nce_temperature: float = 0.07, momentum: float = 0.5,
                 memory: str = "dataset", flatten: bool = False, teacher: int = 0) -> None:
        super().__init__([layer_name("student_layer", student_layer)],
                         [layer_name("teacher_layer", teacher_layer)], weight, teacher)
        for key, value in (("feature_dim", feature_dim), ("num_negatives", num_negatives)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key}: must be an integer >= 1 (got {value!r})")
        require_positive("nce_temperature", nce_temperature)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum: must be in [0, 1) (got {momentum})")
        if memory not in MEMORIES:
            raise ValueError(f"memory: must be one of {', '.join(MEMORIES)} (got {memory!r})")
        self.feature_dim = feature_dim
        self.num_negatives = num_negatives
        self.nce_temperature = float(nce_temperature)
        self.momentum = float(momentum)
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
        self.register_buffer("memory_s", random_unit_vectors(rows, self.feature_dim, device))
        self.register_buffer("memory_t", random_unit_vectors(rows, self.feature_dim, device))

    def draw_negatives(self, count: int, device: torch.device) -> torch.Tensor:
        """Indices of `count` memory entries, uniform with replacement (dataset memory)."""
        return torch.randint(0, self.memory_s.shape[0], (count,), device=device)

    # step -----------------------------------------------------------------------------------------
    def embed(self, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        if self.embed_s is None or self.embed_t is None:
            raise RuntimeError("crd: build(ctx) must run before the first step (it creates the embeddings)")
        fs, ft, _, _ = next(self.pairs(ctx))
        vs = F.normalize(self.embed_s(to_vectors(fs.float(), self.flatten)), dim=1)
        vt = F.normalize(self.embed_t(to_vectors(ft.float(), self.flatten)), dim=1)
        return vs, vt

    def loss_terms(self, ctx: StepContext) -> torch.Tensor:
        vs, vt = self.embed(ctx)
        if self.memory == "dataset":
            indices = self._require_indices(ctx)
            negatives = self.draw_negatives(self.num_negatives, vs.device)
            neg_s, neg_t = self.memory_s[negatives], self.memory_t[negatives]
            mask = negatives.unsqueeze(0) == indices.unsqueeze(1)
        else:
            indices = ctx.indices.reshape(-1).long() if ctx.indices is not None else None
            # copies: autograd needs these values after the queue is overwritten below
            neg_s, neg_t = self.memory_s.clone(), self.memory_t.clone()
            mask = self.queue_index.unsqueeze(0) == indices.unsqueeze(1) if indices is not None else None
        loss = (info_nce(vs, vt, neg_t, self.nce_temperature, mask)
                + info_nce(vt, vs, neg_s, self.nce_temperature, mask))
        if self.training:
            self._update_memory(vs.detach(), vt.detach(), indices)
        return loss

    @torch.no_grad()
    def _update_memory(self, vs: torch.Tensor, vt: torch.Tensor, indices: torch.Tensor | None) -> None:
        vs, vt, indices = gather_rows(vs, vt, indices)  # under DDP: every rank's rows, same memory everywhere
        if self.memory == "dataset":
            assert indices is not None
            for buffer, new in ((self.memory_s, vs), (self.memory_t, vt)):
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
        self.queue_pointer.copy_((self.queue_pointer + count) % size)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, feature_dim={self.feature_dim}, "
                f"num_negatives={self.num_negatives}, nce_temperature={self.nce_temperature}, "
                f"momentum={self.momentum}, memory={self.memory}")


__all__ = ["CRD", "MEMORIES", "info_nce"]
