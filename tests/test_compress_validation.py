"""The stop rule chooses on a validation split and only reports the test split: with a sealed test
split (any read raises) every choice is still made, and the same as with the real one."""

from __future__ import annotations

import copy

import pytest
import torch
from sealed_data import SealedSplit, SealedSplitRead

from kdistill.compress.evaluation import torch_accuracy
from kdistill.compress.pipeline import VAL_FRACTION, CompressionPipeline
from kdistill.compress.recover import RecoverySettings, recover
from kdistill.compress.spec import CompressSpec
from kdistill.data import split_validation
from kdistill.data.transforms import Normalize
from kdistill.models import build_model

SPEC = {"stages": ["prune", "recover", "quantize", "export"], "accuracy_budget": 1.0,
        "prune": {"ratios": [0.5, 0.97]}, "recover": {"epochs": 2}, "profile": {"repeats": 2, "warmup": 0}}


@pytest.fixture(scope="module")
def trained(digits):
    bundle, train, _ = digits
    torch.manual_seed(0)
    model = build_model("mlp", bundle.num_classes, bundle.input_shape, {"hidden": [64]})
    norm = Normalize(bundle.mean, bundle.std)
    recover(model, None, train, RecoverySettings(epochs=10, mode="finetune", lr=0.05), norm)
    return model.eval(), norm


def decisions(result) -> list[tuple[str, bool, float]]:
    return [(row.stage, row.accepted, row.val_accuracy) for row in result.rows]


def test_choices_never_read_the_test_split_and_match_a_run_that_reports_it(trained, digits, tmp_path):
    bundle, train, val = digits
    model, norm = trained
    spec = CompressSpec.model_validate(SPEC)
    sealed = CompressionPipeline(spec, copy.deepcopy(model), train, SealedSplit(), norm, tmp_path / "sealed", val=val)
    chosen = sealed.choose()  # the whole pipeline: prune, recover, the budget, int8, the ONNX check
    by_stage = {row.stage: row for row in chosen.rows}
    start = by_stage["start"].val_accuracy
    assert by_stage["recover 50%"].accepted and by_stage["recover 50%"].val_accuracy >= start - 0.01
    assert not by_stage["recover 97%"].accepted  # outside the budget on validation: the search stops
    assert chosen.model.hidden[0][0].out_features == 32
    for row in chosen.rows:  # the stop rule read validation accuracy
        assert row.val_accuracy is not None
        if row.stage not in ("start", "prune 50%", "prune 97%"):
            assert row.accepted == (row.val_accuracy >= start - 0.01 - 1e-12)
    with pytest.raises(SealedSplitRead):
        sealed.score_test()  # the test split is read here, and only here

    reported = CompressionPipeline(spec, copy.deepcopy(model), train, bundle.test, norm, tmp_path / "real",
                                   val=val).run()
    assert decisions(reported) == decisions(chosen)
    assert reported.rows[0].accuracy == pytest.approx(torch_accuracy(model, bundle.test, norm))
    assert all(0 < row.accuracy <= 1 for row in reported.rows)


def test_without_a_validation_split_one_is_held_out_of_training(trained, digits, tmp_path):
    bundle, train, _ = digits
    model, norm = trained
    spec = CompressSpec.model_validate({"stages": ["prune"], "prune": {"ratios": [0.5]}, "accuracy_budget": 1.0,
                                        "profile": {"repeats": 2, "warmup": 0}})
    pipeline = CompressionPipeline(spec, copy.deepcopy(model), train, SealedSplit(), norm, tmp_path)
    kept, held = split_validation(train, VAL_FRACTION, seed=0)
    assert len(pipeline.val) == len(held) and len(pipeline.train) == len(kept) == len(train) - len(held)
    assert torch.equal(pipeline.val.labels, held.labels)
    start = pipeline.choose().rows[0]
    assert start.val_accuracy == pytest.approx(torch_accuracy(model, held, norm))
