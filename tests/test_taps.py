"""Layers reached by name: clear errors for bad paths and silent layers; tuple and dict outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdistill import Distiller
from kdistill.engine.batch import logits_of
from kdistill.methods import HardLabel, Method
from kdistill.models import build_model
from kdistill.taps import LayerTaps, TapError


def test_misspelt_path_lists_closest():
    model = build_model("resnet8", 10, (3, 32, 32))
    with pytest.raises(TapError, match=r"no module 'layer3\.0\.conv3'.*closest: .*layer3\.0\.conv1"):
        LayerTaps(model, ["layer3.0.conv3"], "teacher")


class WithUnusedBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 3)
        self.unused = nn.Linear(4, 3)

    def forward(self, x):
        return self.body(x)


def test_layer_that_never_runs_is_an_error():
    model = WithUnusedBranch()
    with LayerTaps(model, ["unused"]) as taps:
        model(torch.randn(2, 4))
        with pytest.raises(TapError, match="did not run"):
            taps.collect()


class TupleAndDict(nn.Module):
    def __init__(self):
        super().__init__()
        self.pair = PairBlock()
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        hidden, gate = self.pair(x)
        return {"logits": self.head(hidden * gate), "aux": gate}


class PairBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(x), torch.sigmoid(x)


def test_selectors_narrow_tuples_and_read_inputs():
    model = TupleAndDict()
    x = torch.randn(2, 4)
    with LayerTaps(model, ["pair:0", "pair:1", "head:input"]) as taps:
        out = model(x)
        got = taps.collect()
    torch.testing.assert_close(got["pair:1"], torch.sigmoid(x))
    torch.testing.assert_close(got["pair:0"], model.pair.lin(x))
    torch.testing.assert_close(got["head:input"], got["pair:0"] * got["pair:1"])
    assert logits_of(out) is out["logits"]
    assert not model.pair._forward_hooks  # removed on exit


class FeatureNorm(Method):
    """A test method: pulls the tapped student feature towards the teacher's."""

    name = "feature_norm"

    def student_taps(self):
        return ["pair:0"]

    def teacher_taps(self):
        return ["pair:0"]

    def loss_terms(self, ctx):
        return (ctx.student_features["pair:0"] - ctx.teacher_features[0]["pair:0"]).pow(2).mean()


def test_dict_output_model_trains_and_hooks_are_removed_after_fit():
    from kdistill.data.base import InMemoryDataset

    torch.manual_seed(0)
    data = InMemoryDataset(torch.randn(64, 4), torch.randint(0, 3, (64,)))
    teacher, student = TupleAndDict(), TupleAndDict()
    distiller = Distiller(teacher, student, [FeatureNorm(), HardLabel()], batch_size=16, progress=False)
    distiller.fit(data, epochs=1)
    assert not student.pair._forward_hooks and not teacher.pair._forward_hooks
    with pytest.raises(TapError, match="closest"):
        Distiller(teacher, student, [type("Bad", (FeatureNorm,), {"student_taps": lambda self: ["pairr"]})()])
