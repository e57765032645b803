"""`kdistill layers` for Hugging Face text models: module paths and output shapes for a text input,
so a user can pick the tap names of hidden states and attention maps. Models built by a registered
name (`hf-student`, `kdistill.lm:causal_lm`, ...) that turn out to be transformers models are
listed the same way (`--input-shape` then counts tokens).

The model comes from a local directory (`save_pretrained`'s: config.json, with or without weights)
or a config file (config.json); nothing is downloaded. Its class is the config's own
`architectures[0]` (e.g. `BertForSequenceClassification`, `GPT2LMHeadModel`), else `AutoModel`.
It runs once, in eval mode, on `(2, tokens)` token ids with a full attention mask, under the eager
attention kernel: only that kernel forms the attention probabilities, so the self-attention
modules show them as the second item of their output (tap selector `:1`), which is what the
attention methods read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdistill.errors import BadInput

DEFAULT_TOKENS = 16
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def is_text_model(source: str) -> bool:
    """A directory holding config.json, or a .json file: what `kdistill layers` reads as a Hugging Face model."""
    path = Path(source)
    return (path.is_dir() and (path / "config.json").is_file()) or (path.suffix == ".json" and path.is_file())


def _model_class(config: Any) -> Any:
    import transformers

    for name in getattr(config, "architectures", None) or []:
        found = getattr(transformers, name, None)
        if found is not None:
            return found
    return transformers.AutoModel


def load_text_model(source: str | Path) -> nn.Module:
    """The model of a local directory (with its weights when it has them) or of a config file."""
    from transformers import AutoConfig

    from kdistill.text.hf_models import quiet_transformers

    path = Path(source)
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise BadInput(f"{path}: not a Hugging Face config ({first}); give a directory written by save_pretrained "
                       "or its config.json") from None
    cls = _model_class(config)
    with quiet_transformers():
        if path.is_dir() and any((path / name).is_file() for name in WEIGHT_FILES):
            return cls.from_pretrained(str(path), local_files_only=True, attn_implementation="eager")
        model = cls.from_config(config) if hasattr(cls, "from_config") else cls(config)  # Auto* or a concrete class
    model.set_attn_implementation("eager")
    return model


def tokens_of(input_shape: str | None) -> int:
    """`--input-shape` read as a number of tokens (default 16)."""
    if input_shape is None:
        return DEFAULT_TOKENS
    try:
        (tokens,) = (int(s) for s in input_shape.split(","))
    except ValueError:
        raise BadInput(f"--input-shape: a text model takes one number, the tokens of an input, e.g. 32 "
                       f"(got {input_shape!r})") from None
    if tokens < 1:
        raise BadInput(f"--input-shape: the number of tokens must be >= 1 (got {tokens})")
    return tokens


def text_config(model: nn.Module) -> Any:
    """The Hugging Face config of a transformers model, or of one wrapped as `.model` (kdistill's
    `CausalLMScores`); None for any other module (it takes no token ids)."""
    from transformers import PretrainedConfig

    for candidate in (model, getattr(model, "model", None)):
        config = getattr(candidate, "config", None)
        if isinstance(config, PretrainedConfig):
            return config
    return None


def text_layers(model: nn.Module, tokens: int) -> list[tuple[str, str, str]]:
    """(path, module type, output shape) of every module that runs on a batch of 2 texts of `tokens` ids."""
    from kdistill.taps import describe_layers

    config = text_config(model)
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if limit is not None and tokens > limit:
        raise BadInput(f"--input-shape: {tokens} tokens exceed the model's {limit} positions; give at most {limit}")
    vocab = getattr(config, "vocab_size", None) or 2
    ids = torch.arange(2 * tokens).reshape(2, tokens) % vocab
    return describe_layers(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})


def command_text_layers(args: Any, console: Any) -> int:
    """`kdistill layers DIR_OR_CONFIG [--input-shape TOKENS]`: the table of a text model."""
    if args.checkpoint:
        raise BadInput("--checkpoint: a Hugging Face model directory holds its own weights; drop --checkpoint")
    return print_text_layers(load_text_model(args.model), args.model, tokens_of(args.input_shape), console)


def print_text_layers(model: nn.Module, name: str, tokens: int, console: Any) -> int:
    """The table of `model` (a text model from a directory, or built by a registered name) for `tokens` ids."""
    from rich.table import Table

    rows = text_layers(model, tokens)
    kernel = getattr(text_config(model), "_attn_implementation", None)
    attention = ("the self-attention module's :1" if kernel in (None, "eager") else
                 f"not formed by this model's '{kernel}' attention kernel (None); build it with eager attention "
                 "to tap them")
    table = Table(title=f"{name} ({type(model).__name__}): tappable module paths for 2 texts of {tokens} tokens",
                  caption=f"hidden states: a block's output (:0 of a tuple); attention probabilities: {attention}")
    for column in ("path", "module", "output shape"):
        table.add_column(column)
    for path, kind, out in rows:
        table.add_row(path, kind, out)
    console.print(table)
    return 0


__all__ = ["command_text_layers", "is_text_model", "load_text_model", "print_text_layers", "text_config", "text_layers",
           "tokens_of"]
