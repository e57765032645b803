"""Causal language models for distillation: any `AutoModelForCausalLM`, seen by kdistill's loop as
per-position class scores.

kdistill's loop, its label term and its logit methods read class scores on dimension 1, which is
also PyTorch's own convention for per-position scores (`cross_entropy`, `nll_loss` take (B, C, T)
with targets (B, T)). `CausalLMScores` wraps a causal LM, unedited, and returns its logits as
(B, V, T), a free transposed view: the existing `hard_label` method is then the language-model loss
(positions labelled -100 ignored), the loop's correct-count is next-token accuracy, and the
token-level methods (methods/token_level.py) read the same layout. The wrapped model is
`.model`; save and load it with `save_pretrained` / `from_pretrained` as usual.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kdistill.errors import BadInput


class CausalLMScores(nn.Module):
    """A causal LM whose forward returns its next-token logits as (batch, vocab, positions)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits.transpose(1, 2)


def causal_lm(num_classes: int, input_shape: tuple[int, ...] = (), *, architecture: str = "gpt2",
              **config: Any) -> CausalLMScores:
    """A randomly initialised causal LM built from a Hugging Face config (no download): `num_classes`
    is the vocabulary size, `input_shape` (T,) the context length; other keys go to the config
    (GPT-2: n_layer, n_embd, n_head, dropout as resid_pdrop / embd_pdrop / attn_pdrop, ...)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    positions = int(input_shape[0]) if input_shape else int(config.pop("n_positions", 1024))
    config.setdefault("n_positions" if architecture == "gpt2" else "max_position_embeddings", positions)
    # the special ids of a tokenizer from `train_tokenizer` (end-of-text 0, padding 1), not GPT-2's 50256
    config.setdefault("bos_token_id", 0)
    config.setdefault("eos_token_id", 0)
    config.setdefault("pad_token_id", 1)
    try:
        hf_config = AutoConfig.for_model(architecture, vocab_size=num_classes, **config)
        return CausalLMScores(AutoModelForCausalLM.from_config(hf_config))
    except (ValueError, TypeError, KeyError) as error:
        raise BadInput(f"model options: {str(error).splitlines()[0]}; give {architecture} config keys such as "
                       "n_layer, n_embd, n_head") from None


def unwrap(model: nn.Module) -> nn.Module:
    """The Hugging Face model inside `CausalLMScores` (or the model itself)."""
    return model.model if isinstance(model, CausalLMScores) else model


def token_scores(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, V, T) next-token logits of a wrapped or a plain Hugging Face causal LM."""
    if isinstance(model, CausalLMScores):
        return model(input_ids, attention_mask)
    return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits.transpose(1, 2)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
