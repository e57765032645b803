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

from pathlib import Path
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
    check_config_keys(architecture, config)
    try:
        hf_config = AutoConfig.for_model(architecture, vocab_size=num_classes, **config)
        return CausalLMScores(AutoModelForCausalLM.from_config(hf_config))
    except (ValueError, TypeError, KeyError) as error:
        raise BadInput(f"model options: {str(error).splitlines()[0]}; give {architecture} config keys such as "
                       "n_layer, n_embd, n_head") from None


def check_config_keys(architecture: str, options: dict[str, Any]) -> None:
    """Refuse keys that are not settings of `architecture`'s config (`AutoConfig.for_model` keeps any
    keyword as a stray attribute, so a misspelt `n_layers` would silently build the default depth)."""
    import difflib
    import inspect

    from transformers import CONFIG_MAPPING

    if architecture not in CONFIG_MAPPING:
        close = difflib.get_close_matches(str(architecture), list(CONFIG_MAPPING.keys()), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise BadInput(f"model options: architecture '{architecture}' is not a Hugging Face model type{hint} "
                       "(e.g. gpt2, llama)")
    config_class = CONFIG_MAPPING[architecture]
    default = config_class()
    known = {*default.to_dict(), *getattr(config_class, "attribute_map", {}),
             *inspect.signature(config_class.__init__).parameters} - {"self", "kwargs", "args"}
    for key in options:
        if key not in known and not hasattr(default, key):
            close = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.6)
            examples = [k for k in ("n_layer", "n_embd", "n_head", "num_hidden_layers", "hidden_size") if k in known]
            hint = (f"did you mean {' or '.join(repr(c) for c in close)}?" if close else
                    f"give {architecture} config keys such as {', '.join(examples[:3])}")
            raise BadInput(f"model options: '{key}' is not a setting of a {architecture} model "
                           f"({config_class.__name__}), so it would be ignored; {hint}")


def load_lm_weights(model: CausalLMScores, path: str | Path, where: str) -> CausalLMScores:
    """Load a checkpoint (kdistill's `student.pt` of an LM stage, or the Hugging Face model's own state
    dict, without the `model.` prefix) into `model` strictly. A file that is not a checkpoint, or one
    of another size or family, is a `BadInput` naming `{where}.checkpoint`, the shared loader's
    description (`kdistill.models.loading`: the missing / unexpected keys and the shapes that differ)."""
    from kdistill.models.loading import mismatch_problems, read_weights

    try:
        state = read_weights(path)
    except BadInput as error:  # not a checkpoint, damaged, no state dict: said as `kdistill run` says it
        raise BadInput(f"{where}.checkpoint: {error}") from None
    inner = unwrap(model)
    # kdistill's stages save the wrapper (keys under `model.`); a plain Hugging Face state dict has none
    target = model if state and all(key.startswith("model.") for key in state) else inner
    own = target.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    shapes = [f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(own[key].shape)}"
              for key, value in state.items() if key in own and own[key].shape != value.shape]
    if missing or unexpected or shapes:
        config = getattr(inner, "config", None)
        size = {key: getattr(config, key) for key in ("n_layer", "n_embd", "n_head", "vocab_size")
                if hasattr(config, key)}
        described = ", ".join(f"{key} {value}" for key, value in size.items())
        raise BadInput(f"{where}.checkpoint: {path} does not fit this {where} ({type(inner).__name__}"
                       f"{': ' + described if described else ''}): "
                       + "; ".join(mismatch_problems(missing, unexpected, shapes, own))
                       + f"; give {where}.options the size it was trained with (and the same data.options.vocab_size "
                         "and block_size)")
    target.load_state_dict(state, strict=False)
    return model


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
