"""A narrow student's embeddings initialised from a wider teacher's, by projecting them onto the
teacher's top principal directions (truncated SVD of the centred word-embedding matrix).

Why: a small student trained on a few thousand sentences sees most of its vocabulary a handful of
times, so its randomly initialised word embeddings (most of its parameters) stay near noise. The
teacher's embeddings carry pretrained lexical knowledge; DistilBERT copied them where widths match.
Where they do not, the orthogonal projection onto the `width` directions of largest variance is the
linear map to `width` dimensions that keeps the most of that structure (Eckart-Young): distances
and inner products between words are kept exactly for the part of the embeddings inside those
directions.

The position and token-type embeddings go through the same basis (not centred), so the sum the
embedding layer forms, word + position + type, is projected as one vector and their relative scale
is the teacher's. The student's LayerNorm after the sum keeps its default initialisation: the
teacher's per-feature gains live in the teacher's coordinates, not the projected ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kdistill.errors import BadInput


@dataclass
class Projection:
    """x -> (x - mean) @ basis; `basis` (D, width) has orthonormal columns, largest variance first."""

    mean: torch.Tensor  # (D,)
    basis: torch.Tensor  # (D, width)
    explained: float  # share of the centred matrix's variance the basis keeps, in [0, 1]

    def __call__(self, x: torch.Tensor, centre: bool = True) -> torch.Tensor:
        x = x.to(self.basis.dtype)
        return (x - self.mean if centre else x) @ self.basis


def principal_projection(matrix: torch.Tensor, width: int) -> Projection:
    """The top-`width` principal directions of the rows of `matrix` (N, D)."""
    if not isinstance(matrix, torch.Tensor) or matrix.dim() != 2:
        raise BadInput(f"embedding projection: a 2-d (rows, features) tensor is needed (got "
                       f"{tuple(matrix.shape) if isinstance(matrix, torch.Tensor) else type(matrix).__name__})")
    rows, features = matrix.shape
    if not isinstance(width, int) or isinstance(width, bool) or not 1 <= width <= min(rows, features):
        raise BadInput(f"embedding projection: width must be an integer in 1..{min(rows, features)} "
                       f"(the smaller of {rows} rows and {features} features; got {width!r})")
    data = matrix.detach().double()
    mean = data.mean(0)
    _, singular, vh = torch.linalg.svd(data - mean, full_matrices=False)
    energy = singular.square()
    total = float(energy.sum())
    explained = float(energy[:width].sum()) / total if total > 0 else 1.0
    basis = vh[:width].T.contiguous()
    # SVD signs are arbitrary: make each direction's largest-magnitude entry positive (reproducible)
    signs = torch.sign(basis.gather(0, basis.abs().argmax(0, keepdim=True)))
    basis = basis * torch.where(signs == 0, torch.ones_like(signs), signs)
    return Projection(mean.float(), basis.float(), explained)


def _embeddings(model: nn.Module) -> nn.Module | None:
    """The embedding block holding word / position / token-type tables (BERT-style), if any."""
    word = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    for module in model.modules():
        if getattr(module, "word_embeddings", None) is word and word is not None:
            return module
    return None


def init_embeddings_from_teacher(student: nn.Module, teacher: nn.Module) -> Projection:
    """Overwrite the student's word (and, where both have them, position and token-type) embeddings
    with the teacher's projected to the student's width; returns the projection used. Both must be
    Hugging Face models (`get_input_embeddings`) over the same vocabulary (or the student a trimmed
    copy of it: it gets the projected rows of its kept tokens)."""
    for role, model in (("student", student), ("teacher", teacher)):
        if not hasattr(model, "get_input_embeddings") or model.get_input_embeddings() is None:
            raise BadInput(f"embedding init: the {role} ({type(model).__name__}) has no get_input_embeddings(); "
                           "give Hugging Face models")
    s_word, t_word = student.get_input_embeddings().weight, teacher.get_input_embeddings().weight
    # a trimmed student (kdistill.text.vocabulary) reads the teacher's ids: its rows are the teacher's `keep`
    kept = getattr(student.get_input_embeddings(), "keep", None)
    vocabulary = getattr(student.get_input_embeddings(), "original_vocab_size", s_word.shape[0])
    if vocabulary != t_word.shape[0]:
        raise BadInput(f"embedding init: the student's vocabulary has {vocabulary} entries, the teacher's "
                       f"{t_word.shape[0]}; both must use the teacher's tokenizer")
    width = s_word.shape[1]
    if width > t_word.shape[1]:
        raise BadInput(f"embedding init: the student is wider ({width}) than the teacher ({t_word.shape[1]}); "
                       "projection only narrows: copy the embeddings, or make the student at most as wide")
    projection = principal_projection(t_word, width)
    with torch.no_grad():
        s_word.copy_(projection(t_word) if kept is None else projection(t_word)[kept])
        s_block, t_block = _embeddings(student), _embeddings(teacher)
        for name in ("position_embeddings", "token_type_embeddings"):
            s_table = getattr(s_block, name, None) if s_block is not None else None
            t_table = getattr(t_block, name, None) if t_block is not None else None
            if s_table is None or t_table is None:
                continue
            if s_table.weight.shape[0] > t_table.weight.shape[0]:
                raise BadInput(f"embedding init: the student's {name} has {s_table.weight.shape[0]} rows, the "
                               f"teacher's only {t_table.weight.shape[0]}; give the student at most as many")
            rows = s_table.weight.shape[0]
            s_table.weight.copy_(projection(t_table.weight[:rows], centre=False))
    return projection


__all__ = ["Projection", "init_embeddings_from_teacher", "principal_projection"]
