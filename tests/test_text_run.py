"""Text through every entry point: a YAML experiment (`kdistill run`'s code path) with Hugging Face
teacher and student, the teacher cache on token batches, and `DistillationTrainer` inside a
`transformers.Trainer` set-up."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")

from text_fixtures import data_and_teacher_yaml, sentences, text_assets  # noqa: E402

from kdistill import Distiller, OptimizerSettings  # noqa: E402
from kdistill.config import load_config  # noqa: E402
from kdistill.engine.cache import CacheSettings  # noqa: E402
from kdistill.experiment import run_experiment  # noqa: E402
from kdistill.methods import HardLabel, SoftTarget  # noqa: E402
from kdistill.methods.transformer import HiddenStateMSE  # noqa: E402
from kdistill.results import DISTILLED  # noqa: E402
from kdistill.text.datasets import load_text_files_bundle  # noqa: E402
from kdistill.text.hf_models import hf_classifier, hf_student  # noqa: E402


@pytest.fixture
def assets(tmp_path):
    return text_assets(tmp_path)


@pytest.mark.slow  # about 20 s alone, over a minute on the shared machine under load
def test_yaml_experiment_with_hf_teacher_and_student(assets, tmp_path):
    config_file = tmp_path / "text.yaml"
    config_file.write_text(f"""
name: tiny-text
{data_and_teacher_yaml(assets, 6)}
student:
  name: hf-student
  options: {{base: {assets / 'teacher'}, layers: 2, hidden: 16, heads: 2}}
methods:
  - {{name: soft_target, weight: 0.7, temperature: 2}}
  - {{name: hard_label, weight: 0.3}}
  - {{name: hidden_mse, student_layers: 2, teacher_layers: 4}}
  - {{name: embedding_mse}}
  - {{name: attention_kl, student_layers: 2, teacher_layers: 4, mapping: last}}
training:
  epochs: 1
  optimizer: {{name: adamw, lr: 0.003}}
  callbacks:
    - {{name: "kdistill.text.export:SavePretrained", tokenizer: {assets / 'tokenizer'}, label_names: [neg, pos]}}
""")
    config = load_config(config_file)
    result = run_experiment(config, tmp_path / "run", progress=False)
    assert result.by_role("teacher").accuracy > 0.9  # the sentiment word decides the label
    record = json.loads((tmp_path / "run" / "student-distilled" / "metrics.jsonl").read_text().splitlines()[-1])
    for term in ("soft_target", "hard_label", "hidden_mse", "embedding_mse", "attention_kl"):
        assert record[f"train/{term}"] > 0, term
    assert (tmp_path / "run" / "report.md").exists()
    # text models get the deployment profile too (their batches are dicts of tensors)
    teacher, student = result.by_role("teacher").extra["profile"], result.by_role(DISTILLED).extra["profile"]
    for row, profile in ((result.by_role("teacher"), teacher), (result.by_role(DISTILLED), student)):
        assert profile["parameters"] == row.parameters and profile["batch_size"] == 64
        assert profile["latency_b1_ms"] > 0 and profile["latency_batch_ms"] > 0
    # FLOPs of one sample (multiply-add = 2), counted by hand for a BERT classifier over T tokens (the
    # test batch's padded length): per layer Q, K, V, O (4 H^2) and the feed-forward (2 H I) on every
    # token, Q K^T and the attention-weighted V (2 T H each); then the pooler (H^2) and the head (2 H)
    from transformers import AutoTokenizer

    texts = [line.split(" ", 1)[1] for line in (assets / "test.txt").read_text().splitlines()]
    tokens = AutoTokenizer.from_pretrained(str(assets / "tokenizer"))(texts[:64], padding=True, truncation=True,
                                                                       max_length=16)["input_ids"]
    t = len(tokens[0])

    def bert_flops(layers: int, hidden: int, intermediate: int) -> int:
        per_layer = 2 * t * (4 * hidden**2 + 2 * hidden * intermediate) + 2 * 2 * t * t * hidden
        return layers * per_layer + 2 * hidden**2 + 2 * hidden * 2

    assert teacher["flops_per_sample"] == bert_flops(4, 32, 64)  # the fixture's teacher: intermediate 2 H
    assert student["flops_per_sample"] == bert_flops(2, 16, 64)  # hf-student: intermediate 4 H
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kdistill.text.hf_models import hf_student

    saved = tmp_path / "run" / "student-distilled" / "pretrained"
    loaded = AutoModelForSequenceClassification.from_pretrained(str(saved)).eval()
    student = hf_student(2, str(assets / "teacher"), layers=2, hidden=16, heads=2)
    student.load_state_dict(torch.load(tmp_path / "run" / "student-distilled" / "student.pt", weights_only=True))
    inputs = AutoTokenizer.from_pretrained(str(saved))(["good film", "the plot was dull"], padding=True,
                                                       return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(loaded(**inputs).logits, student.eval()(**inputs).logits, atol=1e-5)
    assert loaded.config.id2label == {0: "neg", 1: "pos"}


def test_cut_texts_are_counted_in_the_report_and_labels_named_in_the_exported_config(assets, tmp_path):
    config_file = tmp_path / "cut.yaml"
    config_file.write_text(f"""
