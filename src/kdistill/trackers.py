"""Experiment tracking as extras, off by default: TensorBoard and MLflow, as training callbacks.

kdistill's own record of a run is `metrics.jsonl` (and the reports built from it); these send the
same per-epoch records to a tracker as well, where a team already uses one. Neither package is a
dependency: ask for one in the experiment file, and install it (`pip install tensorboard` / `mlflow`):

    training:
      callbacks:
        - {name: kdistill.trackers:TensorBoard}                 # <stage dir>/tensorboard
        - {name: kdistill.trackers:MLflow, experiment: kd}      # MLFLOW_TRACKING_URI, else ./mlruns

Each stage (teacher, scratch student, distilled student) is logged as its own TensorBoard folder /
MLflow run, named after the stage. Every numeric entry of the epoch record is logged at step =
epoch; only the main process writes.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from kdistill.engine.callbacks import Callback
from kdistill.errors import BadInput

SKIPPED = ("epoch", "stage")


def numeric_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The entries of an epoch record a tracker plots (numbers, not the epoch counter or the stage)."""
    return {k: float(v) for k, v in record.items()
            if k not in SKIPPED and isinstance(v, int | float) and not isinstance(v, bool)}


def _require(module: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise BadInput(f"training.callbacks: kdistill.trackers needs {package}, which is not installed; "
                       f"pip install {package}, or remove the callback") from None


def _stage_name(distiller: Any) -> str:
    run_dir = getattr(distiller, "run_dir", None)
    return Path(run_dir).name if run_dir else "stage"


class TensorBoard(Callback):
    """Scalars per epoch into `log_dir/<stage>` (default: the stage directory's `tensorboard/`)."""

    def __init__(self, log_dir: str | None = None) -> None:
        self.log_dir = log_dir
        self.writer: Any = None

    def on_fit_start(self, distiller: Any) -> None:
        if not distiller.world.is_main:
            return
        writer_class = _require("torch.utils.tensorboard", "tensorboard").SummaryWriter
        if self.log_dir is not None:
            target = Path(self.log_dir) / _stage_name(distiller)
        else:
            target = Path(distiller.run_dir or ".") / "tensorboard"
        self.writer = writer_class(log_dir=str(target))

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
    """One MLflow run per stage in `experiment` (MLflow's default experiment when not given)."""

    def __init__(self, experiment: str | None = None, tracking_uri: str | None = None) -> None:
        self.experiment = experiment
        self.tracking_uri = tracking_uri
        self.mlflow: Any = None

    def on_fit_start(self, distiller: Any) -> None:
        if not distiller.world.is_main:
            return
        self.mlflow = _require("mlflow", "mlflow")
        if self.tracking_uri:
            self.mlflow.set_tracking_uri(self.tracking_uri)
        if self.experiment:
            self.mlflow.set_experiment(self.experiment)
        self.mlflow.start_run(run_name=_stage_name(distiller))

    def on_epoch_end(self, distiller: Any, record: dict[str, Any]) -> None:
        if self.mlflow is not None:
            # MLflow metric names take letters, digits and _ - . / and spaces: the record's keys qualify
            self.mlflow.log_metrics(numeric_metrics(record), step=record["epoch"])

    def on_fit_end(self, distiller: Any) -> None:
        if self.mlflow is not None:
            self.mlflow.end_run()
            self.mlflow = None
