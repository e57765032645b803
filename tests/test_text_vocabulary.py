"""Vocabulary trimming: the trimmed model equals the full one on kept tokens (and reads dropped ones
as the unknown token), trains exactly as the full one does on kept rows, and saves as a model +
trimmed tokenizer pair that transformers loads alone and that predicts the same."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")

from text_fixtures import data_and_teacher_yaml, model_dir, text_assets  # noqa: E402

from kdistill import Distiller, OptimizerSettings  # noqa: E402
from kdistill.config_error import ConfigError  # noqa: E402
from kdistill.errors import BadInput  # noqa: E402
from kdistill.methods import HardLabel, SoftTarget  # noqa: E402
from kdistill.methods.transformer import HiddenStateMSE  # noqa: E402
from kdistill.text.datasets import load_text_files_bundle  # noqa: E402
from kdistill.text.hf_models import hf_classifier, hf_student, save_pretrained  # noqa: E402
from kdistill.text.tokenize import load_tokenizer, text_dataset  # noqa: E402
from kdistill.text.vocabulary import corpus_token_ids, trim_vocabulary, trimmed_tokenizer  # noqa: E402

UNK = 1  # text_fixtures: [PAD] [UNK] [CLS] [SEP] [MASK] good great ...


@pytest.fixture
def folder(tmp_path):
    return model_dir(tmp_path, "teacher", layers=2, hidden=16, heads=2)


def encode(tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    return dict(tokenizer(texts, padding=True, return_tensors="pt"))


def corpus(tokenizer, texts: list[str]):
    return text_dataset(tokenizer, texts, [0] * len(texts), ["a", "b"], 16, "corpus")


def test_counts_keep_used_and_special_tokens(folder):
    tokenizer = load_tokenizer(folder)
    data = corpus(tokenizer, ["good movie", "good good plot", "the movie"])
    ids = tokenizer.convert_tokens_to_ids
    specials = [0, 1, 2, 3, 4]
    assert corpus_token_ids([data], tokenizer).tolist() == sorted(specials + ids(["good", "movie", "plot", "the"]))
    # counts: good 3, movie 2, plot 1, the 1 (tie: the lower id first)
    top = sorted(ids(["plot", "the"]))[0]
    assert corpus_token_ids([data], tokenizer, max_tokens=8).tolist() == sorted(specials + ids(["good", "movie"])
                                                                                + [top])
    with pytest.raises(BadInput, match="special"):
        corpus_token_ids([data], tokenizer, max_tokens=3)
    with pytest.raises(BadInput, match="no data set"):
        corpus_token_ids([], tokenizer)


def test_trimmed_model_equals_the_full_one_and_reads_dropped_tokens_as_unknown(folder):
    tokenizer = load_tokenizer(folder)
    full = hf_classifier(2, str(folder)).eval()
    keep = corpus_token_ids([corpus(tokenizer, ["good movie", "the plot was dull"])], tokenizer)
    trimmed = trim_vocabulary(hf_classifier(2, str(folder)), keep, UNK).eval()
    assert trimmed.config.vocab_size == len(keep) == 11  # 5 specials + 6 words
    assert sum(p.numel() for p in trimmed.parameters()) == (sum(p.numel() for p in full.parameters())
                                                            - (full.config.vocab_size - 11) * 16)
    kept = encode(tokenizer, ["the movie was good", "dull plot"])
    with torch.no_grad():
        assert torch.allclose(trimmed(**kept).logits, full(**kept).logits, atol=1e-6)
        dropped = encode(tokenizer, ["the film was great"])  # film, great are not kept
        as_unknown = {**dropped, "input_ids": dropped["input_ids"].clone()}
        for token in ("film", "great"):
            as_unknown["input_ids"][dropped["input_ids"] == tokenizer.convert_tokens_to_ids(token)] = UNK
        assert torch.allclose(trimmed(**dropped).logits, full(**as_unknown).logits, atol=1e-6)
        # (a random tiny model's logits are all near 0: the embedding outputs show the difference)
        first = trimmed(**dropped, output_hidden_states=True).hidden_states[0]
        assert not torch.allclose(first, full(**dropped, output_hidden_states=True).hidden_states[0], atol=1e-2)
        assert torch.allclose(first, full(**as_unknown, output_hidden_states=True).hidden_states[0], atol=1e-6)


def test_saved_pair_loads_with_transformers_alone_and_predicts_the_same(folder, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = load_tokenizer(folder)
    keep = corpus_token_ids([corpus(tokenizer, ["good movie", "the plot was dull"])], tokenizer)
    trimmed = trim_vocabulary(hf_classifier(2, str(folder)), keep, UNK).eval()
    saved = save_pretrained(trimmed, tmp_path / "student", tokenizer=str(folder), label_names=["neg", "pos"])
    model = AutoModelForSequenceClassification.from_pretrained(str(saved)).eval()
    small = AutoTokenizer.from_pretrained(str(saved))
    assert max(small.get_vocab().values()) + 1 == model.config.vocab_size == len(keep)
    assert model.config.id2label == {0: "neg", 1: "pos"}
    assert small.convert_tokens_to_ids(tokenizer.convert_ids_to_tokens(keep.tolist())) == list(range(len(keep)))
    texts = ["the movie was good", "dull plot", "the film was great"]  # the last with dropped words
    with torch.no_grad():
        assert torch.allclose(model(**encode(small, texts)).logits, trimmed(**encode(tokenizer, texts)).logits,
                              atol=1e-6)


def test_trimmed_student_trains_exactly_as_the_full_one_on_kept_rows(tmp_path):
    assets = text_assets(tmp_path, train=48, test=8, layers=2, hidden=16, heads=2)
    bundle = load_text_files_bundle("train.txt", "test.txt", str(assets / "tokenizer"), assets, max_length=16)
    tokenizer = load_tokenizer(assets / "tokenizer")
    keep = corpus_token_ids([bundle.train], tokenizer, max_tokens=20)  # 5 of the 20 words dropped
    dropped = torch.ones(tokenizer.vocab_size, dtype=torch.bool)
    dropped[keep] = False
    train = bundle.train
    # the full student's data: dropped words replaced by [UNK] (the teacher reads the original)
    as_unknown = train.inputs.masked_fill(dropped[train.inputs], UNK)
    teacher = hf_classifier(2, str(assets / "teacher"))
    students = []
    for trim in (False, True):
        torch.manual_seed(0)
        student = hf_student(2, str(assets / "teacher"), layers=1, hidden=8, heads=2)
        if trim:
            trim_vocabulary(student, keep, UNK)
        else:
            student.set_input_embeddings(ReadsUnknown(student.get_input_embeddings(), dropped))
        methods = [SoftTarget(weight=0.7), HardLabel(weight=0.3), HiddenStateMSE(student_layers=1, teacher_layers=2)]
        Distiller(teacher, student, methods, batch_size=16, seed=0, progress=False,
                  optimizer=OptimizerSettings(name="adamw", lr=0.01)).fit(train, epochs=2)
        students.append(student)
    assert bool(dropped[train.inputs].any()) and not torch.equal(as_unknown, train.inputs)
    full, trimmed = (s.state_dict() for s in students)
    word = "bert.embeddings.word_embeddings.weight"
    torch.manual_seed(0)
    start = hf_student(2, str(assets / "teacher"), layers=1, hidden=8, heads=2).state_dict()[word]
    assert not torch.allclose(full[word][keep], start[keep], atol=1e-3)  # the kept rows did train
    assert torch.allclose(trimmed[word], full[word][keep], atol=1e-6)
    for name, tensor in full.items():
        assert torch.allclose(trimmed[name], tensor[keep] if name == word else tensor, atol=1e-6), name


class ReadsUnknown(torch.nn.Module):
    """The full word embedding, reading [UNK] for the dropped words (state dict: `weight` alone)."""

    def __init__(self, embedding: torch.nn.Embedding, dropped: torch.Tensor) -> None:
        super().__init__()
        self.weight = embedding.weight
        self.register_buffer("dropped", dropped, persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.embedding(input_ids.masked_fill(self.dropped[input_ids], UNK), self.weight)


def test_refusals(folder, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = load_tokenizer(folder)
    model = hf_classifier(2, str(folder))
    with pytest.raises(BadInput, match="unknown token"):
        trim_vocabulary(model, [0, 2, 3], UNK)
    with pytest.raises(BadInput, match="twice"):
        trim_vocabulary(hf_classifier(2, str(folder)), [0, 1, 1], UNK)
    with pytest.raises(BadInput, match="outside"):
        trim_vocabulary(hf_classifier(2, str(folder)), [0, 1, 99], UNK)
    with pytest.raises(BadInput, match="predicts tokens"):
        trim_vocabulary(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=30)), [0, 1], 1)
    with pytest.raises(BadInput, match="no input word embedding"):
        trim_vocabulary(torch.nn.Linear(2, 2), [0, 1], 1)
    trimmed = trim_vocabulary(hf_classifier(2, str(folder)), [0, 1, 2, 3], UNK)
    with pytest.raises(BadInput, match="original vocabulary"):
        trimmed(input_ids=torch.tensor([[2, 400]]))
    with pytest.raises(BadInput, match="already trimmed"):
        trim_vocabulary(trimmed, [0, 1], UNK)

    class NotWordPiece:
        backend_tokenizer = type("Backend", (), {"model": object()})()

    with pytest.raises(BadInput, match="not a WordPiece"):
        trimmed_tokenizer(NotWordPiece(), [0, 1], tmp_path / "x")
    with pytest.raises(BadInput, match="not in the tokenizer"):
        trimmed_tokenizer(tokenizer, [0, 1, 999], tmp_path / "y")


def test_embedding_init_gives_a_trimmed_student_the_rows_of_its_kept_tokens(folder):
    from kdistill.text.embedding_init import init_embeddings_from_teacher

    teacher = hf_classifier(2, str(folder))
    keep = torch.tensor([0, 1, 2, 3, 4, 7, 12])
    full = hf_student(2, str(folder), layers=1, hidden=8, heads=2)
    trimmed = trim_vocabulary(hf_student(2, str(folder), layers=1, hidden=8, heads=2), keep, UNK)
    init_embeddings_from_teacher(full, teacher)
    init_embeddings_from_teacher(trimmed, teacher)
    assert torch.allclose(trimmed.get_input_embeddings().weight, full.get_input_embeddings().weight[keep])


def test_yaml_student_vocabulary_trims_scratch_and_distilled_and_exports_the_pair(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kdistill.config import load_config
    from kdistill.experiment import run_experiment

    assets = text_assets(tmp_path, train=64, test=16, layers=2, hidden=16, heads=2)
    config_file = tmp_path / "text.yaml"
    config_file.write_text(f"""
