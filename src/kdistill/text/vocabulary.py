"""Vocabulary trimming: keep only the word-embedding rows of the tokens a task's text uses.

Why: a small text model's parameters are mostly word embeddings (all-MiniLM-L6-v2: 30,522 x 384 =
11.7 M of 22.7 M; a 128-wide student: 3.9 M of 4.8 M), yet one task's text touches a fraction of the
vocabulary (SST-2's 6,920 training sentences: 11,581 WordPiece tokens). Dropping the unused rows
shrinks the model without changing any prediction on text made of kept tokens (the idea of
TextPruner's vocabulary pruning).

Two halves, so the trimmed model trains beside an untrimmed teacher and deploys on its own:
- `trim_vocabulary(model, keep, unk_id)` swaps the model's word embedding for a
  `TrimmedEmbedding` with the rows `keep` only that reads the *original* tokenizer's ids (mapped by
  a lookup table; a dropped id reads as the unknown token), so one tokenised batch feeds teacher and
  student alike, and every layer keeps its name.
- `kdistill.text.hf_models.save_pretrained` writes such a model (its `vocab_size` the number kept)
  with `trimmed_tokenizer`: a WordPiece tokenizer whose vocabulary is the kept tokens in the new
  order. The pair loads with transformers alone. On text whose tokens are all kept the trimmed
  tokenizer splits words exactly as the original (WordPiece's greedy longest match finds the same
  pieces when every piece it used is still there), so the saved pair predicts what the trimmed
  model predicts; a word with dropped pieces is split into kept ones (or becomes the unknown token)
  where the trimmed model in memory reads the unknown token.

Only input embeddings are trimmed: a model with an output embedding (a language-model head) is
refused, since trimming it would change which tokens the model can predict.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdistill.errors import BadInput


def corpus_token_ids(datasets: Iterable[Any], tokenizer: Any, max_tokens: int | None = None) -> torch.Tensor:
    """The ids (ascending) of the tokens the text data sets use, plus every special token of
    `tokenizer`; with `max_tokens`, only the most frequent (specials always kept, ties to the lower id)."""
    size = len(tokenizer)
    counts = torch.zeros(size, dtype=torch.long)
    seen = 0
    for data in datasets:
        ids = data.inputs
        used = ids[torch.arange(ids.shape[1])[None, :] < data.lengths[:, None]]
        if len(used) and (int(used.min()) < 0 or int(used.max()) >= size):
            raise BadInput(f"vocabulary: a data set holds token ids outside the tokenizer's 0..{size - 1}; count "
                           "with the tokenizer that encoded it")
        counts += torch.bincount(used, minlength=size)
        seen += 1
    if not seen:
        raise BadInput("vocabulary: no data set given to count tokens in")
    special = torch.as_tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
    used_ids = torch.nonzero(counts).flatten()
    if max_tokens is not None:
        if max_tokens < len(special):
            raise BadInput(f"vocabulary: max_tokens {max_tokens} is below the tokenizer's {len(special)} special "
                           "tokens, which are always kept; raise it")
        counts = counts.clone()
        counts[special] = 0
        order = sorted(used_ids.tolist(), key=lambda i: (-int(counts[i]), i))
        used_ids = torch.as_tensor(order[:max_tokens - len(special)], dtype=torch.long)
    return torch.unique(torch.cat([special, used_ids]))


def _remap(keep: torch.Tensor, old_size: int, unk_id: int) -> torch.Tensor:
    if keep.dim() != 1 or len(keep) == 0:
        raise BadInput("vocabulary: `keep` must be a non-empty 1-d list of token ids")
    if len(torch.unique(keep)) != len(keep):
        raise BadInput("vocabulary: `keep` lists a token id twice")
    if int(keep.min()) < 0 or int(keep.max()) >= old_size:
        raise BadInput(f"vocabulary: `keep` holds ids outside the model's vocabulary 0..{old_size - 1}")
    position = torch.nonzero(keep == unk_id).flatten()
    if len(position) == 0:
        raise BadInput(f"vocabulary: the unknown token (id {unk_id}) must be kept: dropped tokens are read as it")
    table = torch.full((old_size,), int(position[0]), dtype=torch.long)
    table[keep] = torch.arange(len(keep))
    return table


class TrimmedEmbedding(nn.Module):
    """A word embedding with the rows `keep` only, looked up by the original tokenizer's ids (a
    dropped id reads the unknown token's row). Its state dict is an `nn.Embedding`'s (`weight`
    only: the id table is rebuilt from `keep`), so the model saves and loads as a plain Hugging Face
    model of `len(keep)` tokens, to be fed by the trimmed tokenizer."""

    def __init__(self, embedding: nn.Embedding, keep: torch.Tensor, unk_id: int) -> None:
        super().__init__()
        self.original_vocab_size = embedding.num_embeddings
        table = _remap(keep, self.original_vocab_size, unk_id)
        self.register_buffer("keep", keep.clone(), persistent=False)
        self.register_buffer("remap", table, persistent=False)
        pad = embedding.padding_idx
        self.padding_idx = int(table[pad]) if pad is not None and bool((keep == pad).any()) else None
        self.num_embeddings, self.embedding_dim = len(keep), embedding.embedding_dim
        self.weight = nn.Parameter(embedding.weight.detach()[keep].clone())

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if input_ids.numel() and (int(input_ids.max()) >= self.original_vocab_size or int(input_ids.min()) < 0):
            raise BadInput(f"vocabulary: input ids outside the original vocabulary 0..{self.original_vocab_size - 1}; "
                           "feed the ids of the tokenizer the model was trimmed from (or save the model and use "
                           "its trimmed tokenizer)")
        return F.embedding(self.remap[input_ids], self.weight, self.padding_idx)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings} of {self.original_vocab_size} tokens, {self.embedding_dim}"


def trim_vocabulary(model: nn.Module, keep: Sequence[int] | torch.Tensor, unk_id: int) -> nn.Module:
    """Give `model` (in place; returned) a `TrimmedEmbedding` of the tokens `keep`, and set its
    config's `vocab_size` and `pad_token_id` to the new numbering. Every module keeps its path, so
    taps, layouts and layer names work unchanged."""
    getter = getattr(model, "get_input_embeddings", None)
    embedding = getter() if getter is not None else None
    if isinstance(embedding, TrimmedEmbedding):
        raise BadInput("vocabulary: the model is already trimmed; trim the original model once")
    if not isinstance(embedding, nn.Embedding):
        raise BadInput(f"vocabulary: {type(model).__name__} has no input word embedding (get_input_embeddings()); "
                       "only Hugging Face text models can be trimmed")
    output = getattr(model, "get_output_embeddings", lambda: None)()
    if output is not None:
        raise BadInput(f"vocabulary: {type(model).__name__} predicts tokens (it has an output embedding); trimming "
                       "would change what it can predict: trim encoders and classifiers only")
    trimmed = TrimmedEmbedding(embedding, torch.as_tensor(keep, dtype=torch.long).flatten(), unk_id)
    model.set_input_embeddings(trimmed)
    config = getattr(model, "config", None)
    if config is not None:
        config.vocab_size = trimmed.num_embeddings
        if getattr(config, "pad_token_id", None) is not None:
            config.pad_token_id = int(trimmed.remap[config.pad_token_id])
    return model


def trimmed_embedding(model: nn.Module) -> TrimmedEmbedding | None:
    """`model`'s trimmed word embedding, or None for an untrimmed model."""
    getter = getattr(model, "get_input_embeddings", None)
    embedding = getter() if getter is not None else None
    return embedding if isinstance(embedding, TrimmedEmbedding) else None


