"""An exponential moving average (EMA) of the student's weights.

    training:
      ema: {decay: 0.999}          # or ema: 0.999; warmup: true ramps the decay in

    Distiller(..., ema=EMASettings(decay=0.999))   # or ema=0.999

After every optimiser step each floating-point parameter and buffer (BatchNorm statistics too) of
a copy of the student moves towards the student's: `ema = decay * ema + (1 - decay) * student`;
integer buffers (BatchNorm's step counter) are copied. With `warmup` the decay of update n is
`min(decay, (1 + n) / (10 + n))`, so the average forgets the initial weights early in short runs.

When the EMA is on, it is what the run evaluates (`val/*` metrics, the best checkpoint) and what
it ends with: `fit()` copies the EMA weights into the student, so the in-memory student and
`student.pt` are the average; the raw weights are in `checkpoints/last.pt`. The EMA and its
update count are in every training checkpoint, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn


class EMASettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    decay: float = Field(0.999, gt=0, lt=1)
    warmup: bool = False  # decay min(decay, (1 + n) / (10 + n)) at update n

    @model_validator(mode="before")
    @classmethod
    def _number(cls, data: Any) -> Any:
        if isinstance(data, int | float) and not isinstance(data, bool):
            return {"decay": data}
        return data

    @classmethod
    def coerce(cls, value: EMASettings | float | dict | None) -> EMASettings | None:
        return value if value is None or isinstance(value, EMASettings) else cls.model_validate(value)


class ModelEMA:
    """A frozen copy of `model` (make it before taps are attached) averaged by `update(model)`."""

    def __init__(self, model: nn.Module, settings: EMASettings) -> None:
        self.settings = settings
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    def decay(self) -> float:
        if self.settings.warmup:
            return min(self.settings.decay, (1 + self.updates) / (10 + self.updates))
        return self.settings.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        # parameters() and buffers() skip shared tensors once, and the copy has the same structure
        averaged = [*self.module.parameters(), *self.module.buffers()]
        live = [*model.parameters(), *model.buffers()]
        weight = 1.0 - self.decay()
        floats = [(a, b) for a, b in zip(averaged, live, strict=True) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [b.detach() for _, b in floats], weight)
        for a, b in zip(averaged, live, strict=True):
            if not a.is_floating_point():
                a.copy_(b)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.settings.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


__all__ = ["EMASettings", "ModelEMA"]
