"""Held-out perplexity and throughput of a causal LM on token blocks.

Perplexity is exp of the mean negative log-likelihood of every next token that has one (padding
and each block's last position excluded: labels -100), over the whole set -- a token-weighted mean,
not a mean of per-block perplexities.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdistill.engine.device import move_model
from kdistill.lm.corpus import IGNORE_INDEX, TokenBlocks
from kdistill.lm.models import token_scores


@torch.inference_mode()
def perplexity(model: nn.Module, blocks: TokenBlocks, batch_size: int = 64,
               device: torch.device | str = "cpu") -> dict[str, Any]:
    """{"perplexity", "nll" (nats per token), "tokens" (targets scored), "tokens_per_s" (positions
    read per second of forward passes)}."""
    was_training = model.training
    move_model(model.eval(), device)
    nll, targets, positions, seconds = 0.0, 0, 0, 0.0
    for start in range(0, len(blocks), batch_size):
        rows = slice(start, start + batch_size)
        ids, mask = blocks.input_ids[rows].to(device), blocks.attention_mask[rows].to(device)
        labels = blocks.labels[rows].to(device)
        began = time.perf_counter()
        scores = token_scores(model, ids, mask).float()
        seconds += time.perf_counter() - began
        nll += float(F.cross_entropy(scores, labels, ignore_index=IGNORE_INDEX, reduction="sum"))
        targets += int((labels != IGNORE_INDEX).sum())
        positions += int(mask.sum())
    model.train(was_training)
    mean = nll / max(targets, 1)
    return {"perplexity": math.exp(mean), "nll": mean, "tokens": targets,
            "tokens_per_s": positions / seconds if seconds > 0 else math.nan}


def training_tokens_per_second(history: list[dict[str, Any]], blocks: TokenBlocks) -> float:
    """Real (unpadded) training tokens per second of training, from a Distiller's epoch records."""
    seconds = sum(record.get("epoch_time_s", 0.0) for record in history)
    tokens = int(blocks.attention_mask.sum()) * len(history)
    return tokens / seconds if seconds > 0 else math.nan


__all__ = ["perplexity", "training_tokens_per_second"]
