"""One small distillation run shared by the 1-process and 2-process sides of the DDP test."""

from __future__ import annotations

from pathlib import Path

import torch
from helpers import StopAtStep

from kdistill import Distiller, OptimizerSettings
from kdistill.data import load_digits_bundle, split_validation
from kdistill.engine.cache import CacheSettings
from kdistill.methods import CRD, HardLabel, Hint, SoftTarget
from kdistill.models import build_model

GLOBAL_BATCH = 64
SAMPLES = 18 * GLOBAL_BATCH + 3  # the last global batch splits unevenly (2 + 1) over 2 processes


def train_case(run_dir: Path | None, epochs: int = 2, stop_at: int | None = None, resume: bool = False,
               cache_dir: Path | None = None) -> Distiller:
    """`stop_at`: ask to stop (as Ctrl-C does) after that many steps; `resume`: continue run_dir;
    `cache_dir`: the teacher's logits and tapped features from a cache kept there (float32)."""
    bundle = load_digits_bundle()
    train, val = split_validation(bundle.train, 0.1, seed=0)
    train = train.subset(torch.arange(SAMPLES))
    torch.manual_seed(7)
    teacher = build_model("cnn", 10, (1, 8, 8), {"channels": [8, 16]})
    torch.manual_seed(123)
    student = build_model("mlp", 10, (1, 8, 8), {"hidden": [32]})  # no dropout, no batch norm
    # a hint with a learned adapter: method parameters must start and stay equal on every rank
    hint = Hint(student_layer="hidden.0", teacher_layer="head:input", weight=1.0)
    # CRD's memory (and, with other-class negatives, each row's label) is updated from every rank's
    # rows, so it stays the same on each; the NCE objective's normaliser Z is fixed (in epoch 2) from
    # the global batch's scores, summed over the ranks
    crd = CRD(student_layer="hidden.0", teacher_layer="head:input", weight=0.1, feature_dim=16, num_negatives=64,
              negatives="other_classes", objective="nce")
    methods = [SoftTarget(weight=0.9, temperature=4.0), HardLabel(weight=0.1), hint, crd]
    handle: list = []
    if stop_at is not None:
        methods.append(StopAtStep(handle, stop_at))
    distiller = Distiller(teacher, student, methods,
                          optimizer=OptimizerSettings(name="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4),
                          batch_size=GLOBAL_BATCH, seed=0, progress=False, run_dir=run_dir, device="cpu",
                          student_normalization=(bundle.mean, bundle.std),
                          teacher_normalization=(bundle.mean, bundle.std),
                          teacher_cache=CacheSettings(cache_dir, dtype="float32", features=True) if cache_dir else None)
    handle.append(distiller)
    distiller.fit(train, val, epochs=epochs, resume=resume)
    return distiller
