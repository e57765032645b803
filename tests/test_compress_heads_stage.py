"""Attention-head pruning as a pipeline stage (`prune: {kind: heads}`), recovered by distillation:
a tiny random BERT loses whole heads, still runs, the table has its rows and the model it started
from (recovery's teacher) is byte-identical after. Through the Python API and `kdistill compress`."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import yaml

from kdistill.cli import main
from kdistill.compress.pipeline import CompressionPipeline
from kdistill.compress.spec import CompressSpec
from kdistill.compress.table import stage_table
from kdistill.data.transforms import Normalize
from kdistill.engine.batch import split_batch
from kdistill.errors import BadInput
from kdistill.evaluate.profile import count_parameters

pytest.importorskip("transformers")

from text_fixtures import model_dir, tokenizer_dir, write_label_text  # noqa: E402

SPEC = {"stages": ["prune", "recover"], "prune": {"kind": "heads", "ratios": [0.5]},
        "recover": {"epochs": 1, "batch_size": 16, "lr": 0.01}, "profile": {"repeats": 2, "warmup": 0, "batch_size": 4}}


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    from kdistill.text.datasets import load_text_files_bundle

    root = tmp_path_factory.mktemp("heads-text")
    write_label_text(root / "train.txt", 80, seed=0)
    write_label_text(root / "test.txt", 24, seed=1)
    bundle = load_text_files_bundle("train.txt", "test.txt", str(tokenizer_dir(root)), root, format="label-text")
    return root, bundle


def tiny_bert(root):
    from kdistill.text.hf_models import hf_classifier

    torch.manual_seed(0)
    return hf_classifier(2, str(model_dir(root, "bert", layers=2, hidden=32, heads=4)))


def state_bytes(model) -> dict[str, bytes]:
    return {k: v.detach().cpu().numpy().tobytes() for k, v in model.state_dict().items()}


def test_half_the_heads_go_recovered_by_distillation_from_the_untouched_model(text, tmp_path):
    root, bundle = text
    model = tiny_bert(root).eval()
    before = state_bytes(model)
    spec = CompressSpec.model_validate(SPEC)
    result = CompressionPipeline(spec, model, bundle.train, bundle.test, Normalize(None, None), tmp_path).run()
    assert [row.stage for row in result.rows] == ["start", "prune 50% of heads", "recover 50% of heads"]
    start, pruned, recovered = result.rows
    # per layer: q, k, v lose 16 of 32 rows (+ bias), the output projection 16 of 32 input columns
    assert start.profile["parameters"] - recovered.profile["parameters"] == 2 * (3 * 16 * 33 + 16 * 32)
    assert recovered.profile["flops_per_sample"] < start.profile["flops_per_sample"]
    assert "heads left per layer: [2]" in pruned.note and "distill" in recovered.note
    final = result.model
    assert count_parameters(final) == recovered.profile["parameters"] < count_parameters(model)
    assert [layer.attention.self.num_attention_heads for layer in final.bert.encoder.layer] == [2, 2]
    inputs, _, _ = split_batch(bundle.test.__getitems__(list(range(5))))
    with torch.no_grad():
        logits = final.eval()(**inputs).logits
    assert logits.shape == (5, 2) and torch.isfinite(logits).all()
    assert state_bytes(model) == before  # the model given (recovery's teacher is a frozen copy of it)
    table = stage_table(result.rows)
    assert "| recover 50% of heads | pytorch |" in table
    assert not any(p.name.endswith(".onnx") for p in tmp_path.iterdir())


def test_heads_iterate_from_the_last_kept_model(text, tmp_path):
    """0.25 then 0.5: 4 heads -> 3 -> 2 (the second ratio is a third of the 3 left, rounded as intended)."""
    root, bundle = text
    spec = CompressSpec.model_validate({**SPEC, "stages": ["prune"], "prune": {"kind": "heads", "ratios": [0.25, 0.5]}})
    result = CompressionPipeline(spec, tiny_bert(root), bundle.train, bundle.test, Normalize(None, None),
                                 tmp_path).run()
    assert [row.note for row in result.rows[1:]] == ["heads left per layer: [3]", "heads left per layer: [2]"]
    assert [layer.attention.self.num_attention_heads for layer in result.model.bert.encoder.layer] == [2, 2]


def test_heads_through_kdistill_compress(text, tmp_path, capsys):
    root, _ = text
    model = tiny_bert(root)
    torch.save(model.state_dict(), tmp_path / "bert.pt")
    plan = {"name": "bert-heads", "data": {"name": "text-files", "root": str(root), "batch_size": 16,
                                           "options": {"train": "train.txt", "test": "test.txt",
                                                       "tokenizer": str(root / "tokenizer"), "format": "label-text"}},
            "model": {"name": "hf-classifier", "options": {"path": str(root / "bert")},
                      "checkpoint": str(tmp_path / "bert.pt")},
            "compress": {**SPEC, "stages": ["prune", "recover", "export"], "export": {"onnx": False}}}
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    out = tmp_path / "out"
    assert main(["compress", str(tmp_path / "plan.yaml"), "--set", "compress.prune.ratios=[0.75]", "--out", str(out),
                 "--json"]) == 0
    rows = {row["stage"]: row for row in map(json.loads, capsys.readouterr().out.splitlines()) if row}
    assert rows["prune 75% of heads"]["note"].endswith("heads left per layer: [1]")
    assert rows["recover 75% of heads"]["profile"]["parameters"] < rows["start"]["profile"]["parameters"]
    assert (out / "model.safetensors").exists()


@pytest.mark.parametrize(("prune", "expected"), [
    ({"kind": "heads", "target_latency": 0.5}, "heads are pruned by ratios"),
    ({"kind": "heads", "ignore": ["bert"]}, "prune.ignore: not used by kind: heads"),
])
def test_heads_options_that_do_not_apply_are_refused(prune, expected):
    with pytest.raises(ValueError, match=expected):
        CompressSpec.model_validate({"prune": prune})


def test_a_text_model_is_not_sent_to_the_onnx_stages(text, tmp_path):
    root, bundle = text
    spec = CompressSpec.model_validate({**SPEC, "stages": ["prune", "export"]})
    with pytest.raises(BadInput, match="export.onnx: this model takes several inputs"):
        CompressionPipeline(spec, copy.deepcopy(tiny_bert(root)), bundle.train, bundle.test, Normalize(None, None),
                            tmp_path)
