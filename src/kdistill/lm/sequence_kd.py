"""Sequence-level knowledge distillation (Kim & Rush 2016): the student is trained, with the
ordinary language-model loss, on text the teacher generates, instead of (or besides) real text.

The teacher samples `count` blocks of `block_size` tokens from its own distribution, each started
from the end-of-text token (as its training blocks may be) and continued without stopping at
end-of-text: the blocks are packed text like the real ones, so they need no padding. The padding
token is never sampled (its probability is set to 0 and the rest renormalised): a pad id inside a
block would be trained on as text, and the student would learn to emit padding. Sampling
uses its own `torch.Generator` seeded from `seed` (the global RNG is untouched), so the same
teacher and seed give the same text. A key-value cache keeps generation linear in the length.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from kdistill.engine.device import move_model
from kdistill.errors import BadInput
from kdistill.lm.corpus import TokenBlocks
from kdistill.lm.models import unwrap


@torch.inference_mode()
def generate_blocks(teacher: nn.Module, count: int, block_size: int, start_id: int, seed: int = 0,
                    temperature: float = 1.0, batch_size: int = 64, device: torch.device | str = "cpu",
                    pad_id: int | None = None) -> TokenBlocks:
    """`count` teacher-sampled blocks of `block_size` tokens (the first is `start_id`); `pad_id` is
    never sampled."""
    if count < 1 or block_size < 2:
        raise BadInput(f"sequence-level KD: count ({count}) must be >= 1 and block_size ({block_size}) >= 2")
    if not temperature > 0:
        raise BadInput(f"temperature: must be > 0 (got {temperature})")
    if pad_id is not None and pad_id == start_id:
        raise BadInput(f"sequence-level KD: the start token {start_id} is the padding token; start from end-of-text")
    model = unwrap(teacher)
    was_training = model.training
    move_model(model.eval(), device)
    generator = torch.Generator(device=device).manual_seed(seed)
    # transformers 5.2x calls the key-value cache `cache`; earlier versions `past_key_values`
    cache_name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    blocks = []
    for start in range(0, count, batch_size):
        size = min(batch_size, count - start)
        tokens = torch.full((size, 1), start_id, dtype=torch.long, device=device)
        out = model(input_ids=tokens, use_cache=True)
        pieces = [tokens]
        for _ in range(block_size - 1):
            logits = out.logits[:, -1].float() / temperature
            if pad_id is not None:
                logits[:, pad_id] = float("-inf")
            probs = torch.softmax(logits, dim=-1)
            tokens = torch.multinomial(probs, 1, generator=generator)
            pieces.append(tokens)
            out = model(input_ids=tokens, use_cache=True, **{cache_name: getattr(out, cache_name)})
        blocks.append(torch.cat(pieces, dim=1).cpu())
    model.train(was_training)
    return TokenBlocks.from_sequences(torch.cat(blocks))


__all__ = ["generate_blocks"]
