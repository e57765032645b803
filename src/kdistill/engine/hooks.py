"""What runs around the training step: user callbacks, the EMA of the student's weights, evaluation
and checkpoints every N optimiser steps, the best checkpoint and early stopping.

The loop calls `build` in its set-up, `start` before the first step, `step_end` after every
optimiser step, `epoch_end` with each epoch's record, and `finish` at the end of the fit; the
order of events is in `callbacks.py`. `state_dict()` is everything here that a resumed run needs
(callback states, EMA weights, best value, early-stopping counter): it goes into the training
checkpoint.

    training:
      eval_every_steps: 200          # Distiller(..., eval_every_steps=200, checkpoint_every_steps=1000)
      checkpoint_every_steps: 1000

Steps are optimiser steps (with gradient accumulation, one per group of batches), counted from the
start of training. Evaluations between epoch ends go to `evaluations.jsonl` in the run directory
(one JSON object a line: stage, epochs done as a fraction, optimiser step, `val/*`) and to
`on_evaluate`; the best checkpoint reads them too. The epoch-end evaluation is in the epoch's
record (`metrics.jsonl`, `history`). At the last step of an epoch no separate evaluation or
checkpoint is made: the epoch end makes them. A periodic checkpoint is `checkpoints/last.pt`
written mid-epoch, as on Ctrl-C, so a crashed run resumes from the last one exactly; evaluations
logged after it are dropped from `evaluations.jsonl` on resume (they are made again).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from kdistill.engine.callbacks import StepInfo, callbacks_state, fire, load_callbacks_state
from kdistill.engine.checkpoint import atomic_save
from kdistill.engine.distributed import broadcast_object, broadcast_tensors, reduce_sums
from kdistill.engine.ema import EMASettings, ModelEMA
from kdistill.engine.metrics_log import append_record
from kdistill.engine.tracking import EarlyStopper, EarlyStoppingSettings, MetricGoal, MetricTracker, metric_value
from kdistill.errors import TrainingDiverged

if TYPE_CHECKING:
    from kdistill.engine.distiller import Distiller

LOG = logging.getLogger("kdistill")
POSITION_KEYS = ("stage", "epoch", "step")  # of an evaluation's metrics, besides the metrics themselves


def check_finite_loss(distiller: Distiller, loss: float | None, when: str) -> None:
    """Stop with what to look at when the mean training loss is NaN or infinite: training on would
    fill every later checkpoint, metric and `student.pt` with NaN and still exit 0. Checked before
    every checkpoint the loop writes (an epoch's, and a periodic one), so none holds those weights.
    Under fp16's loss scaler a non-finite step is skipped, not taken: there the weights decide."""
    if loss is None or math.isfinite(loss):
        return
    if distiller.scaler is not None and finite_weights(distiller.student.model):
        return
    path = distiller.checkpoint_path
    kept = (f"; {path}, written before, is intact" if path is not None and path.exists() else
            "; no checkpoint was written before it")
    raise TrainingDiverged(
        f"{distiller.description}: the training loss is {loss} {when}, so the student's weights are no longer "
        "usable. Look for NaN or inf in the inputs or labels (or a zero std in a normalisation), or lower the "
        f"learning rate or clip the gradients (grad_clip){kept}")


def finite_weights(model: nn.Module) -> bool:
    flags = [torch.isfinite(p).all() for p in model.parameters()]
    return bool(torch.stack(flags).all()) if flags else True


def running_loss(sums: dict[str, Any]) -> float | None:
    """The mean loss of an epoch so far, from the loop's running sums (`loss` summed per sample)."""
    if "loss" not in sums or "samples" not in sums:
        return None
    return float(sums["loss"]) / max(float(sums["samples"]), 1.0)


class TrainingHooks:
    def __init__(self, callbacks: Sequence[Any] = (), *, eval_every_steps: int | None = None,
                 checkpoint_every_steps: int | None = None, best_metric: MetricGoal | str | dict | None = None,
                 early_stopping: EarlyStoppingSettings | dict | None = None,
                 ema: EMASettings | float | dict | None = None) -> None:
        for name, value in (("eval_every_steps", eval_every_steps), ("checkpoint_every_steps", checkpoint_every_steps)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (got {value})")
        self.callbacks = list(callbacks)
        self.eval_every_steps, self.checkpoint_every_steps = eval_every_steps, checkpoint_every_steps
        self.best_goal: MetricGoal | None = MetricGoal.coerce(best_metric)
        self.early_settings: EarlyStoppingSettings | None = EarlyStoppingSettings.coerce(early_stopping)
        self.ema_settings = EMASettings.coerce(ema)
        self.ema: ModelEMA | None = None
        self.best: MetricTracker | None = None
        self.early: EarlyStopper | None = None

    def build(self, student: nn.Module) -> None:
        """Fresh state for a fit (a resume then loads the saved one); before the taps are attached."""
        self.ema = ModelEMA(student, self.ema_settings) if self.ema_settings is not None else None
        self.best = MetricTracker(self.best_goal) if self.best_goal is not None else None
        self.early = EarlyStopper(self.early_settings) if self.early_settings is not None else None

    def fire(self, event: str, distiller: Distiller, *args: Any) -> None:
        fire(self.callbacks, event, distiller, *args)

    @property
    def stopped(self) -> bool:
        """Early stopping has ended training."""
        return self.early is not None and self.early.stopped

    def evaluated_model(self, student: nn.Module) -> nn.Module:
        return self.ema.module if self.ema is not None else student

    # the fit ------------------------------------------------------------------------------------------
    def start(self, distiller: Distiller, val: Any, resumed_step: int | None) -> None:
        watched = [(n, g.metric) for n, g in (("best_metric", self.best_goal), ("early_stopping", self.early_settings))
                   if g is not None]
        for name, metric in watched:
            if metric.startswith("val/") and val is None:
                raise ValueError(f"{name}: '{metric}' needs a validation set; pass val to fit()")
        if self.eval_every_steps and val is None and distiller.world.is_main:
            LOG.warning("kdistill: eval_every_steps is set, but fit() has no validation set: nothing is evaluated")
        log = self._evaluations_log(distiller)
        if log is not None and (resumed_step is None or log.exists()):
            # evaluations after the checkpoint resumed from (a crash) will be made again
            kept = [] if resumed_step is None else [line for line in log.read_text().splitlines()
                                                    if line.strip() and json.loads(line)["step"] <= resumed_step]
            log.write_text("".join(line + "\n" for line in kept))
        self.fire("on_fit_start", distiller)

    def finish(self, distiller: Distiller) -> None:
        """The final student: with the EMA on, the averaged weights; every rank with rank 0's buffers."""
        if self.ema is not None:
            distiller.student.model.load_state_dict(self.ema.module.state_dict())
        if distiller.world.distributed:
            # DDP keeps parameters equal; BatchNorm statistics updated in the last forward are per
            # rank: every rank leaves fit() with rank 0's, the ones that are saved
            broadcast_tensors(list(distiller.student.model.buffers()))

    # after an optimiser step --------------------------------------------------------------------------
    def step_end(self, distiller: Distiller, info: StepInfo, val: Any, running: dict[str, Any]) -> None:
        if self.ema is not None:
            self.ema.update(distiller.student.model)
        self.fire("on_step_end", distiller, info)
        if info.batch == info.batches:  # the epoch's end evaluates and checkpoints
            return
        if val is not None and self.eval_every_steps and info.global_step % self.eval_every_steps == 0:
            metrics = self.evaluate(distiller, val, info.epoch + info.batch / info.batches, info.global_step)
            self._track_best(distiller, metrics)
            log = self._evaluations_log(distiller)
            if log is not None:
                with open(log, "a") as handle:
                    handle.write(json.dumps(metrics) + "\n")
        if self.checkpoint_every_steps and info.global_step % self.checkpoint_every_steps == 0:
            sums = reduce_sums(running, distiller.device)
            check_finite_loss(distiller, running_loss(sums), f"in epoch {info.epoch + 1} (step {info.global_step})")
            distiller.save_checkpoint(info.epoch, info.batch, sums)

    def evaluate(self, distiller: Distiller, val: Any, epoch: float, step: int) -> dict[str, Any]:
        metrics = {"stage": distiller.description, "epoch": epoch, "step": step}
        metrics.update({f"val/{k}": v for k, v in distiller.evaluate(val).items()})
        self.fire("on_evaluate", distiller, metrics)
        return metrics

    # an epoch's end -----------------------------------------------------------------------------------
    def epoch_end(self, distiller: Distiller, record: dict[str, Any], val: Any, step: int) -> None:
        """Validation metrics into the record; best checkpoint; early stopping; history and log; on_epoch_end.
        A loss that is no longer finite stops the run first (read once an epoch: no per-step sync)."""
        check_finite_loss(distiller, record.get("train/loss"), f"in epoch {record['epoch']}")
        if val is not None:
            metrics = self.evaluate(distiller, val, record["epoch"], step)
            record.update({k: v for k, v in metrics.items() if k not in POSITION_KEYS})
        self._track_best(distiller, record, step, required=True)
        if self.early is not None:
            stop = self.early.update(metric_value(record, self.early.settings.metric, "early_stopping.metric"))
            self.early.stopped = bool(broadcast_object(stop))  # rank 0 decides: every rank stops together
            if self.early.stopped:
                record["early_stopped"] = True
                LOG.info("%s: early stopping after epoch %d: %s did not improve for %d epochs (best %.6g)",
                         distiller.description, record["epoch"], self.early.settings.metric,
                         self.early.settings.patience, self.early.tracker.best)
        distiller.history.append(record)
        if distiller.run_dir is not None and distiller.world.is_main:
            append_record(distiller.run_dir, record)
        self.fire("on_epoch_end", distiller, record)

    def _track_best(self, distiller: Distiller, metrics: dict[str, Any], step: int | None = None,
                    required: bool = False) -> None:
        if self.best is None or (self.best.goal.metric not in metrics and not required):
            return
        if self.best.update(metric_value(metrics, self.best.goal.metric, "best_metric")) and \
                distiller.run_dir is not None and distiller.world.is_main:
            payload = {"student": self.evaluated_model(distiller.student.model).state_dict(),
                       "metric": self.best.goal.metric, "value": self.best.best, "epoch": metrics["epoch"],
                       "step": metrics.get("step", step)}
            atomic_save(payload, distiller.run_dir / "checkpoints" / "best.pt")

    def _evaluations_log(self, distiller: Distiller) -> Path | None:
        if self.eval_every_steps and distiller.run_dir is not None and distiller.world.is_main:
            return distiller.run_dir / "evaluations.jsonl"
        return None

    # checkpoint state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        if self.callbacks:
            state["callbacks"] = callbacks_state(self.callbacks)
        for key, part in (("ema", self.ema), ("best", self.best), ("early_stopping", self.early)):
            if part is not None:
                state[key] = part.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_callbacks_state(self.callbacks, state.get("callbacks", []))
        for key, part in (("ema", self.ema), ("best", self.best), ("early_stopping", self.early)):
            if part is not None:
                if key not in state:
                    raise ValueError(f"the checkpoint has no {key} state: its run was started without it; "
                                     "resume with the settings it was started with")
                part.load_state_dict(state[key])


__all__ = ["StepInfo", "TrainingHooks"]
