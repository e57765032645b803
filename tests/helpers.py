"""Test helpers shared by several test files."""

from __future__ import annotations

import torch

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
