"""Vocabulary trimming: keep only the word-embedding rows of the tokens a task's text uses.

Why: a small text model's parameters are mostly word embeddings (all-MiniLM-L6-v2: 30,522 x 384 =
11.7 M of 22.7 M; a 128-wide student: 3.9 M of 4.8 M), yet one task's text touches a fraction of the
vocabulary (SST-2's 6,920 training sentences: 11,581 WordPiece tokens). Dropping the unused rows
shrinks the model without changing any prediction on text made of kept tokens (the idea of
TextPruner's vocabulary pruning).

Two halves, so the trimmed model trains beside an untrimmed teacher and deploys on its own:
- `trim_vocabulary(model, keep, unk_id)` swaps the model's word embedding for a
  `TrimmedEmbedding` with the rows `keep` only that reads the *original* tokenizer's ids (mapped by
  a lookup table; a dropped id reads as the unknown token, or with `fallback="nearest"` as the kept
  token nearest to it in the model's own embedding space), so one tokenised batch feeds teacher and
  student alike, and every layer keeps its name.
- `kdistill.text.hf_models.save_pretrained` writes such a model (its `vocab_size` the number kept)
  with `trimmed_tokenizer`: the original WordPiece tokenizer with its ids renumbered (kept tokens
  0..K-1, every dropped token the id it reads as). It splits text exactly as the original, so
  the saved pair reads, on any text, the ids the trimmed model read in training and predicts what
  it predicted; it loads with transformers alone. (Rebuilding a WordPiece vocabulary of the kept
  tokens instead would split a word with a dropped piece into kept pieces the model never saw in
  that word: on SST-2 with 4,600 kept tokens that cost the exported student 0.9 points of test
  accuracy.)

Only input embeddings are trimmed: a model with an output embedding (a language-model head) is
refused, since trimming it would change which tokens the model can predict.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

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


def _check_table(table: torch.Tensor, keep: torch.Tensor, old_size: int) -> None:
    if table.shape != (old_size,) or int(table.min()) < 0 or int(table.max()) >= len(keep):
        raise BadInput(f"vocabulary: the id table must map each of the {old_size} original ids to a row "
                       f"0..{len(keep) - 1}")
    if not torch.equal(table[keep], torch.arange(len(keep))):
        raise BadInput("vocabulary: the id table must read every kept token as its own row")


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


def nearest_remap(weight: torch.Tensor, keep: torch.Tensor, unk_id: int,
                  exclude: Sequence[int] = (), chunk: int = 4096) -> torch.Tensor:
    """The lookup table (original id -> kept row) that reads each dropped token as the kept token
    nearest to it: the highest cosine similarity between rows of `weight` (the untrimmed embedding)
    after subtracting their mean (a pretrained embedding's rows share a large common direction that
    would otherwise dominate). `exclude` (special tokens) are never chosen as neighbours.

    Why: a task's training text misses many tokens its test text holds (SST-2: 681 of the 1,821
    test sentences hold a token the training sentences lack); read as [UNK] they lose their meaning,
    read as their nearest kept neighbour ("masterful" as "masterpiece") much of it stays, at no cost
    in parameters. Meaningful only for pretrained rows (a student cut from the teacher, or loaded)."""
    keep = keep.cpu()
    table = _remap(keep, weight.shape[0], unk_id)
    rows = weight.detach().float()
    rows = F.normalize(rows - rows.mean(dim=0), dim=1)
    candidate = ~torch.isin(keep, torch.as_tensor(list(exclude), dtype=torch.long))
    if not bool(candidate.any()):
        raise BadInput("vocabulary: no kept token other than special tokens to read dropped tokens as; keep more")
    positions = torch.nonzero(candidate).flatten()
    kept_rows = rows[keep[positions].to(rows.device)]
    dropped = torch.ones(weight.shape[0], dtype=torch.bool)
    dropped[keep] = False
    dropped_ids = torch.nonzero(dropped).flatten()
    for start in range(0, len(dropped_ids), chunk):
        ids = dropped_ids[start:start + chunk]
        best = (rows[ids.to(rows.device)] @ kept_rows.T).argmax(dim=1).cpu()
        table[ids] = positions[best]
    return table


class TrimmedEmbedding(nn.Module):
    """A word embedding with the rows `keep` only, looked up by the original tokenizer's ids through
    `remap` (original id -> row; by default a dropped id reads the unknown token's row). Its state
    dict holds `weight`, `keep` and `remap`: a checkpoint of a model trimmed to other tokens is
    refused on load rather than read into the wrong rows, and the checkpoint's `remap` is the one its
    weights were trained with (one without it, saved before `remap` was kept, read dropped tokens as
    [UNK]; weights without `keep` load as this model's rows and keep its table; both through
    `load_state_dict` and `kdistill.models.load_weights`). `kdistill.text.hf_models.save_pretrained`
    leaves `keep` and `remap` out, so the saved folder is a plain Hugging Face model of `len(keep)`
    tokens, to be fed by the trimmed tokenizer (which encodes `remap`)."""

    optional_state = ("keep", "remap")  # filled on load when absent (kdistill.models.load_weights reads this)

    def __init__(self, embedding: nn.Embedding, keep: torch.Tensor, unk_id: int,
                 remap: torch.Tensor | None = None) -> None:
        super().__init__()
        device = embedding.weight.device
        self.original_vocab_size = embedding.num_embeddings
        self.unk_id = unk_id
        table = _remap(keep.cpu(), self.original_vocab_size, unk_id) if remap is None else remap.cpu().long()
        _check_table(table, keep.cpu(), self.original_vocab_size)
        self.register_buffer("keep", keep.clone().to(device))
        self.register_buffer("remap", table.to(device))
        pad = embedding.padding_idx
        self.padding_idx = int(table[pad]) if pad is not None and bool((keep == pad).any()) else None
        self.num_embeddings, self.embedding_dim = len(keep), embedding.embedding_dim
        self.weight = nn.Parameter(embedding.weight.detach()[keep.to(device)].clone())

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        incoming = state_dict.get(prefix + "keep")
        table = state_dict.get(prefix + "remap")
        if incoming is None:  # weights saved without it (a Hugging Face folder): read as this model's rows
            state_dict[prefix + "keep"] = self.keep
        elif not torch.equal(incoming.to(self.keep.device), self.keep):
            raise BadInput(f"vocabulary: the weights at {prefix.rstrip('.') or 'the embedding'} were trimmed to "
                           f"other tokens ({len(incoming)} kept, this model keeps {len(self.keep)}, not the same ids); "
                           "trim with the same data, vocabulary_size and tokenizer as the run that saved them")
        if table is None:  # an older checkpoint read dropped tokens as [UNK]; a Hugging Face folder: this model's
            keep = self.keep.cpu()
            table = _remap(keep, self.original_vocab_size, self.unk_id) if incoming is not None else self.remap
            state_dict[prefix + "remap"] = table
        else:
            _check_table(table.cpu(), self.keep.cpu(), self.original_vocab_size)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if input_ids.numel() and not torch.compiler.is_compiling():  # (a data-dependent check: not traced)
            low, high = torch.aminmax(input_ids)
            if int(low) < 0 or int(high) >= self.original_vocab_size:
                raise BadInput(f"vocabulary: input ids outside the original vocabulary 0.."
                               f"{self.original_vocab_size - 1}; feed the ids of the tokenizer the model was trimmed "
                               "from (or save the model and use its trimmed tokenizer)")
        return F.embedding(self.remap[input_ids], self.weight, self.padding_idx)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings} of {self.original_vocab_size} tokens, {self.embedding_dim}"


def trim_vocabulary(model: nn.Module, keep: Sequence[int] | torch.Tensor, unk_id: int,
                    fallback: Literal["unk", "nearest"] = "unk", special_ids: Sequence[int] = ()) -> nn.Module:
    """Give `model` (in place; returned) a `TrimmedEmbedding` of the tokens `keep`, and set its
    config's `vocab_size` and `pad_token_id` to the new numbering. Every module keeps its path, so
    taps, layouts and layer names work unchanged. A dropped token reads as [UNK] (`fallback="unk"`)
    or as its nearest kept token in the model's own embedding (`"nearest"`, never one of
    `special_ids`: see `nearest_remap`)."""
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
    if fallback not in ("unk", "nearest"):
        raise BadInput(f"vocabulary: fallback must be unk or nearest (got {fallback!r})")
    keep = torch.as_tensor(keep, dtype=torch.long).flatten().cpu()
    table = (nearest_remap(embedding.weight, keep, unk_id, special_ids) if fallback == "nearest"
             else _remap(keep, embedding.num_embeddings, unk_id))
    trimmed = TrimmedEmbedding(embedding, keep, unk_id, table)
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


def _refuse_untrimmable(tokenizer: Any) -> None:
    backend = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
    if type(backend).__name__ != "WordPiece":
        raise BadInput(f"vocabulary: {type(tokenizer).__name__} is not a WordPiece tokenizer (its model: "
                       f"{type(backend).__name__}); only BERT-style vocabularies can be trimmed into a tokenizer")
    added = [t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if not t.special]
    if added:  # transformers numbers them after the model's vocabulary on load, whatever the file says
        raise BadInput(f"vocabulary: the tokenizer has added tokens that are not special ({', '.join(added[:5])}); "
                       "their ids cannot be renumbered: trim a tokenizer without them")


def _renumber_processor(node: Any, new_id: dict[str, int]) -> Any:
    """The post-processor's JSON with every special token's id renumbered (Template, Bert, Roberta
    processors and Sequences of them)."""
    if isinstance(node, list):
        if len(node) == 2 and isinstance(node[0], str) and isinstance(node[1], int) and node[0] in new_id:
            return [node[0], new_id[node[0]]]  # BertProcessing's ["[SEP]", 102]
        return [_renumber_processor(item, new_id) for item in node]
    if isinstance(node, dict):
        if "ids" in node and "tokens" in node:  # TemplateProcessing's special_tokens entry
            return {**node, "ids": [new_id[t] for t in node["tokens"]]}
        return {key: _renumber_processor(value, new_id) for key, value in node.items()}
    return node


def trimmed_tokenizer(tokenizer: Any, keep: Sequence[int], directory: str | Path,
                      remap: torch.Tensor | None = None) -> Any:
    """Write to `directory` a copy of the WordPiece `tokenizer` (object or folder) that numbers the
    tokens `keep` 0..len(keep)-1 in that order and gives every other token the unknown token's new
    id (or, with `remap`, a `TrimmedEmbedding`'s table, the row it reads), and return it loaded back.
    It splits text exactly as the original (its vocabulary still holds every token; only the ids
    change: in tokenizer.json's vocabulary, added tokens and post-processor), so the saved model
    reads what the trimmed model read in training, on any text.
    Refused: other tokenizer models (BPE, Unigram), non-special added tokens, dropped special tokens."""
    from transformers import AutoTokenizer

    if isinstance(tokenizer, (str, Path)):
        from kdistill.text.tokenize import load_tokenizer

        tokenizer = load_tokenizer(tokenizer)
    _refuse_untrimmable(tokenizer)
    by_id = {i: token for token, i in tokenizer.get_vocab().items()}
    missing = [i for i in keep if i not in by_id]
    if missing:
        raise BadInput(f"vocabulary: ids {missing[:5]} are not in the tokenizer's vocabulary")
    kept_set = set(keep)
    lost = [t for t in tokenizer.all_special_tokens if tokenizer.convert_tokens_to_ids(t) not in kept_set]
    if lost:
        raise BadInput(f"vocabulary: the special tokens {', '.join(lost)} are not kept; keep every special token")
    new_id = {by_id[old]: new for new, old in enumerate(keep)}
    unknown = new_id[tokenizer.unk_token]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(directory))
    spec_file = directory / "tokenizer.json"
    if not spec_file.exists():
        raise BadInput(f"vocabulary: {type(tokenizer).__name__} saved no tokenizer.json to renumber; use a "
                       "tokenizers-backed (fast) WordPiece tokenizer")
    spec = json.loads(spec_file.read_text(encoding="utf-8"))
    if remap is not None:
        table = remap.cpu().long()
        _check_table(table, torch.as_tensor(list(keep), dtype=torch.long), table.shape[0])
        ids = tokenizer.get_vocab()
        if max(ids.values()) >= len(table):
            raise BadInput(f"vocabulary: the id table covers {len(table)} ids, the tokenizer numbers up to "
                           f"{max(ids.values())}; give the table of a model trimmed from this tokenizer's vocabulary")
        rows = table.tolist()
        spec["model"]["vocab"] = {token: rows[ids[token]] if token in ids else unknown
                                  for token in spec["model"]["vocab"]}
    else:
        spec["model"]["vocab"] = {token: new_id.get(token, unknown) for token in spec["model"]["vocab"]}
    spec["added_tokens"] = [{**token, "id": new_id.get(token["content"], unknown)}
                            for token in spec.get("added_tokens") or []]
    spec["post_processor"] = _renumber_processor(spec.get("post_processor"), new_id)
    spec_file.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    (directory / "vocab.txt").unlink(missing_ok=True)  # an older save's: it would number the tokens otherwise
    loaded = AutoTokenizer.from_pretrained(str(directory))
    ids = loaded.get_vocab().values()
    if max(ids) != len(keep) - 1 or any(loaded.convert_tokens_to_ids(t) != new_id[t]
                                        for t in tokenizer.all_special_tokens):
        raise BadInput(f"vocabulary: the trimmed tokenizer in {directory} reloads with ids up to {max(ids)} or other "
                       f"special-token ids, not the {len(keep)} kept")
    return loaded


__all__ = ["TrimmedEmbedding", "corpus_token_ids", "nearest_remap", "trim_vocabulary", "trimmed_embedding",
           "trimmed_tokenizer"]
