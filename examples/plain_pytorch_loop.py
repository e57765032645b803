"""kdistill inside your own training loop: plain PyTorch, no Distiller.

Your models, your data loader, your optimiser and loop; kdistill gives the distillation loss of a
batch (teacher in eval mode without gradients, taps on any layer by name, every method's weighted
term) and removes its hooks when you are done. Here: the 8x8 digits that ship with kdistill, a small
CNN teacher trained in a plain loop, then one MLP student trained twice, from the labels and by distillation
(soft targets at T=4 mixed with the labels; `hint_weight` adds a FitNets-style hint from the
teacher's conv features into the student's hidden layer, through a learned adapter). Run from the
repository root:

    python examples/plain_pytorch_loop.py
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from kdistill import DistillationLoss, methods
from kdistill.data import load_digits_bundle


def digits_loaders(seed: int) -> tuple[DataLoader, DataLoader]:
    """The digits as plain tensors: kdistill's fixed stratified 75/25 split, pixels in [0, 1]."""
    bundle = load_digits_bundle()
    x_train, y_train, x_test, y_test = bundle.train.inputs, bundle.train.labels, bundle.test.inputs, bundle.test.labels
    generator = torch.Generator().manual_seed(seed)
    return (DataLoader(TensorDataset(x_train, y_train), batch_size=64, shuffle=True, generator=generator),
            DataLoader(TensorDataset(x_test, y_test), batch_size=512))


def make_teacher() -> nn.Module:
    return nn.Sequential(
        Standardize(),
        nn.Conv2d(1, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1, bias=False), nn.BatchNorm2d(128), nn.ReLU(), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))


def make_student() -> nn.Module:
    return nn.Sequential(Standardize(), nn.Flatten(), nn.Linear(64, 24), nn.ReLU(), nn.Linear(24, 10))


class Standardize(nn.Module):
    """Pixels in [0, 1] -> roughly zero mean, unit variance (the training set's statistics)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.3) / 0.4


@torch.no_grad()
def accuracy(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in loader)
    return 100.0 * correct / len(loader.dataset)


def train_teacher(train: DataLoader, epochs: int = 20) -> nn.Module:
    teacher = make_teacher()
    optimizer = torch.optim.AdamW(teacher.parameters(), lr=3e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * len(train))
    for _ in range(epochs):
        teacher.train()
        for x, y in train:
            optimizer.zero_grad()
            F.cross_entropy(teacher(x), y).backward()
            optimizer.step()
            scheduler.step()
    return teacher.eval()


def train_student(train: DataLoader, teacher: nn.Module | None, epochs: int = 60,
                  hint_weight: float = 0.0) -> nn.Module:
    student = make_student()
    loss_fn = None
    parameters = list(student.parameters())
    if teacher is not None:
        terms = [methods.SoftTarget(weight=0.9, temperature=4.0), methods.HardLabel(weight=0.1)]
        if hint_weight:
            # the student's hidden layer ("4", the ReLU) regresses the teacher's pooled conv features
            # ("10": 128 channels) through a learned linear adapter
            terms.append(methods.Hint(student_layer="4", teacher_layer="10", weight=hint_weight))
        loss_fn = DistillationLoss(teacher, student, terms)
        x, y = next(iter(train))
        loss_fn.build(x, y)  # sizes a feature method's adapter from a batch
        parameters += list(loss_fn.parameters())  # adapters train with the student
    optimizer = torch.optim.SGD(parameters, lr=0.05, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * len(train))
    with loss_fn if loss_fn is not None else contextlib.nullcontext():  # taps attached inside, removed after
        for _ in range(epochs):
            student.train()
            for x, y in train:
                loss = loss_fn(x, y).loss if loss_fn is not None else F.cross_entropy(student(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
    return student


def main(seed: int = 0) -> dict[str, float]:
    torch.manual_seed(seed)
    train, test = digits_loaders(seed)
    teacher = train_teacher(train)
    torch.manual_seed(seed + 1)
    scratch = train_student(train, None)
    torch.manual_seed(seed + 1)
    distilled = train_student(train, teacher)
    return {"teacher": accuracy(teacher, test), "scratch": accuracy(scratch, test),
            "distilled": accuracy(distilled, test)}


if __name__ == "__main__":
    torch.set_num_threads(1)
    for name, value in main().items():
        print(f"{name:>10}: {value:.2f} % test accuracy")
