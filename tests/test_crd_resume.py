"""CRD in one process, stopped mid-epoch and resumed, gives the uninterrupted student bit for bit:
its memories (and their labels, and a queue's keys and key encoder), the teacher cache's float16
features and the augmentation stream all come back from the checkpoint. (The CIFAR-10 benchmarks'
CRD runs resume across sessions in exactly this set-up; the two-process resume test covers NCE.)"""

from __future__ import annotations

import pytest
import torch
from helpers import StopAtStep

from kdistill import Distiller, OptimizerSettings, ScheduleSettings, TrainingInterrupted
from kdistill.data.transforms import Augment
from kdistill.engine.cache import CacheSettings
from kdistill.methods import CRD, HardLabel
from kdistill.models import build_model

EPOCHS = 3


def make(digits, run_dir, cache_dir, memory: str, stop_at: int | None = None) -> Distiller:
    bundle, _, _ = digits
    torch.manual_seed(7)
    teacher = build_model("cnn", 10, (1, 8, 8), {"channels": [8, 16]})
    torch.manual_seed(123)
    student = build_model("cnn", 10, (1, 8, 8), {"channels": [4, 8]})
    handle: list = []
    methods = [HardLabel(1.0), CRD("head:input", "head:input", weight=0.8, feature_dim=16, num_negatives=64,
                                   negatives="other_classes", memory=memory)]
    if stop_at is not None:
        methods.append(StopAtStep(handle, stop_at))
    distiller = Distiller(teacher, student, methods,
                          optimizer=OptimizerSettings(name="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4),
                          schedule=ScheduleSettings(name="cosine"), batch_size=64, seed=0, run_dir=run_dir,
                          progress=False, device="cpu", augment=Augment(crop_padding=1, horizontal_flip=True, seed=0),
                          student_normalization=(bundle.mean, bundle.std),
                          teacher_normalization=(bundle.mean, bundle.std),
                          teacher_cache=CacheSettings(cache_dir, dtype="float16", features=True, views=EPOCHS))
    handle.append(distiller)
    return distiller


@pytest.mark.parametrize("memory", ["dataset", "queue"])
def test_crd_stopped_mid_epoch_resumes_to_the_uninterrupted_student(digits, tmp_path, memory):
    _, train, val = digits
    cache = tmp_path / "cache"
    reference = make(digits, tmp_path / "reference", cache, memory)
    reference.fit(train, val, epochs=EPOCHS)
    steps_per_epoch = -(-len(train) // 64)
    interrupted = make(digits, tmp_path / "run", cache, memory, stop_at=steps_per_epoch + 4)  # mid-epoch 2
    with pytest.raises(TrainingInterrupted):
        interrupted.fit(train, val, epochs=EPOCHS)
    resumed = make(digits, tmp_path / "run", cache, memory)
    resumed.fit(train, val, epochs=EPOCHS, resume=True)
    for (name, a), (_, b) in zip(reference.student.model.state_dict().items(),
                                 resumed.student.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), f"{name} differs after resume"
    crd_reference, crd_resumed = reference.loss.methods[1], resumed.loss.methods[1]
    for (name, a), (_, b) in zip(crd_reference.state_dict().items(), crd_resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), f"CRD {name} differs after resume"
