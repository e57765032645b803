"""Noisy labels on purpose: corrupt a share of the TRAINING labels, to measure how distillation copes.

    data:
      label_noise: {rate: 0.2, kind: symmetric, seed: 0}
      label_noise: {rate: 0.4, kind: pairs, pairs: {3: 8, 8: 3, 1: 7}}   # class-dependent: 3 -> 8, ...
      label_noise: {kind: matrix, matrix: [[0.8, 0.2], [0.1, 0.9]]}      # row i: P(noisy label | true i)

- `symmetric`: exactly round(rate * n) samples, drawn at random, get a label drawn uniformly from
  the OTHER classes (so every chosen label really changes and the realised rate is the rate asked).
- `pairs`: for each class c named in `pairs`, exactly round(rate * n_c) of its samples are given the
  label `pairs[c]` (the "asymmetric" noise of confusable classes); classes not named stay clean.
- `matrix`: a full transition matrix T (K x K, rows sum to 1): each sample of class i draws its new
  label from row i; `rate` is not used (the diagonal says how much stays).

Draws come from a torch generator seeded with `seed`, so the same spec on the same data gives the
same labels. The experiment applies it after the validation split has been carved (and after any
`train_limit`), to the training part only: validation and test labels stay clean, so model selection
and the reported accuracy measure the true task. `LabelNoise.summary` (requested and realised rate,
flips per class) goes into the run directory as `label_noise.json` and into the report.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from kdistill.data.base import InMemoryDataset
from kdistill.errors import BadInput

LABEL_NOISE_FILE = "label_noise.json"


class LabelNoiseSpec(BaseModel):
    """`data.label_noise`: which training labels to corrupt, how, and with which seed."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    rate: float = Field(0.0, ge=0, le=1)
    kind: Literal["symmetric", "pairs", "matrix"] = "symmetric"
    seed: int = 0
    pairs: dict[int, int] | None = None  # kind pairs: true class -> the class its corrupted labels become
    matrix: list[list[float]] | None = None  # kind matrix: row i is P(new label | true class i)

    @model_validator(mode="after")
    def _complete(self) -> LabelNoiseSpec:
        if self.kind == "pairs":
            if not self.pairs:
                raise ValueError("kind pairs needs pairs: {true class: noisy class, ...}, e.g. {3: 8, 8: 3}")
            same = [c for c, to in self.pairs.items() if c == to]
            if same:
                raise ValueError(f"pairs maps class {same[0]} to itself; map it to another class")
        elif self.pairs is not None:
            raise ValueError(f"pairs is for kind pairs (kind is {self.kind}); remove it or set kind: pairs")
        if self.kind == "matrix":
            if not self.matrix:
                raise ValueError("kind matrix needs matrix: a K x K list of rows, each summing to 1")
            for i, row in enumerate(self.matrix):
                if len(row) != len(self.matrix):
                    raise ValueError(f"matrix row {i} has {len(row)} entries for {len(self.matrix)} rows; "
                                     "it must be square (K x K)")
                if any(p < 0 for p in row) or abs(sum(row) - 1) > 1e-6:
                    raise ValueError(f"matrix row {i} must be probabilities summing to 1 (sums to {sum(row):.6g})")
        elif self.matrix is not None:
            raise ValueError(f"matrix is for kind matrix (kind is {self.kind}); remove it or set kind: matrix")
        return self

    @property
    def active(self) -> bool:
        return self.kind == "matrix" or self.rate > 0


def _check_classes(spec: LabelNoiseSpec, num_classes: int) -> None:
    if spec.kind == "pairs":
        bad = [c for pair in spec.pairs.items() for c in pair if not 0 <= c < num_classes]
        if bad:
            raise BadInput(f"data.label_noise.pairs: class {bad[0]} is not in [0, {num_classes}); "
                           f"use class indices of this data set")
    if spec.kind == "matrix" and len(spec.matrix) != num_classes:
        raise BadInput(f"data.label_noise.matrix: {len(spec.matrix)} rows for {num_classes} classes; "
                       f"give a {num_classes} x {num_classes} matrix")
    if spec.kind == "symmetric" and num_classes < 2:
        raise BadInput("data.label_noise: symmetric noise needs at least 2 classes")


def corrupt_labels(labels: torch.Tensor, num_classes: int, spec: LabelNoiseSpec) -> torch.Tensor:
    """The noisy copy of `labels` (the input is not modified)."""
    _check_classes(spec, num_classes)
    labels = labels.long()
    noisy = labels.clone()
    generator = torch.Generator().manual_seed(spec.seed)
    if spec.kind == "symmetric":
        chosen = torch.randperm(len(labels), generator=generator)[: round(spec.rate * len(labels))]
        # an offset in [1, K-1] added modulo K: uniform over the other classes, never the true one
        offset = torch.randint(1, num_classes, (len(chosen),), generator=generator)
        noisy[chosen] = (labels[chosen] + offset) % num_classes
    elif spec.kind == "pairs":
        for source, target in sorted(spec.pairs.items()):
            members = (labels == source).nonzero().flatten()
            members = members[torch.randperm(len(members), generator=generator)]
            noisy[members[: round(spec.rate * len(members))]] = target
    else:
        transition = torch.tensor(spec.matrix, dtype=torch.float64)
        noisy = torch.multinomial(transition[labels], 1, generator=generator).flatten()
    return noisy


def summary(spec: LabelNoiseSpec, clean: torch.Tensor, noisy: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """Requested and realised rate (share of labels that changed) and the flips out of each class."""
    changed = clean != noisy
    return {"kind": spec.kind, "requested_rate": spec.rate if spec.kind != "matrix" else None, "seed": spec.seed,
            "samples": len(clean), "changed": int(changed.sum()),
            "realised_rate": float(changed.float().mean()) if len(clean) else 0.0,
            "changed_per_class": torch.bincount(clean[changed], minlength=num_classes).tolist(),
            "spec": spec.model_dump(mode="json"), "splits": "training only (validation and test labels are clean)"}


class NoisyLabels(InMemoryDataset):
    """A training set whose labels were corrupted: the clean labels and the summary stay beside them."""

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, clean_labels: torch.Tensor,
                 noise: dict[str, Any], classes: list[str] | None = None) -> None:
        super().__init__(inputs, labels, classes)
        self.clean_labels = clean_labels
        self.noise = noise


def apply_label_noise(train: InMemoryDataset, spec: LabelNoiseSpec, num_classes: int) -> NoisyLabels:
    """The training set with corrupted labels (`.noise` holds the summary, `.clean_labels` the truth)."""
    if not isinstance(train, InMemoryDataset):
        raise BadInput(f"data.label_noise: works on the built-in in-memory data sets (this training set is a "
                       f"{type(train).__name__}); corrupt the labels in your own data function instead")
    noisy = corrupt_labels(train.labels, num_classes, spec)
    return NoisyLabels(train.inputs, noisy, train.labels, summary(spec, train.labels, noisy, num_classes),
                       train.classes)
