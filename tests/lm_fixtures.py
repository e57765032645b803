"""Small real text and tiny GPT-2 models for the LM tests (no download: Python's own help topics)."""

from __future__ import annotations

import functools

import pytest
import torch

from kdistill.lm import TokenBlocks, causal_lm, encode_stream, read_lines, special_ids, train_tokenizer

VOCAB = 300
BLOCK = 16


@functools.lru_cache(maxsize=1)
def corpus() -> tuple[object, TokenBlocks, TokenBlocks]:
    """(tokenizer, training blocks, held-out blocks) from `pydoc_data.topics`, which ships with Python."""
    from pydoc_data.topics import topics

    lines = [line.strip() for name in sorted(topics)[:12] for line in topics[name].splitlines() if line.strip()]
    tokenizer = train_tokenizer(lines[:-40], VOCAB)
    _, pad = special_ids(tokenizer)
    stream = encode_stream(tokenizer, lines[:-40])
    if len(stream) % BLOCK == 0:  # keep a padded last block (the DDP tests need one) whatever Python's help text is
        stream = stream[:-1]
    train = TokenBlocks.from_stream(stream, BLOCK, pad)
    held_out = TokenBlocks.from_stream(encode_stream(tokenizer, lines[-40:]), BLOCK, pad)
    return tokenizer, train, held_out


def tiny_lm(seed: int, layers: int = 1, width: int = 32, heads: int = 2, vocab: int = VOCAB):
    torch.manual_seed(seed)
    return causal_lm(vocab, (BLOCK,), n_layer=layers, n_embd=width, n_head=heads)




@pytest.fixture(autouse=True)
def one_thread():
    """Tiny LMs run fastest on one thread: a second one adds synchronisation on every small op,
    which on a busy machine (a waiting thread descheduled) costs more than the op itself."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


__all__ = ["BLOCK", "VOCAB", "corpus", "one_thread", "read_lines", "tiny_lm"]
