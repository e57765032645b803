"""Accuracy and cross-entropy of a model on a data set (the loop's validation and final test).

`acc` is top-1 accuracy; with more than 5 classes `acc_top5` (the label among the 5 largest
logits) comes alongside; `loss` is the mean cross-entropy. Labels are read as the training step reads
them (`class_labels`): float (B, C) rows of class probabilities score against each row's argmax, and
their cross-entropy is against the rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from kdistill.data.transforms import Normalize, to_float
from kdistill.engine.batch import call_model, class_labels, label_classes, logits_of, split_batch, to_device
from kdistill.engine.progress import length_of, progress_task


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    normalize: Normalize | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    progress: bool = False,
    description: str = "evaluating",
) -> dict[str, float]:
    """`progress` shows a bar over the batches (on the bar already live inside a training run)."""
    was_training = model.training
    model.eval()
    model.to(device)
    normalize = (normalize or Normalize(None, None)).to(device)
    correct, correct_top5, total, loss = 0.0, 0.0, 0, 0.0
    top5 = False
    with progress_task(progress, description, length_of(loader)) as advance:
        for batch in loader:
            inputs, labels, _ = split_batch(to_device(batch, device))
            if torch.is_tensor(inputs):
                inputs = normalize(to_float(inputs))
            with autocast():
                logits = logits_of(call_model(model, inputs)).float()
            labels = class_labels(labels, logits)
            classes = label_classes(labels)
            correct += float((logits.argmax(1) == classes).sum())
            if logits.shape[1] > 5:
                top5 = True
                correct_top5 += float((logits.topk(5, dim=1).indices == classes[:, None]).any(1).sum())
            loss += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
            total += labels.shape[0]
            advance()
    model.train(was_training)
    metrics = {"acc": correct / max(total, 1), "loss": loss / max(total, 1)}
    if top5:
        metrics["acc_top5"] = correct_top5 / max(total, 1)
    return metrics
