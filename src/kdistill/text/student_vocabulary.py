"""`student.vocabulary: training` in a run: the student built from `student:` keeps only the word
embeddings of the tokens the training text uses (`kdistill.text.vocabulary`), with
`vocabulary_size` the most frequent of them. It reads the teacher's token ids, so the run's one
tokenisation feeds both, and it is exported with the trimmed tokenizer.

The student reads a token its training split lacks as [UNK] (or, with `vocabulary_fallback:
nearest`, as the kept token nearest to it in its own pretrained embeddings), in training and,
through the exported tokenizer (which gives every dropped token the id it reads as), in deployment:
the exported pair predicts what the run scored. On SST-2, 681 of the 1,821 test sentences hold a
token the training sentences lack.

Trimmed right after the student is built (and its checkpoint, an untrimmed model's, loaded), before
`embedding_init`, which then gives it the teacher's rows of its kept tokens.
"""

from __future__ import annotations

import logging
import tempfile
from typing import Any

import torch
from torch import nn

from kdistill.config_error import ConfigError
from kdistill.errors import BadInput

LOG = logging.getLogger("kdistill")


def trim_student_vocabulary(spec: Any, model: nn.Module, bundle: Any, where: str = "student") -> nn.Module:
    """`model` trimmed as `spec` asks (unchanged when it asks nothing); a refusal names the field.

    The tokens are counted on the split the run trains on (`bundle.train_split`, set by the run's
    data loading: after `train_limit` and without the validation split), so validation reads a
    token unseen in training as the test set does ([UNK], or its nearest kept token). The tokenizer
    is trimmed once into a temporary folder here (with the model's id table), so one that cannot be
    (not WordPiece) is refused before training, not at export.
    """
    if getattr(spec, "vocabulary", None) is None:
        return model
    train = getattr(bundle, "train_split", None) or getattr(bundle, "train", None)
    path = getattr(bundle, "tokenizer_path", "")
    if not path or not hasattr(train, "lengths"):
        raise ConfigError([f"{where}.vocabulary: trims a text student to its training tokens; this data is not "
                           "tokenised text (use a text data set, or remove vocabulary)"])
    from kdistill.text.tokenize import load_tokenizer
    from kdistill.text.vocabulary import corpus_token_ids, trim_vocabulary, trimmed_tokenizer

    tokenizer = load_tokenizer(path)
    specials = len(set(tokenizer.all_special_ids))
    if spec.vocabulary_size is not None and spec.vocabulary_size < specials:
        raise ConfigError([f"{where}.vocabulary_size: {spec.vocabulary_size} is below the tokenizer's {specials} "
                           "special tokens, which are always kept; raise it"])
    try:
        keep = corpus_token_ids([train], tokenizer, max_tokens=spec.vocabulary_size)
        fallback = getattr(spec, "vocabulary_fallback", "unk")
        trim_vocabulary(model, keep, tokenizer.unk_token_id, fallback, tokenizer.all_special_ids)
        with tempfile.TemporaryDirectory() as scratch:  # what SavePretrained will write, tried now
            trimmed_tokenizer(tokenizer, keep.tolist(), scratch, model.get_input_embeddings().remap)
    except BadInput as error:
        raise ConfigError([f"{where}.vocabulary: {str(error).removeprefix('vocabulary: ')}"]) from error
    LOG.info("kdistill: %s vocabulary: %d of %d tokens kept (those of the training split), the rest read as %s",
             where, len(keep), len(tokenizer),
             "[UNK]" if fallback == "unk" else "their nearest kept token")
    return model


def report_checkpoint_table(spec: Any, model: nn.Module, before: torch.Tensor | None, where: str = "student") -> None:
    """Warn when the trimmed checkpoint just loaded into `model` brought an id table other than the
    one `vocabulary_fallback` built (`before`): the checkpoint's wins, since its weights were
    trained with it."""
    table = model.get_input_embeddings().remap
    if before is not None and not torch.equal(table.cpu(), before.cpu()):
        LOG.warning("kdistill: %s.checkpoint reads dropped tokens through its own id table, not the one "
                    "%s.vocabulary_fallback: %s built; the checkpoint's is kept (its weights were trained with it)",
                    where, where, getattr(spec, "vocabulary_fallback", "unk"))
