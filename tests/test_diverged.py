"""A run whose training loss turns NaN stops with what to look at, and keeps the last finite checkpoint.

Before, a NaN in one input (or a zero std in a normalisation) gave `train/loss: nan` in every
record, NaN weights in every checkpoint and in `student.pt`, and a run that exited 0."""

from __future__ import annotations

import pytest
import torch

from kdistill import Distiller
from kdistill.data.base import InMemoryDataset
from kdistill.engine.callbacks import Callback
from kdistill.errors import TrainingDiverged
from kdistill.methods import HardLabel
from kdistill.models import build_model


def run(run_dir, callbacks=()) -> Distiller:
    torch.manual_seed(0)
    return Distiller(None, build_model("mlp", 10, (1, 8, 8), {"hidden": [16]}), [HardLabel()], batch_size=64,
                     progress=False, device="cpu", run_dir=run_dir, callbacks=list(callbacks))


def test_a_nan_in_the_inputs_stops_the_run_and_says_where_to_look(digits, tmp_path):
    _, train, _ = digits
    inputs = train.inputs.clone().float()
    inputs[7, 0, 3, 3] = float("nan")
    with pytest.raises(TrainingDiverged, match=r"training loss is nan in epoch 1.*NaN or inf in the inputs"):
        run(tmp_path / "run").fit(InMemoryDataset(inputs, train.labels), epochs=3)
    assert not (tmp_path / "run" / "student.pt").exists()
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


class PoisonInSecondEpoch(Callback):
    """Makes the weights infinite after the second epoch's first step (after the first epoch's checkpoint)."""

    def on_step_end(self, distiller, step_info):
        if step_info.epoch == 1 and step_info.batch == 1:
            with torch.no_grad():
                next(distiller.student.model.parameters()).fill_(float("inf"))


def test_the_checkpoint_kept_is_the_last_finite_epochs(digits, tmp_path):
    _, train, _ = digits
    with pytest.raises(TrainingDiverged, match="epoch 2"):
        run(tmp_path / "run", [PoisonInSecondEpoch()]).fit(train, epochs=3)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 1
    assert all(torch.isfinite(value).all() for value in state["student"].values())
