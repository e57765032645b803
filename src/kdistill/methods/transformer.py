"""Transformer-to-transformer losses: hidden states (TinyBERT), the embedding layer, attention
distributions and MiniLM's value relation, across depths, widths and head counts.

Every layer is reached through taps (`kdistill.taps`): forward hooks on the blocks, the embedding
module, the self-attention module (whose output is `(context, probabilities)`: tap selector `1`)
and the value projection. Nothing in the model is edited. Where a model keeps its blocks is a
*layout*: `bert` (also BERT-like models such as MiniLM), `roberta`, `distilbert`, or a dict with the
same keys for another family. The attention probabilities exist only under the eager attention
kernel (fused kernels never form them): build the models with `attention: eager`, the default of
kdistill's Hugging Face factories; a tap that yields `None` is refused with that fix.

Padding. The token ids are read from the student's word-embedding input (`word_embeddings:input`),
and positions holding `pad_token_id` (default: the student family's, 0 for BERT and DistilBERT, 1
for RoBERTa, whose 0 is `<s>`) are left out of every mean: hidden-state errors are averaged
over real tokens, attention rows over real queries, and padded keys carry no probability.

Depths. Student block m (1-based, of M) learns from teacher block `mapping(m)` (of N):
`uniform` is TinyBERT's g(m) = ceil(m N / M) (every teacher block k N/M apart, ending on the last),
`last` is N - M + m (the top blocks), and a list gives the teacher block (0-based) of each student
block. Widths: a learned `nn.Linear(Ds, Dt)` per compared layer (TinyBERT's W_h, W_e), none when
they match. Heads: when the teacher has k times the student's heads, each group of k teacher heads
is averaged into one distribution (and conversely); otherwise both sides are averaged over heads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from kdistill.methods.adapters import build_adapter
from kdistill.methods.base import Method, StepContext
from kdistill.methods.features import teacher_number


@dataclass(frozen=True)
class Layout:
    """Module paths of one transformer family (blocks relative to `layers.{i}`)."""

    embeddings: str  # the embedding layer's output (B, L, D)
    layers: str  # the ModuleList of blocks; block i's output is hidden state i + 1
    attention: str  # in a block: the module returning (context, attention probabilities)
    value: str  # in a block: the value projection (B, L, D)
    word_embeddings: str = "word_embeddings"  # in `embeddings`: its input is the token ids
    pad_token_id: int = 0  # the family's tokenizers' padding id (RoBERTa's is 1: its 0 is <s>)


LAYOUTS = {
    "bert": Layout("bert.embeddings", "bert.encoder.layer", "attention.self", "attention.self.value"),
    "roberta": Layout("roberta.embeddings", "roberta.encoder.layer", "attention.self", "attention.self.value",
                      pad_token_id=1),
    "distilbert": Layout("distilbert.embeddings", "distilbert.transformer.layer", "attention", "attention.v_lin"),
}


def layout_of(key: str, value: str | Mapping[str, str]) -> Layout:
    if isinstance(value, str):
        if value not in LAYOUTS:
            raise ValueError(f"{key}: '{value}' is not one of {', '.join(LAYOUTS)}; or give a dict with "
                             "embeddings, layers, attention, value (module paths)")
        return LAYOUTS[value]
    if isinstance(value, Mapping):
        try:
            return Layout(**dict(value))
        except TypeError as error:
            raise ValueError(f"{key}: {error}; the keys are embeddings, layers, attention, value, "
                             "word_embeddings, pad_token_id") from None
    raise ValueError(f"{key}: a layout name or a dict of module paths (got {value!r})")


def layer_map(student_layers: int, teacher_layers: int, mapping: str | Sequence[int] = "uniform") -> list[int]:
    """The teacher block (0-based) each student block (0..M-1) learns from."""
    for key, count in (("student_layers", student_layers), ("teacher_layers", teacher_layers)):
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"{key}: the number of blocks, an integer >= 1 (got {count!r})")
    m, n = student_layers, teacher_layers
    if isinstance(mapping, str):
        if mapping == "uniform":
            return [math.ceil((i + 1) * n / m) - 1 for i in range(m)]
        if mapping == "last":
            if m > n:
                raise ValueError(f"mapping: 'last' needs a student no deeper than the teacher ({m} > {n} blocks)")
            return [n - m + i for i in range(m)]
        raise ValueError(f"mapping: 'uniform', 'last' or a list of teacher blocks (got '{mapping}')")
    chosen = list(mapping)
    if len(chosen) != m or not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < n for t in chosen):
        raise ValueError(f"mapping: a list of {m} teacher blocks (one per student block), each in 0..{n - 1} "
                         f"(got {chosen})")
    return chosen


def first_tensor(value: object, tap: str, owner: str) -> torch.Tensor:
    """A block's output: the tensor, or the first element of a tuple output."""
    if isinstance(value, tuple | list) and value:
        value = value[0]
    if not torch.is_tensor(value):
        raise ValueError(f"{owner} tap '{tap}' gave {type(value).__name__}, not a tensor")
    return value


