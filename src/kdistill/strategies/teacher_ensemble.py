"""A fixed ensemble of teachers as one teacher model, so that the teacher cache can hold it.

`Distiller(teacher=[a, b, c], teacher_aggregator=MeanAggregator(T))` runs every teacher at every
step; the teacher cache, which stores one teacher's outputs, refuses a list. When the teachers are
fixed and only their mixture is read (logit methods), wrapping them as

    TeacherEnsemble([a, b, c], temperature=T)

gives one model whose logits x satisfy softmax(x / T) = sum_i w_i softmax(z_i / T): the same soft
targets the aggregator gives, computed once per image and view by the cache instead of K forwards a
step. A logit method must read it at the same T (its softmax at another temperature is not the
mixture at that temperature). Feature methods still reach a member's layers by name
(`members.0.<layer>`). The ensemble is one participant with one input normalisation
(`teacher_normalization`): members that need different inputs are not expressed by it. As a
classifier its argmax is the mixture's at T; the usual ensemble accuracy (mean of probabilities
at T = 1) is `strategies.evaluate_ensemble(members, data)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from kdistill.engine.batch import logits_of
from kdistill.methods.base import require_positive
from kdistill.strategies.multi_teacher import mixture_logits


class TeacherEnsemble(nn.Module):
    """Teachers over the same classes, mixed at `temperature` with fixed `weights` (equal by default)."""

    def __init__(self, teachers: Sequence[nn.Module], temperature: float = 1.0,
                 weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if isinstance(teachers, nn.Module) or len(teachers) == 0:
            raise ValueError("TeacherEnsemble needs a non-empty list of teacher models")
        require_positive("temperature", temperature)
        self.members = nn.ModuleList(teachers)
        self.temperature = float(temperature)
        count = len(self.members)
        values = [1.0] * count if weights is None else [float(w) for w in weights]
        if len(values) != count:
            raise ValueError(f"weights: {len(values)} weights for {count} teachers; give one per teacher")
        if any(not torch.isfinite(torch.tensor(w)) or w < 0 for w in values) or sum(values) <= 0:
            raise ValueError(f"weights: must be finite, >= 0 and not all zero (got {values})")
        # in the state dict: the teacher cache keys outputs by the teacher's state-dict digest, so an
        # ensemble of the same members at another temperature or weighting must not share its entries
        self.register_buffer("weights", torch.tensor(values) / sum(values))
        self.register_buffer("mixture_temperature", torch.tensor(self.temperature))
        self.register_load_state_dict_post_hook(_loaded_temperature)

    def forward(self, *inputs: Any, **kwargs: Any) -> torch.Tensor:
        logits = [logits_of(member(*inputs, **kwargs)) for member in self.members]
        shapes = {tuple(z.shape) for z in logits}
        if len(shapes) > 1:
            raise ValueError(f"the ensemble's teachers disagree on the logits' shape {sorted(shapes)}; an "
                             "ensemble's soft targets need teachers over the same classes")
        return mixture_logits(logits, self.weights, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, weights={[round(w, 6) for w in self.weights.tolist()]}"


def _loaded_temperature(module: TeacherEnsemble, incompatible_keys: Any) -> None:
    """A loaded state dict brings its temperature: keep the float forward reads in step with it."""
    module.temperature = float(module.mixture_temperature)


__all__ = ["TeacherEnsemble"]
