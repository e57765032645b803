"""kdistill: knowledge distillation for PyTorch models.

    from kdistill import Distiller, methods
    distiller = Distiller(teacher, student, [methods.SoftTarget(temperature=4, weight=0.9),
                                             methods.HardLabel(weight=0.1)])
    distiller.fit(train_set, val_set, epochs=30)
"""

from kdistill import methods
from kdistill.engine import (
    Callback,
    DistillationLoss,
    Distiller,
    EarlyStoppingSettings,
    EMASettings,
    MetricGoal,
    OptimizerSettings,
    ScheduleSettings,
    StepInfo,
    TrainingInterrupted,
)

__version__ = "0.1.0"
__all__ = ["Callback", "DistillationLoss", "Distiller", "EMASettings", "EarlyStoppingSettings", "MetricGoal",
           "OptimizerSettings", "ScheduleSettings", "StepInfo", "TrainingInterrupted", "methods"]
