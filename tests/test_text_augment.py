"""The transfer set of Tang et al. 2019: masking, unigram replacement, n-gram cuts, no duplicates,
determinism, and bad rules refused."""

from __future__ import annotations

import numpy as np
import pytest

from kdistill.errors import BadInput
from kdistill.text.augment import AugmentRules, WordSampler, perturb, transfer_set

OFF = {"mask_prob": 0.0, "replace_prob": 0.0, "ngram_prob": 0.0}


def test_no_perturbation_adds_nothing():
    # every copy equals its original, so it is dropped as a duplicate
    result = transfer_set(["a fine film", "dull plot"], copies=5, rules=AugmentRules(**OFF))
    assert result.texts == ["a fine film", "dull plot"]
    assert result.source == [0, 1] and result.originals == 2


def test_mask_everything():
    result = transfer_set(["a fine film"], copies=3, rules=AugmentRules(**{**OFF, "mask_prob": 1.0}))
    # all three copies are the same all-mask sentence: kept once
    assert result.texts == ["a fine film", "[MASK] [MASK] [MASK]"]
    assert result.source == [0, 0]


def test_replacement_draws_corpus_words_and_keeps_length():
    texts = ["x y z", "y y"]
    result = transfer_set(texts, copies=20, rules=AugmentRules(**{**OFF, "replace_prob": 1.0}))
    new = result.texts[2:]
    assert new, "some copy must differ from its source"
    for text, source in zip(new, result.source[2:], strict=True):
        assert len(text.split()) == len(texts[source].split())
        assert set(text.split()) <= {"x", "y", "z"}
    assert len(set(result.texts)) == len(result.texts)  # no duplicates, none equal to an original


def test_replacement_follows_corpus_frequency():
    # "y" is 3 of the 4 corpus words: a replaced word is "y" 75 % of the time
    sampler = WordSampler(["x y", "y y"])
    draws = sampler.draw(np.random.default_rng(0), 4000)
    share = draws.count("y") / len(draws)
    assert abs(share - 0.75) < 4 * (0.75 * 0.25 / 4000) ** 0.5


def test_mask_rate_matches_its_probability():
    words = ["w"] * 5000
    rules = AugmentRules(mask_prob=0.3, replace_prob=0.0, ngram_prob=0.0)
    out = perturb(words, rules, WordSampler(["w"]), np.random.default_rng(1))
    share = out.count("[MASK]") / len(out)
    assert abs(share - 0.3) < 4 * (0.3 * 0.7 / 5000) ** 0.5


def test_ngram_cut_is_a_contiguous_window():
    words = ["a", "b", "c", "d", "e", "f", "g", "h"]
    rules = AugmentRules(**{**OFF, "ngram_prob": 1.0, "max_ngram": 3})
    rng = np.random.default_rng(0)
    lengths = set()
    for _ in range(200):
        out = perturb(words, rules, WordSampler([" ".join(words)]), rng)
        lengths.add(len(out))
        start = words.index(out[0])
        assert out == words[start:start + len(out)]
    assert lengths == {1, 2, 3}


def test_ngram_longer_than_the_sentence_keeps_it_whole():
    rules = AugmentRules(**{**OFF, "ngram_prob": 1.0, "max_ngram": 1})
    assert perturb(["solo"], rules, WordSampler(["solo"]), np.random.default_rng(0)) == ["solo"]


def test_same_seed_same_set_other_seed_other_set():
    texts = ["a stirring , funny and finally transporting film", "apparently reassembled from the floor"]
    first, again = transfer_set(texts, 4, seed=3), transfer_set(texts, 4, seed=3)
    assert first.texts == again.texts and first.source == again.source
    assert transfer_set(texts, 4, seed=4).texts != first.texts
    assert first.texts[:2] == texts and len(first) <= 2 + 2 * 4


@pytest.mark.parametrize("rules, match", [
    ({"mask_prob": 1.5}, "mask_prob"),
    ({"mask_prob": 0.6, "replace_prob": 0.6}, "sum"),
    ({"max_ngram": 0}, "max_ngram"),
    ({"mask_token": ""}, "mask_token"),
])
def test_bad_rules_are_refused(rules, match):
    with pytest.raises(BadInput, match=match):
        AugmentRules(**rules)


def test_bad_copies_and_empty_corpus_are_refused():
    with pytest.raises(BadInput, match="copies"):
        transfer_set(["a b"], copies=-1)
    with pytest.raises(BadInput, match="no words"):
        transfer_set(["", "  "], copies=1)


def test_the_mask_word_is_the_tokenizers_mask_token(tmp_path):
    # the teacher must read one [MASK] id, not the pieces "[", "mask", "]"
    pytest.importorskip("transformers")
    from text_fixtures import tokenizer_dir

    from kdistill.text.tokenize import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir(tmp_path))
    ids = tokenizer(AugmentRules().mask_token + " good")["input_ids"]
    assert ids == [tokenizer.cls_token_id, tokenizer.mask_token_id, tokenizer.convert_tokens_to_ids("good"),
                   tokenizer.sep_token_id]


def test_real_sst2_transfer_set():
    from conftest import require_shared

    from kdistill.text.files import read_text_file

    examples = read_text_file(require_shared("sst2", "stsa.binary.train"), "label-text")
    texts = examples.texts[:300]
    vocabulary = {w for t in texts for w in t.split()} | {"[MASK]"}
    result = transfer_set(texts, copies=3, seed=0)
    assert result.texts[:300] == texts and 300 < len(result) <= 300 + 3 * 300
    assert len(set(result.texts)) == len(result.texts)
    for text, source in zip(result.texts[300:], result.source[300:], strict=True):
        words = text.split()
        assert set(words) <= vocabulary and len(words) <= len(texts[source].split())
