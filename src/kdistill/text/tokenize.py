"""Token ids from texts with the model's own tokenizer, held as one padded tensor, served in
batches padded only to their longest member (dynamic padding).

Tokenising once, up front, keeps the tokenizer out of the training loop; `TextDataset` is an
`InMemoryDataset` (its `inputs` are the ids padded to the longest text, `lengths` the real
lengths), so the validation split, `train_limit`, label checks and the teacher cache (which keys
outputs by sample index and needs `fingerprint()`) all work on it unchanged. A batch is
`{"input": {"input_ids", "attention_mask"}, "label", "index"}`, cut to the batch's longest text:
the engine passes the inner dict to a Hugging Face model as keyword arguments. The source texts
ride along (`texts`, kept through `subset`), so a transfer set can be drawn from exactly the
training split a run ends up with (after its validation split and limit).

Texts longer than `max_length` tokens are truncated; how many were is counted per split and
logged, since a silent cut changes what a model sees.

`padding: max_length` pads every batch to `max_length` instead: what a teacher cache of layer
outputs (`cache.features: true`) needs, since it stores one fixed shape per sample. kdistill's
transformer methods leave padding out of their losses, so both paddings train the same student.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kdistill.data.base import InMemoryDataset
from kdistill.digest import tensors_digest
from kdistill.errors import BadInput

log = logging.getLogger("kdistill")


def load_tokenizer(path: str | Path) -> Any:
    """A tokenizer from a local directory (no download, ever); `BadInput` when there is none."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise BadInput(f"tokenizer: '{path}' is not a folder; give the local folder of a Hugging Face model "
                       "(the one holding tokenizer.json or vocab.txt)")
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BadInput(f"tokenizer: cannot load a tokenizer from '{path}' ({first}); the folder must hold "
                       "tokenizer.json or vocab.txt with tokenizer_config.json") from error


@dataclass
class Tokenized:
    ids: torch.Tensor  # (N, longest) int64, padded with pad_id
    lengths: torch.Tensor  # (N,) tokens per text, special tokens included
    truncated: int  # texts cut to max_length
    pad_id: int


def tokenize(tokenizer: Any, texts: list[str], max_length: int) -> Tokenized:
    """Encode `texts` with special tokens, truncated to `max_length`; counts the truncated ones."""
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2:
        raise BadInput(f"data.options.max_length: must be an integer >= 2 (got {max_length!r})")
    full = tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
    truncated = sum(len(ids) > max_length for ids in full)
    encoded = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    lengths = torch.tensor([len(ids) for ids in encoded], dtype=torch.long)
    longest = int(lengths.max()) if len(encoded) else 1
    ids = torch.full((len(encoded), longest), pad_id, dtype=torch.long)
    for row, sequence in enumerate(encoded):
        ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
    return Tokenized(ids, lengths, truncated, pad_id)


class TextDataset(InMemoryDataset):
    """Token ids and labels in memory; each batch padded to its own longest text."""

    def __init__(self, ids: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor, classes: list[str],
                 pad_id: int = 0, truncated: int = 0, pad_to: int | None = None,
                 texts: list[str] | None = None) -> None:
        if pad_to is not None and ids.shape[1] < pad_to:  # every batch `pad_to` wide
            ids = torch.cat([ids, torch.full((len(ids), pad_to - ids.shape[1]), pad_id, dtype=ids.dtype)], 1)
        super().__init__(ids, labels, classes)
        if len(lengths) != len(ids):
            raise BadInput(f"text data set: {len(ids)} token rows but {len(lengths)} lengths")
        self.lengths = lengths.long()
        self.pad_id = int(pad_id)
        self.truncated = int(truncated)
        self.pad_to = pad_to
        if texts is not None and len(texts) != len(ids):
            raise BadInput(f"text data set: {len(ids)} token rows but {len(texts)} texts")
        self.texts = list(texts) if texts is not None else None

    def _batch(self, idx: torch.Tensor) -> dict[str, Any]:
        longest = max(int(self.lengths[idx].max()), 1) if len(idx) else 1
        longest = self.pad_to or longest
        ids = self.inputs[idx, :longest]
        mask = (torch.arange(longest)[None, :] < self.lengths[idx][:, None]).long()
        return {"input": {"input_ids": ids, "attention_mask": mask}, "label": self.labels[idx], "index": idx}

    def __getitem__(self, index: int) -> dict[str, Any]:
        idx = torch.as_tensor([index], dtype=torch.long)
        batch = self._batch(idx)
        return {"input": {k: v[0] for k, v in batch["input"].items()}, "label": batch["label"][0],
                "index": torch.tensor(index)}

    def __getitems__(self, indices: list[int]) -> dict[str, Any]:
        return self._batch(torch.as_tensor(indices, dtype=torch.long))

    def subset(self, indices: torch.Tensor) -> TextDataset:
        lengths = self.lengths[indices]
        longest = max(int(lengths.max()), 1) if len(lengths) else 1
        kept = torch.arange(len(self.inputs))[indices].flatten().tolist()  # integer or boolean indices alike
        texts = [self.texts[i] for i in kept] if self.texts is not None else None
        return TextDataset(self.inputs[indices, :longest], lengths, self.labels[indices], self.classes, self.pad_id,
                           pad_to=self.pad_to, texts=texts)

    def fingerprint(self) -> str:
        return tensors_digest([("ids", self.inputs), ("lengths", self.lengths), ("labels", self.labels)])[:16]


PADDING = ("longest", "max_length")


def text_dataset(tokenizer: Any, texts: list[str], labels: list[int], classes: list[str], max_length: int,
                 split: str = "data", padding: str = "longest") -> TextDataset:
    """Tokenise one split; the number of truncated texts is logged and kept on the data set.
    `padding`: `longest` (each batch to its longest text) or `max_length` (every batch)."""
    if padding not in PADDING:
        raise BadInput(f"data.options.padding: '{padding}' is not one of {', '.join(PADDING)}")
    tokens = tokenize(tokenizer, texts, max_length)
    if tokens.truncated:
        log.warning("%s: %d of %d texts are longer than max_length = %d tokens and were truncated",
                    split, tokens.truncated, len(texts), max_length)
    return TextDataset(tokens.ids, tokens.lengths, torch.tensor(labels, dtype=torch.long), classes, tokens.pad_id,
                       tokens.truncated, max_length if padding == "max_length" else None, texts=texts)


__all__ = ["TextDataset", "Tokenized", "load_tokenizer", "text_dataset", "tokenize"]