name: trimmed-text
baseline: true
{data_and_teacher_yaml(assets, 2)}
student:
  name: hf-student
  options: {{base: {assets / 'teacher'}, layers: 1, hidden: 8, heads: 2}}
  vocabulary: training
  vocabulary_size: 20
  embedding_init: teacher
methods:
  - {{name: soft_target, weight: 0.7, temperature: 2}}
  - {{name: hard_label, weight: 0.3}}
  - {{name: hidden_mse, student_layers: 1, teacher_layers: 2}}
training:
  epochs: 1
  optimizer: {{name: adamw, lr: 0.003}}
  callbacks:
    - {{name: "kdistill.text.export:SavePretrained", tokenizer: {assets / 'tokenizer'}}}
""")
    run_experiment(load_config(config_file), tmp_path / "run", progress=False)
    word = "bert.embeddings.word_embeddings.weight"
    for stage in ("student-distilled", "student-scratch"):
        weights = torch.load(tmp_path / "run" / stage / "student.pt", weights_only=True)
        assert weights[word].shape == (20, 8), stage
    saved = tmp_path / "run" / "student-distilled" / "pretrained"
    loaded = AutoModelForSequenceClassification.from_pretrained(str(saved)).eval()
    names = json.loads((tmp_path / "run" / "labels.json").read_text())  # the training files' label names
    assert loaded.config.id2label == dict(enumerate(names)) and names == ["0", "1"]  # not LABEL_0, LABEL_1
    small, original = AutoTokenizer.from_pretrained(str(saved)), load_tokenizer(assets / "tokenizer")
    assert loaded.config.vocab_size == max(small.get_vocab().values()) + 1 == 20
    keep = corpus_token_ids([load_text_files_bundle("train.txt", "test.txt", str(assets / "tokenizer"), assets,
                                                    max_length=16).train], original, max_tokens=20)
    student = trim_vocabulary(hf_student(2, str(assets / "teacher"), layers=1, hidden=8, heads=2), keep, UNK)
    student.load_state_dict(torch.load(tmp_path / "run" / "student-distilled" / "student.pt", weights_only=True))
    words = original.convert_ids_to_tokens(list(range(5, len(original))))  # kept and dropped alike
    texts = [" ".join(original.convert_ids_to_tokens(keep[5:12].tolist())), "the movie", " ".join(words)]
    with torch.no_grad():
        assert torch.allclose(loaded(**encode(small, texts)).logits, student.eval()(**encode(original, texts)).logits,
                              atol=1e-5)

    # the trimmed student's own checkpoint as the student of a new run: trimmed first, then loaded
    from kdistill.run.build import build_participant
    from kdistill.run.data import load_data

    distilled = tmp_path / "run" / "student-distilled" / "student.pt"
    again = load_config(config_file, [f"student.checkpoint={distilled}"])
    bundle, _, _ = load_data(again)
    rebuilt = build_participant(again.student, bundle, "student", 0)
    assert torch.equal(rebuilt.state_dict()[word], torch.load(distilled, weights_only=True)[word])
    other = load_config(config_file, [f"student.checkpoint={distilled}", "student.vocabulary_size=19"])
    with pytest.raises(ConfigError, match="student.checkpoint: .*(does not fit|other tokens)"):
        build_participant(other.student, bundle, "student", 0)

    bad = config_file.read_text().replace("  vocabulary: training\n", "")
    config_file.write_text(bad)
    with pytest.raises(ConfigError, match="vocabulary: training too"):
        load_config(config_file)


def test_run_refuses_vocabulary_for_data_that_is_not_text(folder):
    from types import SimpleNamespace

    from kdistill.text.student_vocabulary import trim_student_vocabulary

    spec = SimpleNamespace(vocabulary="training", vocabulary_size=None)
    images = SimpleNamespace(train=torch.zeros(4, 3, 8, 8), tokenizer_path="")
    with pytest.raises(ConfigError, match="student.vocabulary: .*not tokenised text"):
        trim_student_vocabulary(spec, hf_classifier(2, str(folder)), images)
    untouched = hf_classifier(2, str(folder))
    assert trim_student_vocabulary(SimpleNamespace(vocabulary=None), untouched, images) is untouched


def shuffled_tokenizer(root):
    """A WordPiece vocabulary with the special tokens scattered (not at 0..4) and a word that can also
    be split into pieces ("superfilm" = "super" + "##film")."""
    from transformers import BertTokenizer

    words = ["the", "[PAD]", "good", "super", "[UNK]", "##film", "movie", "[CLS]", "superfilm", "bad", "[SEP]",
             "dull", "[MASK]", "plot"]
    folder = root / "shuffled"
    BertTokenizer(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True).save_pretrained(str(folder))
    return folder, len(words)


def test_scattered_special_tokens_are_renumbered_in_model_and_tokenizer(tmp_path):
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        BertConfig,
        BertForSequenceClassification,
    )

    folder, size = shuffled_tokenizer(tmp_path)
    tokenizer = load_tokenizer(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, pad_token_id=1)
    keep = corpus_token_ids([corpus(tokenizer, ["good movie", "plot", "super dull"])], tokenizer)  # "the" (0) out
    model = trim_vocabulary(BertForSequenceClassification(config).eval(), keep, tokenizer.unk_token_id)
    assert model.config.pad_token_id == keep.tolist().index(1) == 0
    assert model.get_input_embeddings().padding_idx == 0
    saved = save_pretrained(model, tmp_path / "out", tokenizer=str(folder))
    small = AutoTokenizer.from_pretrained(str(saved))
    for name in ("pad", "unk", "cls", "sep", "mask"):
        old = getattr(tokenizer, f"{name}_token_id")
        assert getattr(small, f"{name}_token_id") == keep.tolist().index(old), name
    loaded = AutoModelForSequenceClassification.from_pretrained(str(saved)).eval()
    texts = ["super good movie", "dull plot"]
    with torch.no_grad():
        assert torch.allclose(loaded(**encode(small, texts)).logits, model(**encode(tokenizer, texts)).logits,
                              atol=1e-6)


def test_a_dropped_word_reads_as_unknown_in_memory_and_through_the_saved_tokenizer(tmp_path):
    # "superfilm" could also be split into kept pieces (super + ##film): the saved tokenizer must not,
    # since the trained model read it as [UNK]
    folder, _ = shuffled_tokenizer(tmp_path)
    tokenizer = load_tokenizer(folder)
    assert tokenizer.tokenize("superfilm") == ["superfilm"]
    keep = corpus_token_ids([corpus(tokenizer, ["super good", "the movie"])], tokenizer)
    keep = torch.unique(torch.cat([keep, torch.tensor(tokenizer.convert_tokens_to_ids(["##film"]))]))
    small = trimmed_tokenizer(tokenizer, keep.tolist(), tmp_path / "small")
    assert max(small.get_vocab().values()) == len(keep) - 1
    table = trim_vocabulary(hf_classifier_like(len(tokenizer)), keep, tokenizer.unk_token_id).get_input_embeddings()
    original = tokenizer("the superfilm good")["input_ids"]
    assert small("the superfilm good")["input_ids"] == table.remap[torch.tensor(original)].tolist()
    assert small("the superfilm good")["input_ids"][2] == small.unk_token_id


def hf_classifier_like(vocab: int):
    from transformers import BertConfig, BertForSequenceClassification

    return BertForSequenceClassification(BertConfig(vocab_size=vocab, hidden_size=8, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=16,
                                                    max_position_embeddings=16))


def test_weights_trimmed_to_other_tokens_are_refused_and_keep_is_not_exported(folder, tmp_path):
    from safetensors.torch import load_file

    first = trim_vocabulary(hf_classifier(2, str(folder)), [0, 1, 2, 3, 4, 5, 6], UNK)
    same = trim_vocabulary(hf_classifier(2, str(folder)), [0, 1, 2, 3, 4, 5, 6], UNK)
    same.load_state_dict(first.state_dict())
    other = trim_vocabulary(hf_classifier(2, str(folder)), [0, 1, 2, 3, 4, 5, 7], UNK)
    with pytest.raises(BadInput, match="trimmed to other tokens"):
        other.load_state_dict(first.state_dict())
    saved = save_pretrained(first, tmp_path / "out", tokenizer=str(folder))
    weights = load_file(str(saved / "model.safetensors"))
    assert not [k for k in weights if k.endswith(".keep")] and "bert.embeddings.word_embeddings.weight" in weights
    other.load_state_dict(weights)  # a plain folder's weights (no `keep`): read as its rows
    assert torch.equal(other.get_input_embeddings().weight, first.get_input_embeddings().weight)
    with pytest.raises(BadInput, match="give `tokenizer`"):
        save_pretrained(first, tmp_path / "no-tokenizer")


def test_dropped_specials_and_added_tokens_are_refused_json_only_tokenizers_renumbered(folder, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tokenizer = load_tokenizer(folder)
    with pytest.raises(BadInput, match="special tokens .*not kept"):
        trimmed_tokenizer(tokenizer, [0, 1, 2, 3, 5], tmp_path / "a")  # [MASK] (4) dropped
    with_added = load_tokenizer(folder)
    with_added.add_tokens(["goodfilm"])
    with pytest.raises(BadInput, match="added tokens"):
        trimmed_tokenizer(with_added, [0, 1, 2, 3, 4], tmp_path / "b")
    vocab = {"[PAD]": 0, "[UNK]": 1, "good": 2, "bad": 3, "[CLS]": 4, "[SEP]": 5}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                           special_tokens=[("[CLS]", 4), ("[SEP]", 5)])
    json_only = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                        cls_token="[CLS]", sep_token="[SEP]")
    assert json_only("good bad")["input_ids"] == [4, 2, 3, 5]
    # a tokenizer.json-only WordPiece (a PreTrainedTokenizerFast, no BertTokenizer class) is renumbered too
    small = trimmed_tokenizer(json_only, [5, 1, 0, 4, 2], tmp_path / "c")  # "bad" dropped, the rest renumbered
    assert small.convert_tokens_to_ids(["[SEP]", "[UNK]", "[PAD]", "[CLS]", "good"]) == [0, 1, 2, 3, 4]
    assert small("good bad")["input_ids"] == [3, 4, 1, 0]


def test_the_run_counts_tokens_on_the_split_it_trains_on(folder):
    from types import SimpleNamespace

    from kdistill.text.student_vocabulary import trim_student_vocabulary

    tokenizer = load_tokenizer(folder)
    everything = corpus(tokenizer, ["good movie", "the plot was dull"])
    split = corpus(tokenizer, ["good movie"])  # the validation sentence left out
    bundle = SimpleNamespace(train=everything, train_split=split, tokenizer_path=str(folder))
    model = trim_student_vocabulary(SimpleNamespace(vocabulary="training", vocabulary_size=None),
                                    hf_classifier(2, str(folder)), bundle)
    assert model.get_input_embeddings().keep.tolist() == corpus_token_ids([split], tokenizer).tolist()
    assert model.config.vocab_size == 5 + 2
