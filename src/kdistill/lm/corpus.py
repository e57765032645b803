"""Real text for language-model distillation: lines from files, a byte-level BPE tokenizer trained on
them, and the token stream cut into fixed-length blocks.

Sources are plain text files (one document a line), the `LABEL TEXT` files of ../shared/data
(SST-2, TREC: the label is dropped, the sentence kept), or fortune files (Debian's `fortunes`:
documents of several lines between lines holding a lone `%`). The tokenizer is trained offline on the
training lines alone (the held-out text never shapes the vocabulary) with Hugging Face `tokenizers`,
and saved with the run so a model's token ids can be read back.

Lines are joined into one stream with an end-of-text token after each (GPT-2's packing) and cut into
blocks of `block_size` tokens; only the last block is short, and is padded. Each block carries
`labels`: the next token at every position, -100 where there is none (padding, and the last position
of a block) -- the convention `torch.nn.functional.cross_entropy` ignores, and the mask every
token-level loss here applies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from kdistill.digest import tensors_digest
from kdistill.errors import BadInput
from kdistill.methods.logits import IGNORE_INDEX  # re-exported: the label of unscored positions

END_OF_TEXT = "<|endoftext|>"
PAD = "<|pad|>"
LABEL_WORD = re.compile(r"^(\d+|[A-Z]+:\w+)$")  # SST-2's `1`, TREC's `DESC:manner`


def read_lines(path: str | Path, labelled: bool | None = None, encoding: str = "utf-8") -> list[str]:
    """The documents of a text file: its non-empty lines, or a fortune file's `%`-separated entries
    (their lines kept). `labelled` drops a leading label word (`1 a fine film`); None decides from
    the file: labelled when every line starts with a label word (an integer, or TREC's `DESC:manner`)."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: no such text file; give a plain text file or a 'LABEL TEXT' file such as "
                       "../shared/data/sst2/stsa.binary.train")
    try:
        text = path.read_text(encoding=encoding)
    except UnicodeDecodeError as error:
        raise BadInput(f"{path}: not {encoding} text (byte {error.start}); give its encoding (TREC's files: "
                       "encoding: latin-1; of fortunes, read the .u8 files)") from None
    except LookupError:
        raise BadInput(f"encoding: {encoding!r} is not a text encoding Python knows; e.g. utf-8, latin-1") from None
    raw = text.splitlines()
    if "%" in (line.strip() for line in raw):  # a fortune file: entries between lone '%' lines
        entries, current = [], []
        for line in raw + ["%"]:
            if line.strip() == "%":
                entries.append("\n".join(current).strip())
                current = []
            else:
                current.append(line.rstrip())
        return [entry for entry in entries if entry]
    lines = [line.strip() for line in raw]
    lines = [line for line in lines if line]
    if labelled is None:
        labelled = bool(lines) and all(" " in line and LABEL_WORD.match(line.split(" ", 1)[0]) for line in lines)
    if labelled:
        lines = [line.split(" ", 1)[1].strip() for line in lines]
    return [line for line in lines if line]


def train_tokenizer(lines: Iterable[str], vocab_size: int = 1024, min_frequency: int = 2):
    """A byte-level BPE tokenizer (`tokenizers.Tokenizer`) trained on `lines`, with the end-of-text
    and padding tokens as ids 0 and 1. Byte-level: any text encodes, nothing is ever unknown."""
    from tokenizers import ByteLevelBPETokenizer

    if vocab_size < 260:
        raise BadInput(f"vocab_size: {vocab_size} is too small for a byte-level BPE (256 bytes + 2 special "
                       "tokens); use 260 or more")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(lines), vocab_size=vocab_size, min_frequency=min_frequency,
                            special_tokens=[END_OF_TEXT, PAD], show_progress=False)
    return bpe._tokenizer  # the plain `tokenizers.Tokenizer`: what `save` / `Tokenizer.from_file` round-trip


def load_tokenizer(path: str | Path):
    from tokenizers import Tokenizer

    if not Path(path).is_file():
        raise BadInput(f"{path}: no tokenizer file; train one with train_tokenizer() and save() it")
    return Tokenizer.from_file(str(path))


