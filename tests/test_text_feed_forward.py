"""Feed-forward narrowing of a cut student (`hf_from_teacher(feed_forward=F)`) and `teacher_checkpoint:
run` (the student cut from the run's own teacher as trained): the neurons kept against a hand-computed
ranking, the narrowed model against the whole one with the dropped neurons silenced, the export, the
run's resolution of `run`, and the refusals."""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("torch_pruning")

from text_fixtures import data_and_teacher_yaml, model_dir, text_assets  # noqa: E402

from kdistill.config import load_config  # noqa: E402
from kdistill.config_error import ConfigError  # noqa: E402
from kdistill.errors import BadInput  # noqa: E402
from kdistill.experiment import run_experiment  # noqa: E402
from kdistill.models import read_weights  # noqa: E402
from kdistill.text.feed_forward import prune_feed_forward  # noqa: E402
from kdistill.text.hf_models import hf_classifier, hf_from_teacher, save_pretrained  # noqa: E402

IDS = {"input_ids": torch.tensor([[2, 5, 9, 7, 3, 0], [2, 6, 8, 3, 0, 0]]),
       "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]])}


@pytest.fixture
def folder(tmp_path):
    return model_dir(tmp_path, "teacher", layers=2, hidden=16, heads=2)  # feed-forward 32 wide


def kept_rows(whole: torch.Tensor, narrowed: torch.Tensor) -> list[int]:
    """Which rows of `whole` the rows of `narrowed` are (each matched to its identical row)."""
    return [int((whole - row).abs().sum(1).argmin()) for row in narrowed]


def test_each_block_keeps_its_largest_neurons_and_computes_the_silenced_whole(folder, tmp_path):
    whole = hf_classifier(2, str(folder)).eval()
    narrowed = prune_feed_forward(copy.deepcopy(whole), 10)
    assert narrowed.config.intermediate_size == 10
    dropped = []
    for a, b in zip(whole.bert.encoder.layer, narrowed.bert.encoder.layer, strict=True):
        assert b.intermediate.dense.out_features == 10 and b.output.dense.in_features == 10
        w1, b1, w2 = (p.detach() for p in (a.intermediate.dense.weight, a.intermediate.dense.bias,
                                           a.output.dense.weight))
        # a neuron's magnitude: the squares of the weights that make it and read it, summed by hand
        magnitude = [sum(float(w) ** 2 for w in w1[i]) + float(b1[i]) ** 2 + sum(float(w) ** 2 for w in w2[:, i])
                     for i in range(32)]
        largest = sorted(sorted(range(32), key=lambda i: -magnitude[i])[:10])
        kept = kept_rows(w1, b.intermediate.dense.weight)
        assert sorted(kept) == largest
        assert torch.equal(b.output.dense.weight, w2[:, kept]) and torch.equal(b.output.dense.bias, a.output.dense.bias)
        dropped.append([i for i in range(32) if i not in kept])
        assert torch.equal(b.attention.self.query.weight, a.attention.self.query.weight)  # the rest untouched

    def silence(columns):
        def hook(module, inputs, output):
            output = output.clone()
            output[..., columns] = 0
            return output
        return hook

    for layer, columns in zip(whole.bert.encoder.layer, dropped, strict=True):
        layer.intermediate.register_forward_hook(silence(columns))
    with torch.no_grad():
        torch.testing.assert_close(narrowed(**IDS).logits, whole(**IDS).logits, atol=1e-5, rtol=1e-5)
    # exported, it loads back as a plain BERT of feed-forward 10 with transformers alone
    from transformers import AutoModelForSequenceClassification

    save_pretrained(narrowed, tmp_path / "export")
    loaded = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "export")).eval()
    assert loaded.config.intermediate_size == 10
    with torch.no_grad():
        torch.testing.assert_close(loaded(**IDS).logits, narrowed(**IDS).logits)


def test_the_cut_student_option_and_its_refusals(folder):
    student = hf_from_teacher(2, str(folder), layers=[1], feed_forward=8)
    assert student.config.num_hidden_layers == 1 and student.bert.encoder.layer[0].intermediate.dense.out_features == 8
    assert hf_from_teacher(2, str(folder), layers=[1], feed_forward=32).config.intermediate_size == 32  # all: as is
    for bad in (0, 33, 2.5, True):
        with pytest.raises(BadInput, match=r"feed_forward: must be an integer in 1\.\.32"):
            hf_from_teacher(2, str(folder), layers=[1], feed_forward=bad)
    with pytest.raises(BadInput, match="only a kdistill run resolves"):
        hf_from_teacher(2, str(folder), teacher_checkpoint="run")
    with pytest.raises(BadInput, match="no BERT-style"):
        prune_feed_forward(torch.nn.Sequential(torch.nn.Linear(4, 4)), 2)


