"""Recovery of a pruned model by distillation from the unpruned one, on real data (digits), with
the teacher's weights byte-identical before and after."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from kdistill.compress.evaluation import torch_accuracy
from kdistill.compress.prune import StructuredPruning
from kdistill.compress.recover import RecoverySettings, TeacherChanged, recover
from kdistill.data.transforms import Normalize
from kdistill.errors import BadInput
from kdistill.models import build_model


@pytest.fixture(scope="module")
def trained(digits):
    bundle, train, _ = digits
    torch.manual_seed(0)
    model = build_model("mlp", bundle.num_classes, bundle.input_shape, {"hidden": [128, 128]})
    norm = Normalize(bundle.mean, bundle.std)
    recover(model, None, train, RecoverySettings(epochs=15, mode="finetune", lr=0.05), norm)
    return model.eval(), norm


def state_bytes(model: nn.Module) -> dict[str, bytes]:
    return {k: v.detach().cpu().numpy().tobytes() for k, v in model.state_dict().items()}


def test_distillation_recovers_a_pruned_model_and_never_touches_the_teacher(trained, digits):
    bundle, train, _ = digits
    teacher, norm = trained
    before = state_bytes(teacher)
    teacher_acc = torch_accuracy(teacher, bundle.test, norm)
    student = copy.deepcopy(teacher)
    StructuredPruning(student, torch.zeros(2, *bundle.input_shape), 0.9).step()
    assert 12 <= student.hidden[0][0].out_features <= 13  # 128 neurons -> 10 %
    pruned_acc = torch_accuracy(student, bundle.test, norm)
    assert pruned_acc < teacher_acc - 0.1  # pruning 90 % of the neurons hurts
    recover(student, teacher, train, RecoverySettings(epochs=5, lr=0.05), norm)
    recovered = torch_accuracy(student, bundle.test, norm)
    assert recovered > pruned_acc + 0.1 and recovered > 0.85
    assert state_bytes(teacher) == before


class DriftingTeacher(nn.Module):
    """A teacher whose forward changes one of its own tensors: what the digest guard must catch."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.model(x)


def test_a_teacher_that_changes_is_an_error(trained, digits):
    teacher, norm = trained
    student = copy.deepcopy(teacher)
    with pytest.raises(TeacherChanged):
        recover(student, DriftingTeacher(copy.deepcopy(teacher)), digits[1], RecoverySettings(epochs=1), norm)


def test_settings_are_checked():
    with pytest.raises(BadInput, match="recover.mode"):
        RecoverySettings(mode="shrink")
    with pytest.raises(BadInput, match="needs the unpruned model"):
        recover(nn.Linear(2, 2), None, [], RecoverySettings(mode="distill"))


def test_unstructured_pruning_in_the_pipeline_ends_with_plain_sparse_weights(trained, digits, tmp_path):
    from kdistill.compress.export import distillation_leftovers
    from kdistill.compress.pipeline import CompressionPipeline
    from kdistill.compress.prune import sparsity
    from kdistill.compress.spec import CompressSpec

    bundle, train, _ = digits
    teacher, norm = trained
    before = state_bytes(teacher)
    spec = CompressSpec.model_validate({"stages": ["prune", "recover"], "recover": {"epochs": 1},
                                        "prune": {"kind": "unstructured", "ratios": [0.5]},
                                        "profile": {"repeats": 2, "warmup": 0}})
    result = CompressionPipeline(spec, copy.deepcopy(teacher), train, bundle.test, norm, tmp_path).run()
    assert [row.stage for row in result.rows] == ["start", "prune 50% of weights", "recover 50% of weights"]
    assert distillation_leftovers(result.model) == []  # masks baked in and removed
    assert sparsity(result.model) == pytest.approx(0.5, abs=0.01)
    nonzero = result.rows[-1].profile["nonzero_parameters"]
    assert nonzero < 0.6 * result.rows[-1].profile["parameters"]
    assert state_bytes(teacher) == before
