"""The text of an LM experiment: training and held-out token blocks and the tokenizer that made them.

`text_corpus` is what a config's `data.name: kdistill.lm:text_corpus` names (a loader for `kdistill
lm`, not for `kdistill run`, whose data sets are classification bundles). The tokenizer is trained
on the training text only; the held-out text is a second file, or a seeded share of the blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdistill.errors import BadInput
from kdistill.lm.corpus import TokenBlocks, encode_stream, read_lines, special_ids, split_blocks, train_tokenizer


@dataclass
class TextCorpus:
    tokenizer: Any  # tokenizers.Tokenizer
    train: TokenBlocks
    held_out: TokenBlocks

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def end_of_text(self) -> int:
        return special_ids(self.tokenizer)[0]

    @property
    def pad(self) -> int:
        return special_ids(self.tokenizer)[1]


def _file(root: Path | None, name: str, option: str) -> Path:
    path = Path(name) if root is None or Path(name).is_absolute() else Path(root) / name
    if not path.is_file():
        raise BadInput(f"data.options.{option}: {path} is not a file; give a text file (one document a line) "
                       "relative to data.root")
    return path


def text_corpus(root: str | Path | None = None, *, train: str, held_out: str | None = None,
                held_out_fraction: float = 0.1, vocab_size: int = 1024, block_size: int = 64,
                encoding: str = "utf-8", seed: int = 0) -> TextCorpus:
    """Blocks of `train` (and of `held_out`, or a `held_out_fraction` of the training blocks)."""
    lines = read_lines(_file(Path(root) if root else None, train, "train"), encoding=encoding)
    tokenizer = train_tokenizer(lines, vocab_size)
    _, pad = special_ids(tokenizer)
    blocks = TokenBlocks.from_stream(encode_stream(tokenizer, lines), block_size, pad)
    if held_out is not None:
        other = read_lines(_file(Path(root) if root else None, held_out, "held_out"), encoding=encoding)
        return TextCorpus(tokenizer, blocks, TokenBlocks.from_stream(encode_stream(tokenizer, other), block_size, pad))
    train_blocks, held_blocks = split_blocks(blocks, held_out_fraction, seed)
    return TextCorpus(tokenizer, train_blocks, held_blocks)


__all__ = ["TextCorpus", "text_corpus"]
