"""A transfer set for distillation: the training sentences plus perturbed copies of them, as in
Tang et al. 2019 (Distilling Task-Specific Knowledge from BERT into Simple Neural Networks,
arXiv:1903.12136, section 3.3).

Why: with a few thousand labelled sentences a student sees too few inputs to learn the teacher's
function; the teacher's logits on perturbed sentences are free extra targets (no label is needed
on them), which gave Tang et al.'s student most of its gain. The rules, per word of a
whitespace-tokenised sentence, one uniform draw X:
  X < mask_prob                          -> the word becomes `mask_token` (the teacher's [MASK])
  mask_prob <= X < mask_prob+replace_prob -> a word drawn from the training set's unigram distribution
then, with probability `ngram_prob`, the sentence is cut to a random n-gram (n uniform in 1..max_ngram).
Tang et al. replaced a word by another of the same part of speech; no tagger ships here, so the
replacement is drawn by corpus frequency (frequent words are mostly function words, which keeps the
sentence's grammar roughly as a same-tag swap would). Copies equal to a training sentence or to an
earlier copy are dropped, so no input is weighted twice.

Everything is drawn from one `numpy.random.Generator` seeded by `seed`: the same call gives the same
transfer set, so a teacher cache keyed by the data's digest is reused across runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kdistill.errors import BadInput


@dataclass(frozen=True)
class AugmentRules:
    """The probabilities of Tang et al. 2019 (their SST-2 values are the defaults)."""

    mask_prob: float = 0.1
    replace_prob: float = 0.1
    ngram_prob: float = 0.25
    max_ngram: int = 5
    mask_token: str = "[MASK]"

    def __post_init__(self) -> None:
        for name in ("mask_prob", "replace_prob", "ngram_prob"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
                raise BadInput(f"augment.{name}: a probability in [0, 1] (got {value!r})")
        if self.mask_prob + self.replace_prob > 1:
            raise BadInput(f"augment: mask_prob + replace_prob = {self.mask_prob + self.replace_prob} > 1; "
                           "they split one draw per word, so their sum must be at most 1")
        if not isinstance(self.max_ngram, int) or isinstance(self.max_ngram, bool) or self.max_ngram < 1:
            raise BadInput(f"augment.max_ngram: a positive integer (got {self.max_ngram!r})")
        if not self.mask_token or self.mask_token != self.mask_token.strip():
            raise BadInput(f"augment.mask_token: a non-empty token without spaces (got {self.mask_token!r})")


class WordSampler:
    """Words drawn by their frequency in a corpus (the replacement rule's distribution)."""

    def __init__(self, texts: Sequence[str]) -> None:
        counts = Counter(word for text in texts for word in text.split())
        if not counts:
            raise BadInput("augment: the texts hold no words; give at least one non-empty sentence")
        self.words = sorted(counts)  # sorted: the same draws whatever order the corpus came in
        frequency = np.array([counts[w] for w in self.words], dtype=np.float64)
        self.cumulative = np.cumsum(frequency / frequency.sum())

    def draw(self, rng: np.random.Generator, count: int) -> list[str]:
        picks = np.searchsorted(self.cumulative, rng.random(count), side="right")
        return [self.words[min(int(i), len(self.words) - 1)] for i in picks]


def perturb(words: Sequence[str], rules: AugmentRules, sampler: WordSampler, rng: np.random.Generator) -> list[str]:
    """One perturbed copy of a sentence given as words (see the module doc for the rules)."""
    draws = rng.random(len(words))
    replacements = iter(sampler.draw(rng, int(((draws >= rules.mask_prob)
                                               & (draws < rules.mask_prob + rules.replace_prob)).sum())))
    out = []
    for word, x in zip(words, draws, strict=True):
        if x < rules.mask_prob:
            out.append(rules.mask_token)
        elif x < rules.mask_prob + rules.replace_prob:
            out.append(next(replacements))
        else:
            out.append(word)
    if out and rng.random() < rules.ngram_prob:
        n = int(rng.integers(1, rules.max_ngram + 1))
        if n < len(out):
            start = int(rng.integers(0, len(out) - n + 1))
            out = out[start:start + n]
    return out


@dataclass
class TransferSet:
    """The originals first (`source[i] == i` for them), then the new copies; `source` names the
    training sentence each text came from (to carry its label along, or to group by origin)."""

    texts: list[str]
    source: list[int]
    originals: int

    def __len__(self) -> int:
        return len(self.texts)


def transfer_set(texts: Sequence[str], copies: int, seed: int = 0, rules: AugmentRules | None = None) -> TransferSet:
    """`texts` and up to `copies` distinct perturbed copies of each (fewer where a draw repeats a
    sentence already in the set). Deterministic in (`texts`, `copies`, `seed`, `rules`)."""
    if not isinstance(copies, int) or isinstance(copies, bool) or copies < 0:
        raise BadInput(f"augment.copies: a non-negative integer (got {copies!r})")
    rules = rules or AugmentRules()
    texts = list(texts)
    sampler = WordSampler(texts)
    rng = np.random.default_rng(seed)
    seen = set(texts)
    out, source = list(texts), list(range(len(texts)))
    for index, text in enumerate(texts):
        words = text.split()
        for _ in range(copies):
            new = " ".join(perturb(words, rules, sampler, rng))
            if new and new not in seen:
                seen.add(new)
                out.append(new)
                source.append(index)
    return TransferSet(out, source, len(texts))


__all__ = ["AugmentRules", "TransferSet", "WordSampler", "perturb", "transfer_set"]
