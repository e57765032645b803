"""TensorBoard / MLflow callbacks against the real libraries: a real `kdistill run` (the digits demo,
shortened) logs through both, and what TensorBoard's EventAccumulator and MLflow's MlflowClient read
back must be the run's metrics.jsonl, value for value at step = epoch, one folder / run per stage.
Also: a resumed stage goes on in the same MLflow run and TensorBoard shows no epoch twice; a missing
package is one clear error. Each test skips when its package is not installed (the `track` extra)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from kdistill import Distiller, TrainingInterrupted
from kdistill.cli import main
from kdistill.engine.callbacks import Callback
from kdistill.methods import HardLabel
from kdistill.models import build_model
from kdistill.trackers import MLflow, TensorBoard, numeric_metrics, stage_name

HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None
HAS_MLFLOW = importlib.util.find_spec("mlflow") is not None
needs_tensorboard = pytest.mark.skipif(not HAS_TENSORBOARD, reason="tensorboard not installed (pip install "
                                       "kdistill[track])")
needs_mlflow = pytest.mark.skipif(not HAS_MLFLOW, reason="mlflow not installed (pip install kdistill[track])")
STAGES = {"teacher", "student-scratch", "student-distilled"}


def records_of(stage_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every event
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def mlflow_runs(uri: str, experiment: str) -> dict[str, object]:
    """The experiment's runs by name; two runs of one name fail (one run per stage)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment} in {uri}"
    runs = client.search_runs([found.experiment_id])
    names = [run.info.run_name for run in runs]
    assert len(set(names)) == len(names), f"runs of one name: {sorted(names)}"
    return {run.info.run_name: run for run in runs}


def mlflow_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow import MlflowClient

    return sorted((m.step, m.value) for m in MlflowClient(tracking_uri=uri).get_metric_history(run_id, key))


def expected_series(records: list[dict]) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        for key, value in numeric_metrics(record).items():
            series.setdefault(key, []).append((record["epoch"], value))
    return series


def assert_same_series(got: dict[str, list[tuple[int, float]]], records: list[dict], rel: float) -> None:
    want = expected_series(records)
    assert sorted(got) == sorted(want) and "val/acc" in want and "train/loss" in want
    for key, points in want.items():
        assert [s for s, _ in got[key]] == [s for s, _ in points], key
        assert [v for _, v in got[key]] == pytest.approx([v for _, v in points], rel=rel), key


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory) -> Path:
    """The digits demo (teacher, scratch student, distilled student), 2 epochs a stage, both trackers on
    every stage, MLflow at its default location (no MLFLOW_TRACKING_URI)."""
    if not (HAS_TENSORBOARD or HAS_MLFLOW):
        pytest.skip("neither tensorboard nor mlflow is installed (pip install kdistill[track])")
    root = tmp_path_factory.mktemp("tracked")
    callbacks = ([] if not HAS_TENSORBOARD else ["kdistill.trackers:TensorBoard"]) + (
        [] if not HAS_MLFLOW else ["{name: kdistill.trackers:MLflow, experiment: kd}"])
    listed = "[" + ", ".join(callbacks) + "]"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KDISTILL_CACHE", str(root / "cache"))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        torch.set_num_threads(1)
        code = main(["run", "--no-progress", "--threads", "1", "--output-dir", str(root / "run"),
                     "--set", "teacher.training.epochs=2", "--set", "training.epochs=2",
                     "--set", f"training.callbacks={listed}", "--set", f"teacher.training.callbacks={listed}"])
    assert code == 0
    return root / "run"


@needs_tensorboard
def test_tensorboard_folder_per_stage_holds_metrics_jsonl(tracked_run):
    folders = {p.parent.name for p in tracked_run.glob("*/tensorboard")}
    assert folders == STAGES
    for stage in STAGES:
        records = records_of(tracked_run / stage)
        assert [r["epoch"] for r in records] == [1, 2]
        # TensorBoard keeps scalars as float32
        assert_same_series(tensorboard_scalars(tracked_run / stage / "tensorboard"), records, rel=1e-6)


