"""Vocabulary trimming with `fallback="nearest"`: a dropped token reads as the kept token nearest to
it (cosine of mean-centred embedding rows, special tokens never chosen), in memory, through a
checkpoint and through the exported tokenizer; the run's `vocabulary_fallback` field."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("transformers")

from pydantic import ValidationError  # noqa: E402
from text_fixtures import model_dir  # noqa: E402

from kdistill.config import StudentSpec  # noqa: E402
from kdistill.config_error import ConfigError  # noqa: E402
from kdistill.errors import BadInput  # noqa: E402
from kdistill.text.hf_models import hf_classifier, save_pretrained  # noqa: E402
from kdistill.text.tokenize import load_tokenizer, text_dataset  # noqa: E402
from kdistill.text.vocabulary import corpus_token_ids, nearest_remap, trim_vocabulary  # noqa: E402

UNK = 1  # text_fixtures: [PAD] [UNK] [CLS] [SEP] [MASK] good great ...
SPECIALS = [0, 1, 2, 3, 4]


@pytest.fixture
def folder(tmp_path):
    return model_dir(tmp_path, "teacher", layers=2, hidden=16, heads=2)


def test_nearest_by_hand():
    # every row is (10, 0) plus a small vector (they sum to 0: the mean is (10, 0)); kept: 0 a special
    # token (0, 1), 1 [UNK] (-1, 0), words 2 (1, 0) and 3 (0, -1); dropped: 4 (0.6, -0.5), 5 (-0.5, 0.6).
    # Centred cosines: row 4 to word 2 0.77, to word 3 0.64; row 5 to the special 0.77, to [UNK] 0.64,
    # to word 2 -0.64, to word 3 -0.77
    small = torch.tensor([[0.0, 1.0], [-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.6, -0.5], [-0.5, 0.6]])
    weight = small + torch.tensor([10.0, 0.0])
    keep = torch.tensor([0, 1, 2, 3])
    assert nearest_remap(weight, keep, unk_id=1).tolist() == [0, 1, 2, 3, 2, 0]
    assert nearest_remap(weight, keep, unk_id=1, exclude=[0]).tolist() == [0, 1, 2, 3, 2, 1]
    assert nearest_remap(weight, keep, unk_id=1, exclude=[0, 1]).tolist() == [0, 1, 2, 3, 2, 2]
    with pytest.raises(BadInput, match="other than special"):
        nearest_remap(weight, torch.tensor([0, 1]), unk_id=1, exclude=[0, 1])


def test_nearest_equals_a_brute_force_search():
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(300, 8, generator=generator)
    keep = torch.tensor(sorted(set([0, 1, 2] + torch.randint(3, 300, (60,), generator=generator).tolist())))
    table = nearest_remap(weight, keep, unk_id=1, exclude=[0, 2], chunk=7)  # chunks of 7: several
    mean = [sum(float(weight[r, c]) for r in range(300)) / 300 for c in range(8)]

    def centred(r: int) -> list[float]:
        return [float(weight[r, c]) - mean[c] for c in range(8)]

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    kept = keep.tolist()
    for token in range(300):
        if token in kept:
            assert int(table[token]) == kept.index(token)
            continue
        best = max((k for k in kept if k not in (0, 2)), key=lambda k: cosine(centred(token), centred(k)))
        assert int(table[token]) == kept.index(best)


def test_a_dropped_word_reads_as_its_neighbour_in_memory_checkpoint_and_export(folder, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = load_tokenizer(folder)
    data = text_dataset(tokenizer, ["good movie", "the plot was dull"], [0, 1], ["a", "b"], 16, "corpus")
    keep = corpus_token_ids([data], tokenizer)
    full = hf_classifier(2, str(folder)).eval()
    model = trim_vocabulary(hf_classifier(2, str(folder)), keep, UNK, "nearest", SPECIALS).eval()
    table = model.get_input_embeddings().remap
    expected = nearest_remap(full.get_input_embeddings().weight, keep, UNK, SPECIALS)
    assert torch.equal(table, expected)
    film, great = tokenizer.convert_tokens_to_ids(["film", "great"])
    assert int(table[film]) != keep.tolist().index(UNK)  # a word of the vocabulary, not [UNK]
    batch = dict(tokenizer(["the film was great"], return_tensors="pt"))
    as_neighbour = {**batch, "input_ids": keep[table[batch["input_ids"]]]}  # each dropped word -> its neighbour
    with torch.no_grad():
        first = model(**batch, output_hidden_states=True).hidden_states[0]
        assert torch.allclose(first, full(**as_neighbour, output_hidden_states=True).hidden_states[0], atol=1e-6)

    # a checkpoint carries its table: a model trimmed to the same tokens with [UNK] adopts it on load
    plain = trim_vocabulary(hf_classifier(2, str(folder)), keep, UNK)
    assert not torch.equal(plain.get_input_embeddings().remap, table)
    plain.load_state_dict(model.state_dict())
    assert torch.equal(plain.get_input_embeddings().remap, table)
    # a checkpoint saved before the table was kept read dropped tokens as [UNK]
    older = {k: v for k, v in model.state_dict().items() if not k.endswith(".remap")}
    model.load_state_dict(older)
    assert int(model.get_input_embeddings().remap[film]) == keep.tolist().index(UNK)
    model.load_state_dict(plain.state_dict())
    bad = dict(plain.state_dict())
    bad["bert.embeddings.word_embeddings.remap"] = torch.zeros_like(table)  # kept tokens not read as themselves
    with pytest.raises(BadInput, match="own row"):
        model.load_state_dict(bad)

    # exported: the trimmed tokenizer gives "film" and "great" their neighbours' ids
    saved = save_pretrained(model, tmp_path / "student", tokenizer=str(folder))
    small = AutoTokenizer.from_pretrained(str(saved))
    assert small("the film was great")["input_ids"] == table[batch["input_ids"][0]].tolist()
    exported = AutoModelForSequenceClassification.from_pretrained(str(saved)).eval()
    texts = ["the film was great", "dull plot"]
    with torch.no_grad():
        assert torch.allclose(exported(**dict(small(texts, padding=True, return_tensors="pt"))).logits,
                              model(**dict(tokenizer(texts, padding=True, return_tensors="pt"))).logits, atol=1e-6)


def test_run_field_trims_with_neighbours_and_refuses_what_cannot_work(folder):
    from kdistill.text.student_vocabulary import trim_student_vocabulary

    tokenizer = load_tokenizer(folder)
    split = text_dataset(tokenizer, ["good movie"], [0], ["a", "b"], 16, "corpus")
    bundle = SimpleNamespace(train=split, train_split=split, tokenizer_path=str(folder))
    spec = StudentSpec(name="hf_from_teacher", vocabulary="training", vocabulary_fallback="nearest")
    model = trim_student_vocabulary(spec, hf_classifier(2, str(folder)), bundle)
    keep = corpus_token_ids([split], tokenizer)
    assert torch.equal(model.get_input_embeddings().remap,
                       nearest_remap(hf_classifier(2, str(folder)).get_input_embeddings().weight, keep, UNK,
                                     SPECIALS))
    with pytest.raises(ValidationError, match="set vocabulary: training too"):
        StudentSpec(name="hf_from_teacher", vocabulary_fallback="nearest")
    with pytest.raises(ValidationError, match="hf_student starts at random"):
        StudentSpec(name="hf_student", vocabulary="training", vocabulary_fallback="nearest")
    with pytest.raises(ValidationError, match="embedding_init"):
        StudentSpec(name="hf_student", vocabulary="training", vocabulary_fallback="nearest", embedding_init="teacher")
    small = StudentSpec(name="hf_from_teacher", vocabulary="training", vocabulary_size=3)
    with pytest.raises(ConfigError, match=r"student.vocabulary_size: 3 is below the tokenizer's 5 special"):
        trim_student_vocabulary(small, hf_classifier(2, str(folder)), bundle)
    with pytest.raises(BadInput, match="fallback must be"):
        trim_vocabulary(hf_classifier(2, str(folder)), keep, UNK, "closest")


def test_checkpoints_without_the_table_load_through_load_weights_and_the_run(folder, tmp_path, caplog):
    from safetensors.torch import load_file

    from kdistill.models import load_weights
    from kdistill.run.build import build_participant

    tokenizer = load_tokenizer(folder)
    split = text_dataset(tokenizer, ["good movie", "the plot was dull"], [0, 1], ["a", "b"], 16, "corpus")
    keep = corpus_token_ids([split], tokenizer)
    nearest = trim_vocabulary(hf_classifier(2, str(folder)), keep, UNK, "nearest", SPECIALS)
    table = nearest.get_input_embeddings().remap.clone()
    older = tmp_path / "older.pt"  # a trimmed checkpoint saved before the table was kept
    torch.save({k: v for k, v in nearest.state_dict().items() if not k.endswith(".remap")}, older)
    plain = load_weights(trim_vocabulary(hf_classifier(2, str(folder)), keep, UNK, "nearest", SPECIALS), older)
    assert int(plain.get_input_embeddings().remap[tokenizer.convert_tokens_to_ids("film")]) == keep.tolist().index(UNK)
    # an exported folder's weights (neither keep nor table) keep the model's own table
    saved = save_pretrained(nearest, tmp_path / "student", tokenizer=str(folder))
    fresh = trim_vocabulary(hf_classifier(2, str(folder)), keep, UNK, "nearest", SPECIALS)
    fresh.load_state_dict(load_file(str(saved / "model.safetensors")))
    assert torch.equal(fresh.get_input_embeddings().remap, table)

    # in a run: the checkpoint's table wins over the one vocabulary_fallback builds, with a warning
    bundle = SimpleNamespace(num_classes=2, input_shape=(16,), model_defaults=None, train=split, train_split=split,
                             tokenizer_path=str(folder))
    spec = StudentSpec(name="hf_classifier", options={"path": str(folder)}, checkpoint=older, vocabulary="training",
                       vocabulary_fallback="nearest")
    with caplog.at_level("WARNING", logger="kdistill"):
        model = build_participant(spec, bundle, "student", seed=0)
    assert torch.equal(model.get_input_embeddings().weight, nearest.get_input_embeddings().weight)
    assert int(model.get_input_embeddings().remap[tokenizer.convert_tokens_to_ids("film")]) == keep.tolist().index(UNK)
    assert "student.checkpoint reads dropped tokens through its own id table" in caplog.text
    caplog.clear()
    current = tmp_path / "current.pt"
    torch.save(nearest.state_dict(), current)
    same = build_participant(spec.model_copy(update={"checkpoint": current}), bundle, "student", seed=0)
    assert torch.equal(same.get_input_embeddings().remap, table) and "own id table" not in caplog.text
