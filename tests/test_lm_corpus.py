"""Token blocks and the held-out split: every block is next-token labelled, and a split that would
leave nothing to train on is refused."""

from __future__ import annotations

import pytest

from kdistill.errors import BadInput
from kdistill.lm.corpus import TokenBlocks, split_blocks


def test_blocks_label_the_next_token_and_pad_the_last_block():
    blocks = TokenBlocks.from_stream(list(range(10, 17)), block_size=4, pad_id=1)
    assert len(blocks) == 2
    assert blocks.input_ids.tolist() == [[10, 11, 12, 13], [14, 15, 16, 1]]
    assert blocks.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    # the next token within a block; -100 where none follows (block end, padding)
    assert blocks.labels.tolist() == [[11, 12, 13, -100], [15, 16, -100, -100]]


def test_a_split_that_leaves_no_training_block_is_refused():
    one_block = TokenBlocks.from_stream(list(range(10, 40)), block_size=64, pad_id=1)
    with pytest.raises(BadInput, match="too few to hold 10% out"):
        split_blocks(one_block, 0.1, seed=0)
    train, held_out = split_blocks(TokenBlocks.from_stream(list(range(100)), block_size=8, pad_id=1), 0.25, seed=0)
    assert (len(train), len(held_out)) == (10, 3)