@needs_mlflow
def test_mlflow_run_per_stage_holds_metrics_jsonl(tracked_run):
    uri = f"sqlite:///{tracked_run / 'mlflow.db'}"  # the default: the run directory's SQLite store
    runs = mlflow_runs(uri, "kd")
    assert set(runs) == STAGES
    for stage, run in runs.items():
        assert run.info.status == "FINISHED" and run.data.tags["kdistill.stage"] == stage
        assert run.data.tags["kdistill.run_dir"] == str(tracked_run.resolve())
        records = records_of(tracked_run / stage)
        got = {key: mlflow_history(uri, run.info.run_id, key) for key in run.data.metrics}
        assert_same_series(got, records, rel=1e-12)


class CrashAtEpoch(Callback):
    """Dies at an epoch's end after the callbacks before it logged the epoch, before its checkpoint."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, distiller, record):
        if record["epoch"] == self.epoch:
            raise RuntimeError("crash")


class StopInEpoch(Callback):
    """Ctrl-C in the middle of an epoch (after `step` optimiser steps)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, distiller, step_info):
        if step_info.global_step == self.step:
            distiller.request_stop()


@needs_tensorboard
@needs_mlflow
def test_resumed_stage_logs_each_epoch_once_in_the_same_run(digits, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _, train, val = digits
    train = train.subset(list(range(320)))  # 5 steps an epoch at batch 64
    uri = f"sqlite:///{tmp_path / 'store.db'}"

    def fit(callbacks: list, resume: bool) -> Distiller:
        torch.manual_seed(0)
        model = build_model("mlp", 10, (1, 8, 8), {"hidden": [16]})
        distiller = Distiller(None, model, [HardLabel()], run_dir=tmp_path / "stage", progress=False,
                              batch_size=64, callbacks=callbacks)
        distiller.fit(train, val, epochs=4, resume=resume)
        return distiller

    # a crash after epoch 2 was logged to TensorBoard (not to MLflow) but before its checkpoint, then
    # Ctrl-C in epoch 3 of the resumed run, then the rest: three processes, one stage
    with pytest.raises(RuntimeError, match="crash"):
        fit([TensorBoard(), CrashAtEpoch(2), MLflow("kd", uri)], resume=False)
    with pytest.raises(TrainingInterrupted):
        fit([TensorBoard(), MLflow("kd", uri), StopInEpoch(12)], resume=True)
    fit([TensorBoard(), MLflow("kd", uri)], resume=True)

    records = records_of(tmp_path / "stage")
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert_same_series(tensorboard_scalars(tmp_path / "stage" / "tensorboard"), records, rel=1e-6)
    runs = mlflow_runs(uri, "kd")
    assert list(runs) == ["stage"] and runs["stage"].info.status == "FINISHED"
    run_id = runs["stage"].info.run_id
    assert_same_series({key: mlflow_history(uri, run_id, key) for key in runs["stage"].data.metrics}, records,
                       rel=1e-12)


def test_stage_names_are_folders_inside_the_experiment(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("name: x\n")

    class Stub:  # only the attribute stage_name reads
        def __init__(self, run_dir):
            self.run_dir = run_dir

    assert stage_name(Stub(tmp_path / "run" / "teacher")) == "teacher"
    assert stage_name(Stub(tmp_path / "run" / "born-again" / "gen-2")) == "born-again/gen-2"
    assert stage_name(Stub(tmp_path / "alone")) == "alone"
    assert stage_name(Stub(None)) == "stage"


def test_numeric_metrics_keep_numbers_only():
    assert numeric_metrics({"stage": "s", "epoch": 3, "lr": 0.1, "train/acc": 1, "flag": True, "note": "x"}) == {
        "lr": 0.1, "train/acc": 1.0}


@pytest.mark.parametrize(("module", "callback", "package"), [
    ("torch.utils.tensorboard", "kdistill.trackers:TensorBoard", "tensorboard"),
    ("mlflow", "kdistill.trackers:MLflow", "mlflow-skinny")])
def test_without_the_package_the_run_says_what_to_install(tmp_path, capsys, monkeypatch, module, callback, package):
    monkeypatch.setitem(sys.modules, module, None)  # what an absent package looks like to `import`
    code = main(["run", "--no-progress", "--threads", "1", "--output-dir", str(tmp_path / "run"),
                 "--set", "teacher.training.epochs=1", "--set", f"training.callbacks=[{callback}]"])
    assert code == 2
    assert f"needs {package}, which is not installed; pip install {package}" in capsys.readouterr().err
