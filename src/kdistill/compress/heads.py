"""Structured pruning of attention heads: whole heads are removed, so the model really shrinks
(fewer parameters, fewer FLOPs) and still runs with consistent shapes.

Two kinds of attention are handled:

* Hugging Face BERT-style self-attention (a module with `query` / `key` / `value` Linear layers and
  `num_attention_heads`): Torch-Pruning's `MetaPruner` with `prune_num_heads` removes the heads
  from q, k, v and the matching input columns of the output projection; only the attention groups
  are pruned (every other layer is ignored). Transformers 5 dropped `prune_heads` /
  `config.pruned_heads`, so the per-layer head count lives on the attention modules, which is what
  their forward reads; the shared config keeps the original count (saving and reloading a pruned
  model through `from_pretrained` is not supported).
* `torch.nn.MultiheadAttention`: Torch-Pruning 1.6 can narrow its `embed_dim` but not remove heads
  (its head pruning expects a Linear qkv layer), so kdistill ranks the heads itself and removes
  them through Torch-Pruning's dependency graph with a pruner that keeps `head_dim` and lowers
  `num_heads`. `embed_dim` is both the input and the output width of that module, so the layers
  feeding it and the residual stream around it lose the same channels.

Heads are ranked by weight magnitude (`l1` or `l2`) within each attention layer; each layer loses
`ceil(ratio * heads)` of them and keeps at least one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.pruner.function import MultiheadAttentionPruner

from kdistill.errors import BadInput

IMPORTANCES = {"l1": 1, "l2": 2}
# Torch-Pruning removes heads only inside a channel-pruning pass that removes something: a ratio this
# small asks for one channel per group, and with `prune_head_dims=False` attention groups lose whole
# heads only, while every non-attention group is ignored.
_HEADS_ONLY_RATIO = 1e-6


def _is_hf_attention(module: nn.Module) -> bool:
    return (all(isinstance(getattr(module, name, None), nn.Linear) for name in ("query", "key", "value"))
            and hasattr(module, "num_attention_heads") and hasattr(module, "attention_head_size"))


def attention_heads(model: nn.Module) -> dict[str, int]:
    """Heads per attention layer, by module path (BERT-style self-attention and nn.MultiheadAttention)."""
    heads = {}
    for path, module in model.named_modules():
        if _is_hf_attention(module):
            heads[path] = int(module.num_attention_heads)
        elif isinstance(module, nn.MultiheadAttention):
            heads[path] = int(module.num_heads)
    return heads


def heads_removed(heads: int, ratio: float) -> int:
    """How many of a layer's `heads` a `ratio` removes: Torch-Pruning's local rule (rounded up),
    kept identical so that the check below predicts what its pruner does."""
    return math.ceil(ratio * heads)


def _check(model: nn.Module, ratio: float, importance: str) -> dict[str, int]:
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 < ratio < 1:
        raise BadInput(f"prune.heads: must be a number between 0 and 1, exclusive (got {ratio!r}); "
                       "e.g. 0.5 removes half the heads of every attention layer")
    if importance not in IMPORTANCES:
        raise BadInput(f"prune.importance: must be one of {sorted(IMPORTANCES)} (got {importance!r})")
    heads = attention_heads(model)
    if not heads:
        raise BadInput("prune.heads: the model has no attention layer kdistill can prune (BERT-style "
                       "query/key/value self-attention or nn.MultiheadAttention); drop the heads option")
    for path, count in heads.items():
        if heads_removed(count, ratio) >= count:
            raise BadInput(f"prune.heads: {ratio:g} would remove all {count} heads of {path}; "
                           f"use at most {math.floor(1000 * (count - 1) / count) / 1000:g}")
    return heads


def _first_tensor(output: Any) -> torch.Tensor:
    """The tensor Torch-Pruning traces back from: a HF output's logits / last hidden state, or the output."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        return next(v for v in output.values() if isinstance(v, torch.Tensor))
    if isinstance(output, tuple | list):
        return next(v for v in output if isinstance(v, torch.Tensor))
    raise TypeError(f"cannot trace the model output of type {type(output).__name__}")


