"""Experiment tracking as extras, off by default: TensorBoard and MLflow, as training callbacks.

kdistill's own record of a run is `metrics.jsonl` (and the reports built from it); these send the
same per-epoch records to a tracker as well, where a team already uses one. Neither package is a
dependency: install the extra (`pip install "kdistill[track]"`: tensorboard, mlflow-skinny) and ask
for the callbacks in the experiment file (`teacher.training.callbacks` too, to track the teacher):

    training:
      callbacks:
        - {name: kdistill.trackers:TensorBoard}                 # <stage dir>/tensorboard
        - {name: kdistill.trackers:MLflow, experiment: kd}      # see "Where MLflow writes"

Each stage (teacher, scratch student, distilled student, each generation of a chain) is its own
TensorBoard folder / MLflow run, named after the stage's folder in the run directory ("teacher",
"student-distilled", "born-again/gen-1"). Every numeric entry of the epoch record (`metrics.jsonl`'s
row: losses, accuracies, lr, timing) is logged at step = epoch (1-based); only the main process
writes. A stage that is not trained (a reused scratch baseline, a loaded teacher) logs nothing.

Where MLflow writes: `tracking_uri` when given, else `MLFLOW_TRACKING_URI` (a team's server), else
`sqlite:///<run dir>/mlflow.db`, the SQLite store in the experiment's run directory, beside the run's
other records (`MlflowClient` reads it with mlflow-skinny; `mlflow ui --backend-store-uri
sqlite:///<run dir>/mlflow.db`, from the full mlflow package, shows it). Not MLflow's own defaults:
MLflow 3 refuses its plain file store (`./mlruns`) unless MLFLOW_ALLOW_FILE_STORE=true, and its own
SQLite default (`./mlflow.db`) depends on the directory the run was started from. To see many runs
in one place, point them at one store (`tracking_uri: sqlite:////abs/path/mlflow.db`, or the
environment variable). A Distiller used without a run directory falls back to MLflow's default.

Resuming. Both continue where the interrupted stage stopped: the MLflow run's id is kept in the
training checkpoint, so a resumed stage logs into the same run; the TensorBoard writer purges the
epochs after the checkpoint resumed from (TensorBoard's `purge_step`), as `metrics.jsonl` drops
them, so the resumed epochs are not shown twice. MLflow cannot delete logged values: an epoch
logged in the instant between its record and its checkpoint by a process that then died appears
twice in that run (with equal values, a resumed run being the same computation).
"""

from __future__ import annotations

import importlib
import os
import time
from pathlib import Path
from typing import Any

from kdistill.engine.callbacks import Callback
from kdistill.errors import BadInput

SKIPPED = ("epoch", "stage")
EXPERIMENT_MARKER = "config.yaml"  # what `kdistill run` writes first into an experiment's run directory
MLFLOW_DB = "mlflow.db"


def numeric_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The entries of an epoch record a tracker plots (numbers, not the epoch counter or the stage)."""
    return {k: float(v) for k, v in record.items()
            if k not in SKIPPED and isinstance(v, int | float) and not isinstance(v, bool)}


def _require(module: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise BadInput(f"training.callbacks: kdistill.trackers needs {package}, which is not installed; "
                       f"pip install {package} (or kdistill[track]), or remove the callback") from None


def experiment_dir(stage_dir: Path) -> Path:
    """The experiment's run directory holding a stage: the nearest folder above it with config.yaml;
    the stage directory itself for a Distiller used on its own."""
    stage_dir = Path(stage_dir).resolve()
    for folder in stage_dir.parents:
        if (folder / EXPERIMENT_MARKER).is_file():
            return folder
    return stage_dir


def stage_name(distiller: Any) -> str:
    """The stage's folder relative to its experiment ("teacher", "born-again/gen-1"); "stage" without one."""
    run_dir = getattr(distiller, "run_dir", None)
    if not run_dir:
        return "stage"
    stage_dir = Path(run_dir).resolve()
    root = experiment_dir(stage_dir)
    return stage_dir.name if root == stage_dir else stage_dir.relative_to(root).as_posix()


def epochs_done(distiller: Any) -> int:
    """Epochs already recorded when the fit starts: 0, or those restored from a checkpoint on resume."""
    history = getattr(distiller, "history", None) or []
    return int(history[-1]["epoch"]) if history else 0


