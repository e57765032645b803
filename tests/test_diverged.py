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


def run(run_dir, callbacks=(), **kwargs) -> Distiller:
    torch.manual_seed(0)
    return Distiller(None, build_model("mlp", 10, (1, 8, 8), {"hidden": [16]}), [HardLabel()], batch_size=64,
                     progress=False, device="cpu", run_dir=run_dir, callbacks=list(callbacks), **kwargs)


def test_a_nan_in_the_inputs_stops_the_run_and_says_where_to_look(digits, tmp_path):
    _, train, _ = digits
    inputs = train.inputs.clone().float()
    inputs[7, 0, 3, 3] = float("nan")
    with pytest.raises(TrainingDiverged, match=r"training loss is nan in epoch 1.*NaN or inf in the inputs.*"
                                               r"no checkpoint was written before it"):
        run(tmp_path / "run").fit(InMemoryDataset(inputs, train.labels), epochs=3)
    assert not (tmp_path / "run" / "student.pt").exists()
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


class PoisonInSecondEpoch(Callback):
    """Makes the weights infinite after the second epoch's first step (after the first epoch's checkpoint)."""

    def on_step_end(self, distiller, step_info):
        if step_info.epoch == 1 and step_info.batch == 1:
            with torch.no_grad():
                next(distiller.student.model.parameters()).fill_(float("inf"))


@pytest.mark.parametrize("every", [None, 3])  # 3: periodic checkpoints mid-epoch, the first after the poison
def test_the_checkpoint_kept_is_the_last_finite_one(digits, tmp_path, every):
    _, train, _ = digits
    # 19 steps an epoch: the poison comes at step 20, the next periodic checkpoint at step 21
    when = r"epoch 2 \(step 21\)" if every else r"epoch 2,"
    with pytest.raises(TrainingDiverged, match=when + r".*last.pt, written before, is intact"):
        run(tmp_path / "run", [PoisonInSecondEpoch()], checkpoint_every_steps=every).fit(train, epochs=3)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert (state["epoch"], state["step_in_epoch"]) == (1, 0)
    assert all(torch.isfinite(value).all() for value in state["student"].values())


def test_under_fp16s_loss_scaler_a_skipped_step_stops_nothing_while_the_weights_are_finite():
    # the scaler skips a step whose gradients are not finite: the loss mean is inf, the weights intact
    from types import SimpleNamespace

    from kdistill.engine.hooks import check_finite_loss

    model = torch.nn.Linear(2, 2)
    fp16 = SimpleNamespace(scaler=object(), student=SimpleNamespace(model=model), checkpoint_path=None,
                           description="student")
    check_finite_loss(fp16, float("inf"), "in epoch 1")
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match="no checkpoint was written before it"):
        check_finite_loss(fp16, float("inf"), "in epoch 1")
    with pytest.raises(TrainingDiverged):  # without the scaler the loss alone decides
        check_finite_loss(SimpleNamespace(**{**vars(fp16), "scaler": None}), float("nan"), "in epoch 1")
