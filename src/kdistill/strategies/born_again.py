"""Born-again networks (Furlanello et al. 2018, arXiv:1805.04770): generation k+1 learns from generation k.

Every generation has the same architecture and a fresh initialisation (`make_student()` called
after seeding the global RNG from (seed, generation), so generations differ and reruns agree).
Generation 1 learns from `initial_teacher`, or from the labels when there is none; generation
k+1 from generation k. The paper trains each generation to match its teacher's output
distribution; the default `ban_methods` does the same (KL to the teacher at T = 1, no label term)
and uses cross-entropy on labels for a teacher-less first generation. The ensemble of the
generations (mean of their probabilities, the paper's "BAN ensemble") is `ensemble_logits` /
`evaluate_ensemble`.

    result = born_again(lambda: build_model("resnet20", 10, (3, 32, 32)), train, val, generations=3,
                        run_dir="runs/ban", epochs=30, distiller_kwargs={"seed": 0, ...})
    result.generations        # [gen 1, gen 2, gen 3], trained (or loaded when resumed)
    result.teacher_of         # [None, 'generation-1', 'generation-2']

Each generation lives in `run_dir/generation-k/` (see `kdistill.strategies.stages` for the layout
and how a rerun with `resume=True` skips finished generations and continues an interrupted one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from kdistill.data.base import as_in_memory, batch_collate
from kdistill.data.transforms import as_normalize, to_float
from kdistill.engine import Distiller
from kdistill.engine.batch import call_model, class_labels, label_classes, logits_of, split_batch, to_device
from kdistill.methods.base import Method
from kdistill.methods.logits import HardLabel, SoftTarget
from kdistill.strategies.stages import ChainResult, ChainStage, MethodsFactory, run_chain


def generation_name(generation: int) -> str:
    """The folder of generation `generation` (1-based)."""
    return f"generation-{generation}"


def ban_methods(index: int, has_teacher: bool) -> list[Method]:
    """Born-again defaults: match the teacher's distribution (T = 1); labels only without a teacher."""
    return [SoftTarget(weight=1.0, temperature=1.0)] if has_teacher else [HardLabel()]


def kd_methods(index: int, has_teacher: bool) -> list[Method]:
    """Hinton's recipe as the toolkit's CIFAR default: 0.9 * KD at T = 4 + 0.1 * CE; CE alone without a teacher."""
    return [SoftTarget(weight=0.9, temperature=4.0), HardLabel(weight=0.1)] if has_teacher else [HardLabel()]


@dataclass
class BornAgainResult(ChainResult):
    @property
    def generations(self) -> list[nn.Module]:
        return self.models

    def evaluate_ensemble(self, data: Any, normalization: Any = None, upto: int | None = None,
                          device: str | torch.device = "cpu") -> dict[str, float]:
        """Accuracy / NLL of the mean-probability ensemble of generations 1..upto (all by default)."""
        return evaluate_ensemble(self.generations[:upto], data, normalization, device=device)


def _epochs_list(epochs: int | Sequence[int], count: int, what: str) -> list[int]:
    values = [epochs] * count if isinstance(epochs, int) else list(epochs)
    if len(values) != count:
        raise ValueError(f"epochs: {len(values)} values for {count} {what}")
    return values