class TensorBoard(Callback):
    """Scalars per epoch into `<stage dir>/tensorboard`, or `log_dir/<stage>` when `log_dir` is given
    (one folder for every stage, so one `tensorboard --logdir` shows them side by side)."""

    def __init__(self, log_dir: str | Path | None = None) -> None:
        self.writer_class = _require("torch.utils.tensorboard", "tensorboard").SummaryWriter  # fail at set-up
        self.log_dir = log_dir
        self.writer: Any = None

    def target(self, distiller: Any) -> Path:
        if self.log_dir is not None:
            return Path(self.log_dir) / stage_name(distiller)
        if not getattr(distiller, "run_dir", None):
            raise BadInput("kdistill.trackers.TensorBoard: this Distiller has no run_dir to write into; "
                           "give TensorBoard(log_dir=...) or a run_dir")
        return Path(distiller.run_dir) / "tensorboard"

    def on_fit_start(self, distiller: Any) -> None:
        if not distiller.world.is_main:
            return
        done = epochs_done(distiller)
        # on resume, events of later epochs (written before the interruption) are purged by readers
        self.writer = self.writer_class(log_dir=str(self.target(distiller)), purge_step=done + 1 if done else None)

    def on_epoch_end(self, distiller: Any, record: dict[str, Any]) -> None:
        if self.writer is not None:
            for key, value in numeric_metrics(record).items():
                self.writer.add_scalar(key, value, record["epoch"])
            self.writer.flush()

    def on_fit_end(self, distiller: Any) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class MLflow(Callback):
    """One MLflow run per stage in `experiment` (MLflow's "Default" experiment when not given); where it
    writes: the module's docstring. Uses MLflow's client, not its global active run, so a run of the
    user's own that is active in the process is left alone."""

    def __init__(self, experiment: str | None = None, tracking_uri: str | None = None) -> None:
        self.mlflow = _require("mlflow", "mlflow-skinny")  # fail at set-up, not after the first stage
        self.experiment = experiment or "Default"
        self.tracking_uri = tracking_uri
        self.client: Any = None
        self.run_id: str | None = None  # kept in checkpoints: a resumed stage goes on in the same run

    def resolved_uri(self, distiller: Any) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return os.environ["MLFLOW_TRACKING_URI"]
        run_dir = getattr(distiller, "run_dir", None)
        if not run_dir:
            return self.mlflow.get_tracking_uri()
        root = experiment_dir(Path(run_dir))
        root.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{root / MLFLOW_DB}"

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        return found.experiment_id if found is not None else self.client.create_experiment(self.experiment)

    def _resumable(self) -> bool:
        if not self.run_id:
            return False
        try:
            self.client.get_run(self.run_id)
        except self.mlflow.exceptions.MlflowException:  # another store than the interrupted run's
            return False
        return True

    def on_fit_start(self, distiller: Any) -> None:
        if not distiller.world.is_main:
            return
        self.client = self.mlflow.MlflowClient(tracking_uri=self.resolved_uri(distiller))
        if self._resumable():
            self.client.update_run(self.run_id, status="RUNNING")
            return
        name = stage_name(distiller)
        tags = {"kdistill.stage": name}
        if getattr(distiller, "run_dir", None):
            tags["kdistill.run_dir"] = str(experiment_dir(Path(distiller.run_dir)))
        self.run_id = self.client.create_run(self._experiment_id(), run_name=name, tags=tags).info.run_id

    def on_epoch_end(self, distiller: Any, record: dict[str, Any]) -> None:
        if self.client is None:
            return
        # MLflow metric names take letters, digits and _ - . / and spaces: the record's keys qualify
        stamp = int(time.time() * 1000)
        metrics = [self.mlflow.entities.Metric(key, value, stamp, record["epoch"])
                   for key, value in numeric_metrics(record).items()]
        self.client.log_batch(self.run_id, metrics=metrics, synchronous=True)

    def on_fit_end(self, distiller: Any) -> None:
        if self.client is not None:
            self.client.set_terminated(self.run_id, status="FINISHED")
            self.client = None

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id or ""}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id") or None
