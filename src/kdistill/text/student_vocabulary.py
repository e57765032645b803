"""`student.vocabulary: training` in a run: the student built from `student:` keeps only the word
embeddings of the tokens the training text uses (`kdistill.text.vocabulary`), with
`vocabulary_size` the most frequent of them. It reads the teacher's token ids, so the run's one
tokenisation feeds both, and it is exported with the trimmed tokenizer.

Trimmed right after the student is built (and its checkpoint, an untrimmed model's, loaded), before
`embedding_init`, which then gives it the teacher's rows of its kept tokens.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from kdistill.config_error import ConfigError
from kdistill.errors import BadInput

LOG = logging.getLogger("kdistill")


def trim_student_vocabulary(spec: Any, model: nn.Module, bundle: Any, where: str = "student") -> nn.Module:
    """`model` trimmed as `spec` asks (unchanged when it asks nothing); a refusal names the field."""
    if getattr(spec, "vocabulary", None) is None:
        return model
    train, path = getattr(bundle, "train", None), getattr(bundle, "tokenizer_path", "")
    if not path or not hasattr(train, "lengths"):
        raise ConfigError([f"{where}.vocabulary: trims a text student to its training tokens; this data is not "
                           "tokenised text (use a text data set, or remove vocabulary)"])
    from kdistill.text.tokenize import load_tokenizer
    from kdistill.text.vocabulary import corpus_token_ids, trim_vocabulary

    tokenizer = load_tokenizer(path)
    try:
        keep = corpus_token_ids([train], tokenizer, max_tokens=spec.vocabulary_size)
        trim_vocabulary(model, keep, tokenizer.unk_token_id)
    except BadInput as error:
        raise ConfigError([f"{where}.vocabulary: {str(error).removeprefix('vocabulary: ')}"]) from error
    LOG.info("kdistill: %s vocabulary: %d of %d tokens kept (those of the training text)", where, len(keep),
             len(tokenizer))
    return model