def student_yaml(assets, teacher_checkpoint: str = "run", lr: float = 1e-9) -> str:
    return f"""
student:
  name: hf-from-teacher
  options: {{path: {assets / 'teacher'}, layers: [1, 3], teacher_checkpoint: {teacher_checkpoint}, feed_forward: 40}}
methods:
  - {{name: soft_target, weight: 1.0, temperature: 2}}
training:
  epochs: 1
  optimizer: {{name: adamw, lr: {lr}, weight_decay: 0.0}}
baseline: false
"""


def test_a_run_cuts_its_student_from_its_own_trained_teacher(tmp_path):
    assets = text_assets(tmp_path, train=64, test=16)  # teacher: 4 blocks, 32 wide, feed-forward 64
    config_file = tmp_path / "cut.yaml"
    config_file.write_text(f"name: cut\n{data_and_teacher_yaml(assets, 2)}{student_yaml(assets)}")
    run_experiment(load_config(config_file), tmp_path / "run", progress=False)
    trained = read_weights(tmp_path / "run" / "teacher" / "student.pt")
    pretrained = hf_classifier(2, str(assets / "teacher")).state_dict()
    student = read_weights(tmp_path / "run" / "student-distilled" / "student.pt")  # lr 1e-9: as it started
    for mine, theirs in ((0, 1), (1, 3)):
        key = "bert.encoder.layer.{}.attention.self.query.weight"
        torch.testing.assert_close(student[key.format(mine)], trained[key.format(theirs)], atol=1e-6, rtol=0)
        assert (trained[key.format(theirs)] - pretrained[key.format(theirs)]).abs().max() > 1e-3  # it did train
        assert student[f"bert.encoder.layer.{mine}.intermediate.dense.weight"].shape[0] == 40
    torch.testing.assert_close(student["classifier.weight"], trained["classifier.weight"], atol=1e-6, rtol=0)


def test_run_is_refused_where_the_run_cannot_give_it(tmp_path):
    assets = text_assets(tmp_path, train=32, test=16)
    other = model_dir(tmp_path, "other", layers=2, hidden=32, heads=4)
    config_file = tmp_path / "bad.yaml"
    teacher_elsewhere = data_and_teacher_yaml(assets, 1).replace(f"path: {assets / 'teacher'}", f"path: {other}")
    config_file.write_text(f"name: bad\n{teacher_elsewhere}{student_yaml(assets, lr=1e-3)}")
    with pytest.raises(ConfigError, match="teacher_checkpoint: run cuts the run's teacher, which must be "
                                          "hf-classifier from the student's folder"):
        load_config(config_file)  # with the config's other checks, before any data or model is loaded
    assistant = f"""strategy:
  name: teacher_assistant
  assistants: [{{name: hf-from-teacher, options: {{path: {assets / 'teacher'}, teacher_checkpoint: run}}}}]
"""
    config_file.write_text(f"name: bad\n{data_and_teacher_yaml(assets, 1)}{student_yaml(assets)}{assistant}")
    with pytest.raises(ConfigError, match=r"strategy.assistants\[0\].options.teacher_checkpoint: run is for the "
                                          "student only"):
        load_config(config_file)


def test_the_scratch_baseline_of_a_cut_student_depends_on_the_teacher_it_was_cut_from(tmp_path):
    from kdistill.run.baseline import baseline_digest, baseline_inputs
    from kdistill.text.run_teacher import run_teacher_weights

    assets = text_assets(tmp_path, train=32, test=16)
    config_file = tmp_path / "cut.yaml"
    config_file.write_text(f"name: cut\n{data_and_teacher_yaml(assets, 1)}{student_yaml(assets)}")
    config = load_config(config_file)
    digests = []
    for run, weight in (("a", 1.0), ("b", 1.0), ("c", 2.0)):  # runs a and b trained the same teacher
        teacher = run_teacher_weights(config, tmp_path / run)
        assert teacher == tmp_path / run / "teacher" / "student.pt"
        teacher.parent.mkdir(parents=True)
        torch.save({"w": torch.full((3,), weight)}, teacher)
        digests.append(baseline_digest(baseline_inputs(config, None, None, tmp_path / run)))
    assert digests[0] == digests[1] != digests[2]
    # a loaded teacher: `run` is its checkpoint
    loaded = config.model_copy(update={"teacher": config.teacher.model_copy(update={"checkpoint": teacher})})
    assert run_teacher_weights(loaded, tmp_path / "elsewhere") == teacher