def attention_probabilities(value: object, tap: str, owner: str) -> torch.Tensor:
    """The (B, H, L, L) probabilities a self-attention tap gave, checked: rows must sum to 1, which
    they do not after attention dropout (the eager kernel returns the dropped-out matrix)."""
    if value is None:
        raise ValueError(f"{owner} tap '{tap}' gave no attention probabilities: the model runs a fused attention "
                         "kernel (sdpa, flash) that never forms them; build it with attention: eager "
                         "(kdistill's hf factories) or attn_implementation='eager'")
    if not torch.is_tensor(value) or value.dim() != 4:
        raise ValueError(f"{owner} tap '{tap}' is not a (batch, heads, L, L) attention tensor")
    sums = value.detach().float().sum(-1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
        raise ValueError(f"{owner} tap '{tap}': attention rows do not sum to 1, so they were read after attention "
                         "dropout; build the model with attention_probs_dropout_prob = 0 (kdistill's hf_student and "
                         "hf_from_teacher do by default: attention_dropout: 0.0)")
    return value


def match_heads(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, H, L, L) distributions with the same number of heads (see module doc)."""
    hs, ht = student.shape[1], teacher.shape[1]
    if hs == ht:
        return student, teacher
    if ht % hs == 0:
        return student, teacher.unflatten(1, (hs, ht // hs)).mean(2)
    if hs % ht == 0:
        return student.unflatten(1, (ht, hs // ht)).mean(2), teacher
    return student.mean(1, keepdim=True), teacher.mean(1, keepdim=True)


def row_kl(p_teacher: torch.Tensor, p_student: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) over the last dim of (B, H, L, L) distributions, averaged over heads
    and real query rows (`mask` (B, L), 1 for real tokens); keys the teacher gives 0 add nothing."""
    log_ratio = torch.log(p_teacher.clamp_min(1e-30)) - torch.log(p_student.clamp_min(1e-30))
    per_row = torch.where(p_teacher > 0, p_teacher * log_ratio, torch.zeros_like(p_teacher)).sum(-1)  # (B, H, L)
    weights = mask[:, None, :].expand_as(per_row)
    return (per_row * weights).sum() / weights.sum().clamp_min(1)


def masked_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the real tokens of (B, L, D) sequences."""
    squared = (student - teacher).pow(2).mean(-1)  # (B, L)
    return (squared * mask).sum() / mask.sum().clamp_min(1)


class TransformerMethod(Method):
    """Shared plumbing: layouts, the padding mask, features read in float32 without autocast."""

    uses_logits = False

    def __init__(self, weight: float, student_layout: str | Mapping[str, str], teacher_layout: str | Mapping[str, str],
                 pad_token_id: int | None, teacher: int) -> None:
        super().__init__(weight)
        self.s_layout = layout_of("student_layout", student_layout)
        self.t_layout = layout_of("teacher_layout", teacher_layout)
        if pad_token_id is None:  # the student family's padding id (bert, distilbert 0; roberta 1)
            pad_token_id = self.s_layout.pad_token_id
        if not isinstance(pad_token_id, int) or isinstance(pad_token_id, bool):
            raise ValueError(f"pad_token_id: an integer, the tokenizer's padding id (got {pad_token_id!r})")
        self.pad_token_id = pad_token_id
        self.teacher = teacher_number(teacher)
        self.ids_tap = f"{self.s_layout.embeddings}.{self.s_layout.word_embeddings}:input"

    def teacher_index(self) -> int:
        return self.teacher

    def token_mask(self, ctx: StepContext) -> torch.Tensor:
        """(B, L) float, 1 for real tokens, from the student's token ids."""
        ids = ctx.student_features[self.ids_tap]
        return (ids != self.pad_token_id).float()

    def teacher_features(self, ctx: StepContext) -> dict[str, object]:
        if len(ctx.teacher_features) <= self.teacher:
            raise RuntimeError(f"{self.name} reads teacher {self.teacher}'s layers, but the step has "
                               f"{len(ctx.teacher_features)} teacher(s)")
        return ctx.teacher_features[self.teacher]

    def forward(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        with torch.autocast(device_type=ctx.student_logits.device.type, enabled=False):
            return super().forward(ctx)


class _SequenceMSE(TransformerMethod):
    """MSE between adapted student sequences and teacher sequences, pair by pair."""

    def __init__(self, student_taps: list[str], teacher_taps: list[str], weight: float,
                 student_layout: str | Mapping[str, str], teacher_layout: str | Mapping[str, str],
                 pad_token_id: int | None,
                 teacher: int) -> None:
        super().__init__(weight, student_layout, teacher_layout, pad_token_id, teacher)
        self._student_taps, self._teacher_taps = student_taps, teacher_taps
        self.adapters = nn.ModuleList()

    def student_taps(self) -> list[str]:
        return [*self._student_taps, self.ids_tap]

    def teacher_taps(self) -> list[str]:
        return list(self._teacher_taps)

    def _pairs(self, ctx: StepContext) -> list[tuple[torch.Tensor, torch.Tensor, str, str]]:
        teacher = self.teacher_features(ctx)
        return [(first_tensor(ctx.student_features[s], s, "student"),
                 first_tensor(teacher[t], t, f"teacher {self.teacher}"), s, t)
                for s, t in zip(self._student_taps, self._teacher_taps, strict=True)]

    def build(self, ctx: StepContext) -> None:
        self.adapters = nn.ModuleList(build_adapter(fs.shape, ft.shape, s, t, learn_when_equal=False)
                                      for fs, ft, s, t in self._pairs(ctx))

    def loss_terms(self, ctx: StepContext) -> torch.Tensor:
        if len(self.adapters) != len(self._student_taps):
            raise RuntimeError(f"{self.name}: build(ctx) must run before the first step (it creates the adapters)")
        mask = self.token_mask(ctx)
        terms = [masked_mse(adapter(fs.float()), ft.float(), mask)
                 for adapter, (fs, ft, _, _) in zip(self.adapters, self._pairs(ctx), strict=True)]
        return torch.stack(terms).mean()


class HiddenStateMSE(_SequenceMSE):
    """TinyBERT's hidden-state loss: MSE(H_s W_h, H_t) for each student block and its mapped
    teacher block, over real tokens, averaged over the pairs (W_h learned when widths differ)."""

    name = "hidden_mse"
    summary = "TinyBERT hidden states: MSE between mapped blocks through width adapters, padding masked"
    reference = "Jiao et al. 2020, TinyBERT: Distilling BERT for Natural Language Understanding (arXiv:1909.10351)"

    def __init__(self, student_layers: int, teacher_layers: int, mapping: str | list[int] = "uniform",
                 weight: float = 1.0, student_layout: str | dict[str, str] = "bert",
                 teacher_layout: str | dict[str, str] = "bert", pad_token_id: int | None = None,
                 teacher: int = 0) -> None:
        chosen = layer_map(student_layers, teacher_layers, mapping)
        s, t = layout_of("student_layout", student_layout), layout_of("teacher_layout", teacher_layout)
        super().__init__([f"{s.layers}.{i}" for i in range(student_layers)], [f"{t.layers}.{j}" for j in chosen],
                         weight, student_layout, teacher_layout, pad_token_id, teacher)
        self.mapping = chosen

    def extra_repr(self) -> str:
        return f"weight={self.weight}, mapping={self.mapping}"


class EmbeddingMSE(_SequenceMSE):
    """TinyBERT's embedding-layer loss: MSE(E_s W_e, E_t) over real tokens."""

    name = "embedding_mse"
    summary = "TinyBERT embedding layer: MSE between the embedding outputs through a width adapter"
    reference = "Jiao et al. 2020, TinyBERT: Distilling BERT for Natural Language Understanding (arXiv:1909.10351)"

    def __init__(self, weight: float = 1.0, student_layout: str | dict[str, str] = "bert",
                 teacher_layout: str | dict[str, str] = "bert", pad_token_id: int | None = None,
                 teacher: int = 0) -> None:
        s, t = layout_of("student_layout", student_layout), layout_of("teacher_layout", teacher_layout)
        super().__init__([s.embeddings], [t.embeddings], weight, student_layout, teacher_layout, pad_token_id,
                         teacher)


class AttentionKL(TransformerMethod):
    """Attention-distribution transfer: KL(A_t || A_s) between the self-attention probabilities of
    each student block and its mapped teacher block (TinyBERT matched attention with an MSE on
    scores; MiniLM and DistilBERT-era work use this KL on probabilities, which is scale-free and
    lets head groups be averaged), over real query rows, averaged over heads and pairs."""

    name = "attention_kl"
    summary = "attention distributions: KL between mapped blocks' self-attention probabilities, heads matched"
    reference = "Wang et al. 2020, MiniLM (arXiv:2002.10957); Jiao et al. 2020, TinyBERT (arXiv:1909.10351)"

    def __init__(self, student_layers: int, teacher_layers: int, mapping: str | list[int] = "uniform",
                 weight: float = 1.0, student_layout: str | dict[str, str] = "bert",
                 teacher_layout: str | dict[str, str] = "bert", pad_token_id: int | None = None,
                 teacher: int = 0) -> None:
        super().__init__(weight, student_layout, teacher_layout, pad_token_id, teacher)
        self.mapping = layer_map(student_layers, teacher_layers, mapping)
        self._student = [f"{self.s_layout.layers}.{i}.{self.s_layout.attention}:1" for i in range(student_layers)]
        self._teacher = [f"{self.t_layout.layers}.{j}.{self.t_layout.attention}:1" for j in self.mapping]

    def student_taps(self) -> list[str]:
        return [*self._student, self.ids_tap]

    def teacher_taps(self) -> list[str]:
        return list(self._teacher)

    def loss_terms(self, ctx: StepContext) -> torch.Tensor:
        mask = self.token_mask(ctx)
        teacher = self.teacher_features(ctx)
        terms = []
        for s, t in zip(self._student, self._teacher, strict=True):
            ps = attention_probabilities(ctx.student_features[s], s, "student").float()
            pt = attention_probabilities(teacher[t], t, f"teacher {self.teacher}").float()
            ps, pt = match_heads(ps, pt)
            terms.append(row_kl(pt, ps, mask))
        return torch.stack(terms).mean()

    def extra_repr(self) -> str:
        return f"weight={self.weight}, mapping={self.mapping}"


def relation_heads_for(student_width: int, teacher_width: int, wanted: int | None) -> int:
    if wanted is not None:
        if student_width % wanted or teacher_width % wanted:
            raise ValueError(f"relation_heads: {wanted} must divide both widths ({student_width}, {teacher_width})")
        return wanted
    return max(r for r in range(1, 13) if student_width % r == 0 and teacher_width % r == 0)


def value_relation(values: torch.Tensor, heads: int, mask: torch.Tensor) -> torch.Tensor:
    """softmax(V V^T / sqrt(d)) per relation head, padded keys masked: (B, heads, L, L)."""
    v = values.float().unflatten(-1, (heads, values.shape[-1] // heads)).transpose(1, 2)  # (B, R, L, d)
    scores = v @ v.transpose(-1, -2) / math.sqrt(v.shape[-1])
    scores = scores.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
    return scores.softmax(-1)


class MiniLM(TransformerMethod):
    """MiniLM's deep self-attention distillation on one block pair (by default the last ones):
    KL between the attention distributions (`attention` term) and between the value relations
    softmax(V V^T / sqrt(d)) (`value` term), the two summed as in the paper. The values are split
    into `relation_heads` relation heads on both sides (MiniLM-v2's multi-head relations), so the
    student's width and head count need not match the teacher's; default: the largest count up to
    12 that divides both widths."""

    name = "minilm"
    summary = "MiniLM: attention-distribution and value-relation KL on the last (or a chosen) block"
    reference = "Wang et al. 2020, MiniLM: Deep Self-Attention Distillation (arXiv:2002.10957)"

    def __init__(self, student_layer: int, teacher_layer: int, weight: float = 1.0, relation_heads: int | None = None,
                 attention: bool = True, student_layout: str | dict[str, str] = "bert",
                 teacher_layout: str | dict[str, str] = "bert", pad_token_id: int | None = None,
                 teacher: int = 0) -> None:
        super().__init__(weight, student_layout, teacher_layout, pad_token_id, teacher)
        for key, value in (("student_layer", student_layer), ("teacher_layer", teacher_layer)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{key}: the block index (0-based; the last of 6 is 5), got {value!r}")
        if relation_heads is not None and (not isinstance(relation_heads, int) or relation_heads < 1):
            raise ValueError(f"relation_heads: a positive integer or null (got {relation_heads!r})")
        self.relation_heads = relation_heads
        self.with_attention = bool(attention)
        s_block, t_block = f"{self.s_layout.layers}.{student_layer}", f"{self.t_layout.layers}.{teacher_layer}"
        self._s_att, self._t_att = f"{s_block}.{self.s_layout.attention}:1", f"{t_block}.{self.t_layout.attention}:1"
        self._s_val, self._t_val = f"{s_block}.{self.s_layout.value}", f"{t_block}.{self.t_layout.value}"

    def student_taps(self) -> list[str]:
        return [*([self._s_att] if self.with_attention else []), self._s_val, self.ids_tap]

    def teacher_taps(self) -> list[str]:
        return [*([self._t_att] if self.with_attention else []), self._t_val]

    def loss_terms(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        mask = self.token_mask(ctx)
        teacher = self.teacher_features(ctx)
        vs = first_tensor(ctx.student_features[self._s_val], self._s_val, "student")
        vt = first_tensor(teacher[self._t_val], self._t_val, f"teacher {self.teacher}")
        heads = relation_heads_for(vs.shape[-1], vt.shape[-1], self.relation_heads)
        terms = {"value": row_kl(value_relation(vt, heads, mask), value_relation(vs, heads, mask), mask)}
        if self.with_attention:
            ps = attention_probabilities(ctx.student_features[self._s_att], self._s_att, "student").float()
            pt = attention_probabilities(teacher[self._t_att], self._t_att, f"teacher {self.teacher}").float()
            ps, pt = match_heads(ps, pt)
            terms["attention"] = row_kl(pt, ps, mask)
        return terms


__all__ = ["LAYOUTS", "AttentionKL", "EmbeddingMSE", "HiddenStateMSE", "Layout", "MiniLM", "attention_probabilities",
           "layer_map", "masked_mse", "match_heads", "row_kl", "value_relation"]
