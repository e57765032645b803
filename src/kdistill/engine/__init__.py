"""The training engine: one loop, checkpoints, seeding, batching."""

from kdistill.engine.callbacks import Callback, StepInfo
from kdistill.engine.distiller import (
           Distiller,
           Participant,
           TrainingInterrupted,
           evaluate_model,
           resolve_device,
)
from kdistill.engine.ema import EMASettings
from kdistill.engine.loss import DistillationLoss, LossOutput
from kdistill.engine.optim import OptimizerSettings, ScheduleSettings
from kdistill.engine.tracking import EarlyStoppingSettings, MetricGoal

__all__ = ["Callback", "DistillationLoss", "Distiller", "EMASettings", "EarlyStoppingSettings", "LossOutput",
           "MetricGoal", "OptimizerSettings", "Participant", "ScheduleSettings", "StepInfo", "TrainingInterrupted",
           "evaluate_model", "resolve_device"]
