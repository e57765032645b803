"""The training engine: one loop, checkpoints, seeding, batching."""

from kdistill.engine.distiller import (
           Distiller,
           Participant,
           TrainingInterrupted,
           evaluate_model,
           resolve_device,
)
from kdistill.engine.loss import DistillationLoss, LossOutput
from kdistill.engine.optim import OptimizerSettings, ScheduleSettings

__all__ = ["DistillationLoss", "Distiller", "LossOutput", "OptimizerSettings", "Participant", "ScheduleSettings",
           "TrainingInterrupted", "evaluate_model", "resolve_device"]