name: cut-text
{data_and_teacher_yaml(assets, 1, max_length=6)}
student:
  name: hf-student
  options: {{base: {assets / 'teacher'}, layers: 1, hidden: 8, heads: 2}}
methods: [{{name: soft_target, weight: 0.7, temperature: 2}}, {{name: hard_label, weight: 0.3}}]
training:
  epochs: 1
  callbacks: [{{name: "kdistill.text.export:SavePretrained", tokenizer: {assets / 'tokenizer'}}}]
""")
    # [CLS] + [SEP] leave 4 words: the texts of more than 4 words, counted here without kdistill
    cut = {split: sum(len(text.split()) > 4 for _, text in rows)
           for split, rows in (("train", sentences(120)), ("test", sentences(40, seed=1)))}
    assert cut["train"] > 0 and cut["test"] > 0
    run_experiment(load_config(config_file), tmp_path / "run", progress=False)
    report = (tmp_path / "run" / "report.md").read_text()
    assert (f"data: {cut['train']} train, {cut['test']} test texts are longer than max_length = 6 tokens and were "
            "cut; raise data.options.max_length to keep them whole") in report
    from transformers import AutoConfig

    exported = AutoConfig.from_pretrained(str(tmp_path / "run" / "student-distilled" / "pretrained"))
    assert exported.id2label == {0: "0", 1: "1"}  # the training file's labels (labels.json), not LABEL_0


def test_label_names_come_from_this_run_only_and_must_fit_the_model(tmp_path):
    from kdistill.text.export import run_label_names

    root = tmp_path / "run"
    generation = root / "born-again" / "generation-1"
    generation.mkdir(parents=True)
    (root / "config.yaml").write_text("name: x\n")
    (root / "labels.json").write_text(json.dumps(["neg", "pos"]))
    assert run_label_names(generation, num_labels=2) == ["neg", "pos"]
    assert run_label_names(generation, num_labels=3) is None  # not this model's classes
    (tmp_path / "labels.json").write_text(json.dumps(["a", "b"]))  # above the run's root: another run's
    (root / "labels.json").unlink()
    assert run_label_names(generation, num_labels=2) is None
    deep = tmp_path / "a" / "b" / "c" / "stage"  # no run root at all: three folders up at most
    deep.mkdir(parents=True)
    assert run_label_names(deep) is None


def test_teacher_cache_on_token_batches_equals_the_live_teacher(assets, tmp_path):
    bundle = load_text_files_bundle("train.txt", "test.txt", str(assets / "tokenizer"), assets, max_length=16)
    teacher = hf_classifier(2, str(assets / "teacher"))
    finals = []
    for cache in (None, CacheSettings(tmp_path / "cache", dtype="float32")):
        torch.manual_seed(0)
        student = hf_student(2, str(assets / "teacher"), layers=1, hidden=16, heads=2)
        distiller = Distiller(teacher, student, [SoftTarget(weight=0.7), HardLabel(weight=0.3)], batch_size=16,
                              optimizer=OptimizerSettings(name="adamw", lr=0.003), teacher_cache=cache, seed=0,
                              progress=False)
        distiller.fit(bundle.train, epochs=1)
        finals.append(student.state_dict())
    assert any((tmp_path / "cache").iterdir())  # the second run read the cache it built
    for name, tensor in finals[0].items():
        assert torch.allclose(tensor, finals[1][name], atol=1e-5), name


def test_cached_teacher_layers_need_fixed_padding_and_then_equal_the_live_teacher(assets, tmp_path):
    bundle = load_text_files_bundle("train.txt", "test.txt", str(assets / "tokenizer"), assets, max_length=16,
                                    padding="max_length")
    assert bundle.train.__getitems__([0, 1])["input"]["input_ids"].shape == (2, 16)
    teacher = hf_classifier(2, str(assets / "teacher"))
    finals = []
    for cache in (None, CacheSettings(tmp_path / "cache", dtype="float32", features=True)):
        torch.manual_seed(0)
        student = hf_student(2, str(assets / "teacher"), layers=1, hidden=16, heads=2)
        methods = [SoftTarget(weight=0.7), HardLabel(weight=0.3), HiddenStateMSE(student_layers=1, teacher_layers=4)]
        distiller = Distiller(teacher, student, methods, batch_size=16, teacher_cache=cache, seed=0, progress=False,
                              optimizer=OptimizerSettings(name="adamw", lr=0.003))
        distiller.fit(bundle.train, epochs=1)
        finals.append(student.state_dict())
    for name, tensor in finals[0].items():
        assert torch.allclose(tensor, finals[1][name], atol=1e-5), name


def test_distillation_trainer_adds_kdistill_terms(assets, tmp_path):
    pytest.importorskip("accelerate", reason="transformers' Trainer needs accelerate, which is not installed")
    from transformers import AutoTokenizer, DataCollatorWithPadding, TrainingArguments

    from kdistill.text.trainer import DistillationTrainer

    tok = AutoTokenizer.from_pretrained(str(assets / "tokenizer"))
    rows = [{**tok(text), "labels": label} for label, text in sentences(48)]
    teacher = hf_classifier(2, str(assets / "teacher")).eval()
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    torch.manual_seed(0)
    student = hf_student(2, str(assets / "teacher"), layers=2, hidden=16, heads=2)
    hidden = HiddenStateMSE(student_layers=2, teacher_layers=4)
    args = TrainingArguments(output_dir=str(tmp_path / "trainer"), max_steps=6, per_device_train_batch_size=8,
                             logging_steps=3, learning_rate=3e-3, report_to=[], save_strategy="no", use_cpu=True,
                             disable_tqdm=True)
    trainer = DistillationTrainer(model=student, args=args, train_dataset=rows, eval_dataset=rows[:16],
                                  data_collator=DataCollatorWithPadding(tok), teacher=teacher,
                                  methods=[SoftTarget(weight=0.7, temperature=2.0), HardLabel(weight=0.3), hidden])
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "kd/soft_target" in entry]
    assert len(logs) == 2
    for entry in logs:  # the Trainer's loss is the weighted sum of kdistill's terms, window by window
        terms = entry["kd/soft_target"] + entry["kd/hard_label"] + entry["kd/hidden_mse"]
        assert entry["loss"] == pytest.approx(terms, rel=1e-3)
    adapter = hidden.adapters[0]
    assert (adapter.in_features, adapter.out_features) == (16, 32)
    assert any(p is adapter.weight for group in trainer.optimizer.param_groups for p in group["params"])
    assert all(torch.equal(v, teacher_state[k]) for k, v in teacher.state_dict().items())  # the teacher is not trained
    assert "eval_loss" in trainer.evaluate()  # evaluation: the model's own loss, no teacher