def born_again(
    make_student: Callable[[], nn.Module],
    train: Any,
    val: Any = None,
    generations: int = 3,
    run_dir: str | Path = "born-again",
    *,
    epochs: int | Sequence[int] = 10,
    initial_teacher: nn.Module | Sequence[nn.Module] | None = None,
    teacher_normalization: Any = None,
    teacher_aggregator: Callable | None = None,
    methods_factory: MethodsFactory = ban_methods,
    distiller_kwargs: dict[str, Any] | None = None,
    resume: bool = False,
    callback: Callable[[str, Distiller], None] | None = None,
) -> BornAgainResult:
    """Train `generations` generations of `make_student()`, each distilled from the one before.

    - `epochs`: one number for all generations, or one per generation;
    - `initial_teacher` (optional, with its `teacher_normalization`; a list with a
      `teacher_aggregator` for an ensemble) teaches generation 1, which otherwise learns from labels;
    - `methods_factory(index, has_teacher)`: the methods of generation index + 1 (default `ban_methods`);
    - `distiller_kwargs`: passed to each generation's `Distiller` (optimizer, schedule, batch_size,
      seed, augment, student_normalization, device, progress, ...);
    - `resume`: continue a run directory (finished generations are loaded, an interrupted one resumes);
    - `callback(stage_name, distiller)`: called before each generation trains.
    """
    if not isinstance(generations, int) or isinstance(generations, bool) or generations < 1:
        raise ValueError(f"generations: must be an integer >= 1 (got {generations!r})")
    stages = [ChainStage(generation_name(k + 1), make_student, e)
              for k, e in enumerate(_epochs_list(epochs, generations, "generations"))]
    chain = run_chain(stages, train, val, run_dir, methods_factory, first_teacher=initial_teacher,
                      first_teacher_name="initial-teacher", teacher_normalization=teacher_normalization,
                      teacher_aggregator=teacher_aggregator, distiller_kwargs=distiller_kwargs, resume=resume,
                      callback=callback)
    return BornAgainResult(chain.run_dir, chain.stages)


# ensembles ------------------------------------------------------------------------------------------
def _eval_loader(data: Dataset | DataLoader, batch_size: int) -> DataLoader:
    if isinstance(data, DataLoader):
        return data
    return DataLoader(as_in_memory(data), batch_size=batch_size, shuffle=False, collate_fn=batch_collate)


@torch.no_grad()
def ensemble_logits(models: Sequence[nn.Module], data: Dataset | DataLoader, normalization: Any = None,
                    device: str | torch.device = "cpu", batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """(log of the mean of the models' probabilities (N, C), labels (N,)) over `data`, in order.

    `normalization` is one `Normalize` / (mean, std) for all models or one per model. The result
    is a log-probability: its argmax is the ensemble's prediction, exp() its distribution.
    """
    if not models:
        raise ValueError("an ensemble needs at least one model")
    norms = [as_normalize(n) for n in normalization] if isinstance(normalization, list) \
        else [as_normalize(normalization)] * len(models)
    if len(norms) != len(models):
        raise ValueError(f"{len(models)} models but {len(norms)} normalisations")
    device = torch.device(device)
    norms = [n.to(device) for n in norms]
    modes = [m.training for m in models]
    for model in models:
        model.to(device).eval()
    outputs, all_labels = [], []
    try:
        for batch in _eval_loader(data, batch_size):
            inputs, labels, _ = split_batch(to_device(batch, device))
            log_probs = []
            for model, norm in zip(models, norms, strict=True):
                model_inputs = norm(to_float(inputs)) if torch.is_tensor(inputs) else inputs
                log_probs.append(F.log_softmax(logits_of(call_model(model, model_inputs)).float(), dim=1))
            stacked = torch.stack(log_probs)
            outputs.append(torch.logsumexp(stacked, dim=0) - torch.log(torch.tensor(float(len(models)))))
            if labels is not None:  # class ids; probability rows (one-hot, soft) read as their argmax
                all_labels.append(label_classes(class_labels(labels, outputs[-1])))
    finally:
        for model, mode in zip(models, modes, strict=True):
            model.train(mode)
    labels = torch.cat(all_labels) if all_labels else torch.empty(0, dtype=torch.long)
    return torch.cat(outputs), labels


def evaluate_ensemble(models: Sequence[nn.Module], data: Dataset | DataLoader, normalization: Any = None,
                      device: str | torch.device = "cpu", batch_size: int = 512) -> dict[str, float]:
    """Accuracy and negative log-likelihood of the mean-probability ensemble of `models`."""
    log_probs, labels = ensemble_logits(models, data, normalization, device, batch_size)
    if labels.numel() == 0:
        raise ValueError("evaluating an ensemble needs labelled data")
    return {"acc": float((log_probs.argmax(1) == labels).float().mean()),
            "loss": float(F.nll_loss(log_probs, labels))}


__all__ = ["BornAgainResult", "ban_methods", "born_again", "ensemble_logits", "evaluate_ensemble",
           "generation_name", "kd_methods"]
