"""Warnings about a run's recipe that a reader of its results must see (the Distiller notes them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kdistill.data.transforms import Augment
from kdistill.methods.base import Method


def recipe_notes(has_teacher: bool, methods: Sequence[Method], labelled: bool, data: Any,
                 augment: Augment, epochs: int | None = None) -> list[str]:
    """Distillation on labelled data with no loss on the labels departs from every paper's recipe
    (not on a transfer set, whose copies' labels are placeholders: `placeholder_labels`); a label
    term under an augmentation that mixes images trains on each mixed image's first label; a method
    starting at or after the last epoch never runs (a config refuses it; in Python it is a note, as a
    fit may be one of several that share the methods)."""
    notes = [f"{m.label} starts at epoch {m.start_epoch} (start_epoch) but the fit has {epochs} epochs: it never "
             "runs; lower start_epoch or train longer" for m in methods
             if epochs is not None and m.start_epoch >= epochs]
    supervised = any(m.supervises_labels for m in methods)
    if has_teacher and labelled and not supervised and not getattr(data, "placeholder_labels", False):
        notes.append(f"methods {[m.label for m in methods]} have no label term: the student learns without "
                     "cross-entropy on the labels, unlike most papers (DKD, CRD, AT and FitNets add it with weight "
                     "1, KD mixes it in; born-again networks are the exception); add a hard_label method unless "
                     "this is intended")
    if getattr(augment, "mixes_samples", False) and supervised:
        notes.append("the augmentation mixes images (MixUp / CutMix) but not their labels: a label term trains on "
                     "each mixed image's first label; prefer soft targets alone with mixing augmentations")
    return notes


__all__ = ["recipe_notes"]
