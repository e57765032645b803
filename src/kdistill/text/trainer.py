"""kdistill's methods inside a user's own `transformers.Trainer` set-up.

    trainer = DistillationTrainer(model=student, args=TrainingArguments(...), train_dataset=...,
                                  data_collator=..., teacher=teacher,
                                  methods=[SoftTarget(weight=0.7, temperature=2), HardLabel(weight=0.3),
                                           HiddenStateMSE(student_layers=4, teacher_layers=6)])
    trainer.train()

Everything else is the user's Trainer: arguments, collator, callbacks, evaluation, saving. The loss
of a training batch is `kdistill.engine.loss.DistillationLoss` (the same code as kdistill's own
loop): the teacher in eval mode without gradients, the student, the taps the methods ask for
(attached for the step and removed after), every method's weighted term. Methods' own parameters
(width adapters) are created from the first training batch and added to the optimizer as one more
parameter group without weight decay; they are not part of the saved student. Evaluation
(`model.eval()`) uses the model's own loss, so eval_loss stays comparable with a plain run. The
terms of the last logging window are logged as `kd/<term>` beside the Trainer's `loss`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import Trainer
from transformers.modeling_outputs import SequenceClassifierOutput

from kdistill.engine.loss import DistillationLoss
from kdistill.methods.base import Method
from kdistill.methods.logits import HardLabel, SoftTarget


class DistillationTrainer(Trainer):
    """A `transformers.Trainer` whose training loss is kdistill's distillation loss."""

    loss_is_scaled_for_ga = False  # a per-batch mean: the Trainer divides it under gradient accumulation

    def __init__(self, *args: Any, teacher: nn.Module | Sequence[nn.Module], methods: Sequence[Method] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kd_loss = DistillationLoss(teacher, self.model, list(methods or [SoftTarget(weight=0.9),
                                                                              HardLabel(weight=0.1)]))
        for participant in self.kd_loss.teachers:
            participant.model.to(self.args.device).eval()
        self._kd_built = False
        self._kd_sums: dict[str, float] = {}
        self._kd_steps = 0

    # the methods' parameters ---------------------------------------------------------------------------
    def _build_methods(self) -> None:
        """Size the methods' adapters on one training batch (before the optimizer exists)."""
        if self._kd_built:
            return
        batch = self._prepare_inputs(next(iter(self.get_train_dataloader())))
        inputs = dict(batch)
        labels = inputs.pop("labels", None)
        self.kd_loss.build(inputs, labels)
        self.kd_loss.methods.to(self.args.device)
        self._kd_built = True

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        self._build_methods()
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        own = [p for p in self.kd_loss.parameters() if p.requires_grad]
        known = {id(p) for group in optimizer.param_groups for p in group["params"]}
        fresh = [p for p in own if id(p) not in known]
        if fresh:
            optimizer.add_param_group({"params": fresh, "weight_decay": 0.0})
        return optimizer

    # the loss ------------------------------------------------------------------------------------------
    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> torch.Tensor | tuple[torch.Tensor, Any]:
        if not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if not self._kd_built:
            raise RuntimeError("DistillationTrainer: the methods were not built; train with trainer.train(), which "
                               "creates the optimizer (and the methods' adapters) first")
        features = dict(inputs)
        labels = features.pop("labels", None)
        with self.kd_loss:
            out = self.kd_loss(features, labels, student_module=model)
        for name, value in out.terms.items():
            self._kd_sums[name] = self._kd_sums.get(name, 0.0) + float(value.detach())
        self._kd_steps += 1
        if return_outputs:
            return out.loss, SequenceClassifierOutput(loss=out.loss, logits=out.student_logits)
        return out.loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if self._kd_steps and "loss" in logs:
            logs.update({f"kd/{name}": round(total / self._kd_steps, 6) for name, total in self._kd_sums.items()})
            self._kd_sums, self._kd_steps = {}, 0
        super().log(logs, *args, **kwargs)


__all__ = ["DistillationTrainer"]