def trimmed_tokenizer(tokenizer: Any, keep: Sequence[int], directory: str | Path) -> Any:
    """Write to `directory` a copy of the WordPiece `tokenizer` (object or folder) whose vocabulary
    is the tokens `keep` in that order, and return it loaded back."""
    from transformers import AutoTokenizer

    if isinstance(tokenizer, (str, Path)):
        from kdistill.text.tokenize import load_tokenizer

        tokenizer = load_tokenizer(tokenizer)
    backend = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
    if type(backend).__name__ != "WordPiece":
        raise BadInput(f"vocabulary: {type(tokenizer).__name__} is not a WordPiece tokenizer (its model: "
                       f"{type(backend).__name__}); only BERT-style vocabularies can be trimmed into a tokenizer")
    vocab = tokenizer.get_vocab()
    by_id = {i: token for token, i in vocab.items()}
    missing = [i for i in keep if i not in by_id]
    if missing:
        raise BadInput(f"vocabulary: ids {missing[:5]} are not in the tokenizer's vocabulary")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(directory))
    (directory / "tokenizer.json").unlink(missing_ok=True)  # rebuilt from vocab.txt on load
    (directory / "vocab.txt").write_text("".join(by_id[i] + "\n" for i in keep), encoding="utf-8")
    loaded = AutoTokenizer.from_pretrained(str(directory))
    if len(loaded) != len(keep) or loaded.unk_token_id is None:
        raise BadInput(f"vocabulary: the trimmed tokenizer in {directory} reloads with {len(loaded)} tokens, "
                       f"not the {len(keep)} kept")
    return loaded


__all__ = ["TrimmedEmbedding", "corpus_token_ids", "trim_vocabulary", "trimmed_embedding", "trimmed_tokenizer"]