def _prune_hf_heads(model: nn.Module, example: Any, ratio: float, p: int) -> None:
    attention = [m for m in model.modules() if _is_hf_attention(m)]
    num_heads = {linear: m.num_attention_heads for m in attention for linear in (m.query, m.key, m.value)}
    ignored = [m for m in model.modules()
               if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.LSTM) and m not in num_heads]
    inputs = dict(example) if isinstance(example, Mapping) else example  # Torch-Pruning calls model(**dict)
    pruner = tp.pruner.MetaPruner(
        model, inputs, importance=tp.importance.MagnitudeImportance(p=p), pruning_ratio=_HEADS_ONLY_RATIO,
        num_heads=num_heads, prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=ratio,
        ignored_layers=ignored, output_transform=_first_tensor)
    pruner.step()
    for module in attention:
        module.all_head_size = module.query.out_features
        module.num_attention_heads = module.all_head_size // module.attention_head_size


class _WholeHeadPruner(MultiheadAttentionPruner):
    """Torch-Pruning's nn.MultiheadAttention pruner, for index sets made of whole heads: `head_dim`
    stays and `num_heads` drops (the stock one keeps `num_heads` and narrows every head)."""

    def check(self, layer: nn.MultiheadAttention, idxs: Any, to_output: bool) -> None:
        if len(idxs) % layer.head_dim:
            raise ValueError(f"{len(idxs)} channels are not whole heads of width {layer.head_dim}")

    def prune_out_channels(self, layer: nn.MultiheadAttention, idxs: list) -> nn.Module:
        head_dim = layer.head_dim
        super().prune_out_channels(layer, idxs)
        layer.head_dim, layer.num_heads = head_dim, layer.embed_dim // head_dim
        return layer

    prune_in_channels = prune_out_channels


def mha_head_importance(layer: nn.MultiheadAttention, p: int = 2) -> torch.Tensor:
    """Per head: the p-th power sum of its q, k, v projection rows and its output-projection columns."""
    if layer.in_proj_weight is None:
        raise BadInput("prune.heads: nn.MultiheadAttention with separate kdim / vdim is not supported; "
                       "ignore that layer or use equal dimensions")
    e, h, d = layer.embed_dim, layer.num_heads, layer.head_dim
    w = layer.in_proj_weight.detach().abs().pow(p)
    qkv = w.view(3, h, d, e).sum(dim=(0, 2, 3))
    out = layer.out_proj.weight.detach().abs().pow(p).view(e, h, d).sum(dim=(0, 2))
    return qkv + out


def _prune_mha_heads(model: nn.Module, example: Any, ratio: float, p: int) -> None:
    layers = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    pruner = _WholeHeadPruner()
    inputs = dict(example) if isinstance(example, Mapping) else example
    graph = tp.DependencyGraph().build_dependency(model, inputs, output_transform=_first_tensor,
                                                  customized_pruners={nn.MultiheadAttention: pruner})
    for layer in layers:
        drop = torch.topk(mha_head_importance(layer, p), heads_removed(layer.num_heads, ratio), largest=False).indices
        channels = sorted(int(h) * layer.head_dim + i for h in drop for i in range(layer.head_dim))
        graph.get_pruning_group(layer, pruner.prune_out_channels, channels).prune()


def prune_attention_heads(model: nn.Module, example: Any, ratio: float, importance: str = "l2") -> dict[str, int]:
    """Remove `ceil(ratio * heads)` heads of every attention layer of `model`, in place, the least
    important by weight magnitude; returns the heads left per layer (module path -> count).

    `example` is one batch the graph is traced on: a tensor, or a dict of keyword inputs (a
    tokeniser's output for a Hugging Face model). The optimiser of the old weights is stale after."""
    _check(model, ratio, importance)
    p = IMPORTANCES[importance]
    was_training = model.training
    model.eval()
    try:
        if any(_is_hf_attention(m) for m in model.modules()):
            _prune_hf_heads(model, example, ratio, p)
        if any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
            _prune_mha_heads(model, example, ratio, p)
    finally:
        model.train(was_training)
    return attention_heads(model)
