"""Narrow a Hugging Face encoder's feed-forward layers: each block keeps its `neurons` largest
intermediate neurons (L2 magnitude of the weights that feed and read them), every other layer whole.

Why: most of a MiniLM block's weights and time are in its feed-forward (384 -> 1,536 -> 384). A
student cut from the teacher's blocks (`hf_from_teacher`) and narrowed this way keeps the teacher's
own features for its largest neurons instead of starting a small FFN from random weights; on SST-2
it frees the parameters that let the two-block cut keep 7,700 tokens instead of 4,600 within a
quarter of the teacher's size (docs/benchmarks.md). The
neurons are removed for real (Torch-Pruning's dependency graph, through `kdistill.compress.prune`),
and the config's `intermediate_size` follows, so the model saves and loads as a plain model of the
new size. Needs the `compress` extra (torch-pruning).
"""

from __future__ import annotations

import torch
from torch import nn

from kdistill.errors import BadInput

INSTALL_HINT = 'feed_forward pruning needs torch-pruning: pip install "kdistill[compress]"'


def intermediate_layers(model: nn.Module) -> dict[str, nn.Linear]:
    """The Linear layers that widen each block into its feed-forward (BERT's `intermediate.dense`)."""
    return {name: module for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and name.endswith("intermediate.dense")}


def prune_feed_forward(model: nn.Module, neurons: int) -> nn.Module:
    """Keep each block's `neurons` largest feed-forward neurons, in place; returns `model`.

    Only magnitudes decide, so the graph is traced on any batch of valid token ids (the ids 0..7
    here): the same neurons go whatever text the run holds."""
    layers = intermediate_layers(model)
    if not layers:
        raise BadInput(f"feed_forward: {type(model).__name__} has no BERT-style `intermediate.dense` layers to narrow")
    width = {layer.out_features for layer in layers.values()}
    if len(width) != 1:
        raise BadInput(f"feed_forward: the blocks' feed-forward widths differ ({sorted(width)}); prune a uniform model")
    width = width.pop()
    if isinstance(neurons, bool) or not isinstance(neurons, int) or not 0 < neurons <= width:
        raise BadInput(f"feed_forward: must be an integer in 1..{width}, the teacher's feed-forward width "
                       f"(got {neurons!r})")
    if neurons == width:
        return model
    try:
        from kdistill.compress.prune import StructuredPruning
    except ImportError as error:
        raise BadInput(INSTALL_HINT) from error
    others = [name for name, module in model.named_modules()
              if isinstance(module, nn.Linear) and name not in layers]
    example = torch.arange(8).unsqueeze(0)
    was_training = model.training
    # Torch-Pruning keeps int(width * (1 - ratio)) neurons: aim half a neuron above, against float rounding
    StructuredPruning(model.eval(), example, 1 - (neurons + 0.5) / width, ignore=others).step()
    model.train(was_training)
    model.config.intermediate_size = neurons
    kept = {layer.out_features for layer in intermediate_layers(model).values()}
    if kept != {neurons}:
        raise RuntimeError(f"feed-forward pruning kept {sorted(kept)} neurons, not {neurons}")
    return model


__all__ = ["intermediate_layers", "prune_feed_forward"]
