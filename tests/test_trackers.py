"""TensorBoard / MLflow callbacks: off by default, a clear error without the package, and every
numeric entry of each epoch record sent at step = epoch (checked against metrics.jsonl through a
recording stand-in for the tracker's API, since neither package is installed here)."""

from __future__ import annotations

import importlib.util
import json
import sys
import types

import pytest

from kdistill import Distiller
from kdistill.cli import main
from kdistill.methods import HardLabel
from kdistill.models import build_model
from kdistill.trackers import MLflow, TensorBoard, numeric_metrics


class RecordingWriter:
    instances: list[RecordingWriter] = []

    def __init__(self, log_dir: str) -> None:
        self.log_dir, self.scalars, self.closed = log_dir, [], False
        RecordingWriter.instances.append(self)

    def add_scalar(self, key, value, step):
        self.scalars.append((key, value, step))

    def flush(self):
        pass

    def close(self):
        self.closed = True


def fit_digits(digits, tmp_path, callback) -> list[dict]:
    bundle, train, val = digits
    model = build_model("mlp", 10, (1, 8, 8), {"hidden": [16]})
    distiller = Distiller(None, model, [HardLabel()], run_dir=tmp_path / "stage", progress=False, callbacks=[callback])
    distiller.fit(train.subset(list(range(300))), val, epochs=2)
    return [json.loads(line) for line in (tmp_path / "stage" / "metrics.jsonl").read_text().splitlines()]


def test_numeric_metrics_keep_numbers_only():
    assert numeric_metrics({"stage": "s", "epoch": 3, "lr": 0.1, "train/acc": 1, "flag": True, "note": "x"}) == {
        "lr": 0.1, "train/acc": 1.0}


def test_tensorboard_logs_every_epoch_record(digits, tmp_path, monkeypatch):
    module = types.ModuleType("torch.utils.tensorboard")
    module.SummaryWriter = RecordingWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", module)
    RecordingWriter.instances.clear()
    records = fit_digits(digits, tmp_path, TensorBoard())
    (writer,) = RecordingWriter.instances
    assert writer.log_dir == str(tmp_path / "stage" / "tensorboard") and writer.closed
    expected = [(k, v, r["epoch"]) for r in records for k, v in numeric_metrics(r).items()]
    assert writer.scalars == expected and any(k == "val/acc" for k, _, _ in expected)


def test_mlflow_logs_one_run_per_stage(digits, tmp_path, monkeypatch):
    calls = []
    module = types.ModuleType("mlflow")
    module.set_experiment = lambda name: calls.append(("experiment", name))
    module.start_run = lambda run_name: calls.append(("start", run_name))
    module.log_metrics = lambda metrics, step: calls.append(("log", metrics, step))
    module.end_run = lambda: calls.append(("end",))
    monkeypatch.setitem(sys.modules, "mlflow", module)
    records = fit_digits(digits, tmp_path, MLflow(experiment="kd"))
    assert calls[:2] == [("experiment", "kd"), ("start", "stage")] and calls[-1] == ("end",)
    assert calls[2:-1] == [("log", numeric_metrics(r), r["epoch"]) for r in records]


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed here")
def test_without_the_package_the_run_says_what_to_install(tmp_path, capsys):
    code = main(["run", "--no-progress", "--threads", "1", "--output-dir", str(tmp_path / "run"), "--set",
                 "teacher.training.epochs=1", "--set", "training.callbacks=[kdistill.trackers:TensorBoard]"])
    assert code == 2
    assert "needs tensorboard" in capsys.readouterr().err
