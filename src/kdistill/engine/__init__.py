"""The training engine: one loop, checkpoints, seeding, batching."""

from kdistill.engine.distiller import (
           Distiller,
           Participant,
           TrainingInterrupted,
           evaluate_model,
           resolve_device,
)
from kdistill.engine.optim import OptimizerSettings, ScheduleSettings

__all__ = ["Distiller", "OptimizerSettings", "Participant", "ScheduleSettings", "TrainingInterrupted",
           "evaluate_model", "resolve_device"]
