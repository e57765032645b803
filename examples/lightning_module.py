"""kdistill inside PyTorch Lightning: a LightningModule whose training loss is `DistillationLoss`.

Lightning keeps its loop, devices, logging and checkpoints; kdistill gives the loss of a batch
(teacher in eval mode without gradients, taps by layer name, each method's weighted term, logged
one by one) and removes its hooks when fitting ends. Needs the `lightning` extra
(`pip install -e '.[lightning]'`). Run from the repository root:

    python examples/lightning_module.py
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from kdistill import DistillationLoss, methods


class DistilledStudent(L.LightningModule):
    """Trains `student` from `teacher`; `example_batch` sizes the methods' adapters before the
    optimiser is configured."""

    def __init__(self, teacher: nn.Module, student: nn.Module, example_batch: tuple[torch.Tensor, torch.Tensor],
                 lr: float = 0.05, epochs: int = 20) -> None:
        super().__init__()
        self.student = student
        self.teacher = teacher.requires_grad_(False)  # registered, so Lightning moves it to the device
        self.loss_fn = DistillationLoss(teacher, student, [
            methods.SoftTarget(weight=0.9, temperature=4.0),
            methods.HardLabel(weight=0.1),
        ])
        self.loss_fn.build(*example_batch)
        self.lr, self.epochs = lr, epochs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)

    def on_fit_start(self) -> None:
        self.loss_fn.attach()

    def on_fit_end(self) -> None:
        self.loss_fn.detach()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        out = self.loss_fn(x, y)  # the teacher runs in eval mode even though Lightning set train()
        self.log_dict({f"train/{name}": value for name, value in out.terms.items()}, on_epoch=True)
        return out.loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val/acc", (self.student(x).argmax(1) == y).float().mean(), on_epoch=True)

    def configure_optimizers(self):
        # the student's and the methods' parameters (adapters), never the teacher's
        parameters = [*self.student.parameters(), *self.loss_fn.parameters()]
        optimizer = torch.optim.SGD(parameters, lr=self.lr, momentum=0.9, weight_decay=5e-4)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, self.epochs)
        return [optimizer], [scheduler]


def main(seed: int = 0, epochs: int = 30) -> dict[str, float]:
    import plain_pytorch_loop as plain  # the same data and models as the plain-PyTorch example

    L.seed_everything(seed, verbose=False)
    train, test = plain.digits_loaders(seed)
    teacher = plain.train_teacher(train)
    module = DistilledStudent(teacher, plain.make_student(), next(iter(train)), epochs=epochs)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, train, test)
    return {"teacher": plain.accuracy(teacher, test), "distilled": plain.accuracy(module.student, test)}




if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    torch.set_num_threads(1)
    for name, value in main().items():
        print(f"{name:>10}: {value:.2f} % test accuracy")
