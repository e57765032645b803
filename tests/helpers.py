"""Test helpers shared by several test files."""

from __future__ import annotations

import torch

from kdistill.engine.callbacks import Callback
from kdistill.methods import Method


class StopAtStep(Method):
    """Asks the distiller to stop (as Ctrl-C does) once it has seen `stop_at` training steps."""

    name = "stop_at_step"
    needs_teacher = False

    def __init__(self, distiller_ref: list, stop_at: int) -> None:
        super().__init__(weight=0.0)
        self.distiller_ref, self.stop_at, self.seen = distiller_ref, stop_at, 0

    def loss_terms(self, ctx):
        if torch.is_grad_enabled():
            self.seen += 1
            if self.seen == self.stop_at:
                self.distiller_ref[0].request_stop()
        return ctx.student_logits.sum() * 0


class RequestStopAt(Callback):
    """Asks the distiller to stop (as Ctrl-C does) at the end of optimiser step `stop_at` (never with None)."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.stop_at = stop_at

    def on_step_end(self, distiller, step_info):
        if step_info.global_step == self.stop_at:
            distiller.request_stop()


class StepCounter(Callback):
    """A stateful callback: counts optimiser steps and sums the loss; its state must survive resume."""

    def __init__(self) -> None:
        self.steps, self.loss_sum, self.evaluations = 0, torch.zeros(()), 0

    def on_step_end(self, distiller, step_info):
        self.steps += 1
        self.loss_sum = self.loss_sum + step_info.terms["loss"].detach().cpu().double()

    def on_evaluate(self, distiller, metrics):
        self.evaluations += 1

    def state_dict(self):
        return {"steps": self.steps, "loss_sum": self.loss_sum.clone(), "evaluations": self.evaluations}

    def load_state_dict(self, state):
        self.steps, self.loss_sum, self.evaluations = state["steps"], state["loss_sum"], state["evaluations"]


def scheduled_lrs(settings, epochs: int, steps_per_epoch: int, lr: float = 0.1) -> list[float]:
    """The learning rate of every optimiser step, the scheduler stepped after each as the loop does."""
    from kdistill.engine.optim import build_scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = build_scheduler(optimizer, settings, epochs, steps_per_epoch)
    lrs = []
    for _ in range(epochs * steps_per_epoch):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


class StageSteps(Callback):
    """Counts the optimiser steps it sees; each fit's end logs (its id, its count) in `StageSteps.log`."""

    log: list[tuple[int, int]] = []

    def __init__(self) -> None:
        self.steps = 0

    def on_step_end(self, distiller, step_info):
        self.steps += 1

    def on_fit_end(self, distiller):
        StageSteps.log.append((id(self), self.steps))

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]