def special_ids(tokenizer) -> tuple[int, int]:
    """(end-of-text id, padding id) of a tokenizer trained here."""
    eot, pad = tokenizer.token_to_id(END_OF_TEXT), tokenizer.token_to_id(PAD)
    if eot is None or pad is None:
        raise BadInput(f"the tokenizer has no {END_OF_TEXT} / {PAD} tokens; train it with train_tokenizer()")
    return eot, pad


def encode_stream(tokenizer, lines: Sequence[str]) -> list[int]:
    """Every line's tokens followed by end-of-text: one stream (GPT-2's packing)."""
    eot, _ = special_ids(tokenizer)
    stream: list[int] = []
    for encoding in tokenizer.encode_batch(list(lines)):
        stream.extend(encoding.ids)
        stream.append(eot)
    return stream


class TokenBlocks(Dataset):
    """Fixed-length token blocks. A sample is a dict: `input_ids`, `attention_mask` (0 on padding),
    `labels` (the next token, -100 where none) and `index` (what the teacher cache is addressed by)."""

    def __init__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> None:
        if not (input_ids.shape == attention_mask.shape == labels.shape) or input_ids.dim() != 2:
            raise BadInput(f"token blocks: input_ids {tuple(input_ids.shape)}, attention_mask "
                           f"{tuple(attention_mask.shape)} and labels {tuple(labels.shape)} must be one (N, T) shape")
        self.input_ids, self.attention_mask, self.labels = input_ids.long(), attention_mask.long(), labels.long()

    @classmethod
    def from_stream(cls, stream: Sequence[int], block_size: int, pad_id: int) -> TokenBlocks:
        """Cut a token stream into blocks of `block_size`; the short last block is padded."""
        if block_size < 2:
            raise BadInput(f"block_size: must be at least 2 tokens (got {block_size})")
        if not stream:
            raise BadInput("the text has no tokens; give a non-empty text file")
        count = -(-len(stream) // block_size)
        ids = torch.full((count * block_size,), pad_id, dtype=torch.long)
        ids[: len(stream)] = torch.as_tensor(stream, dtype=torch.long)
        mask = torch.zeros(count * block_size, dtype=torch.long)
        mask[: len(stream)] = 1
        return cls.from_sequences(ids.view(count, block_size), mask.view(count, block_size))

    @classmethod
    def from_sequences(cls, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> TokenBlocks:
        """Blocks from (N, T) token ids: each position's label is the next real token of its row."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        labels[:, :-1] = input_ids[:, 1:]
        labels[:, :-1][attention_mask[:, 1:] == 0] = IGNORE_INDEX
        labels[attention_mask == 0] = IGNORE_INDEX
        return cls(input_ids, attention_mask, labels)

    @property
    def block_size(self) -> int:
        return self.input_ids.shape[1]

    def num_targets(self) -> int:
        """Positions with a next token: what perplexity averages over."""
        return int((self.labels != IGNORE_INDEX).sum())

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids[index], "attention_mask": self.attention_mask[index],
                "labels": self.labels[index], "index": torch.tensor(index)}

    def subset(self, indices: torch.Tensor) -> TokenBlocks:
        return TokenBlocks(self.input_ids[indices], self.attention_mask[indices], self.labels[indices])

    def fingerprint(self) -> str:
        """Digest of the contents and order (the teacher cache's key depends on it)."""
        return tensors_digest([("input_ids", self.input_ids), ("attention_mask", self.attention_mask),
                               ("labels", self.labels)])[:16]


def split_blocks(blocks: TokenBlocks, held_out: float, seed: int) -> tuple[TokenBlocks, TokenBlocks]:
    """A seeded random share of the blocks held out (when no separate held-out file is given)."""
    if not 0 < held_out < 1:
        raise BadInput(f"held_out: must be a fraction in (0, 1) (got {held_out})")
    order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(seed))
    count = max(1, round(len(blocks) * held_out))
    if count >= len(blocks):
        raise BadInput(f"held_out: the text makes {len(blocks)} block(s), too few to hold {held_out:.0%} out and "
                       "still train on some; give more text, a smaller block_size, or a separate held_out file")
    return blocks.subset(order[count:].sort().values), blocks.subset(order[:count].sort().values)
