"""The training loop: the teacher stays frozen, runs reproduce, and resume equals no interruption."""

from __future__ import annotations

import pytest
import torch
from helpers import StopAtStep

from kdistill import Distiller, OptimizerSettings, ScheduleSettings, TrainingInterrupted
from kdistill.data.transforms import Augment
from kdistill.methods import HardLabel, SoftTarget
from kdistill.models import build_model

OPT = OptimizerSettings(name="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4)


def make(digits, run_dir=None, teacher=None, methods=None, seed=0, dropout=0.2, augment=True):
    bundle, _, _ = digits
    torch.manual_seed(123)
    student = build_model("mlp", 10, (1, 8, 8), {"hidden": [32], "dropout": dropout})
    if teacher is None:
        torch.manual_seed(7)
        teacher = build_model("cnn", 10, (1, 8, 8), {"channels": [8, 16]})
    methods = methods or [SoftTarget(weight=0.7, temperature=4.0), HardLabel(weight=0.3)]
    schedule = ScheduleSettings(name="cosine", warmup_epochs=1)
    return Distiller(teacher, student, methods, optimizer=OPT, schedule=schedule,
                     batch_size=64, seed=seed, run_dir=run_dir, progress=False,
                     augment=Augment(crop_padding=1 if augment else 0, horizontal_flip=False, seed=seed),
                     student_normalization=(bundle.mean, bundle.std), teacher_normalization=(bundle.mean, bundle.std))


def test_teacher_gets_no_gradient_and_no_optimizer_state(digits):
    _, train, _ = digits
    distiller = make(digits)
    teacher = distiller.teachers[0].model
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    distiller.fit(train, epochs=1)
    assert all(p.grad is None for p in teacher.parameters())
    for key, value in teacher.state_dict().items():
        assert torch.equal(value.cpu(), before[key].cpu()), f"teacher {key} changed"  # BN stats too: eval mode
    optimised = {id(p) for group in distiller.optimizer.param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in teacher.parameters()}
    assert {id(p) for p in distiller.student.model.parameters()} <= optimised


def test_same_seed_same_result_other_seed_differs(digits):
    _, train, _ = digits
    a, b, c = make(digits, seed=3), make(digits, seed=3), make(digits, seed=4)
    for d in (a, b, c):
        d.fit(train, epochs=2)
    wa, wb, wc = (d.student.model.head.weight for d in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.allclose(wa, wc)


@pytest.mark.parametrize("stop_at", [5, 19, 25])  # 19 steps/epoch: mid-epoch 1, last step of 1, mid-epoch 2
def test_resumed_run_equals_uninterrupted(digits, tmp_path, stop_at):
    _, train, val = digits
    epochs = 3
    reference = make(digits, tmp_path / "ref")
    reference.fit(train, val, epochs=epochs)

    ref = []
    methods = [SoftTarget(weight=0.7, temperature=4.0), HardLabel(weight=0.3), StopAtStep(ref, stop_at)]
    interrupted = make(digits, tmp_path / "run", methods=methods)
    ref.append(interrupted)
    with pytest.raises(TrainingInterrupted):
        interrupted.fit(train, val, epochs=epochs)
    assert (tmp_path / "run" / "checkpoints" / "last.pt").exists()

    resumed = make(digits, tmp_path / "run",
                   methods=[SoftTarget(weight=0.7, temperature=4.0), HardLabel(weight=0.3), StopAtStep([None], 10**9)])
    resumed.fit(train, val, epochs=epochs, resume=True)
    for (name, a), (_, b) in zip(reference.student.model.state_dict().items(),
                                 resumed.student.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), f"{name} differs after resume"
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert resumed.history[-1]["val/acc"] == reference.history[-1]["val/acc"]
    for key in ("train/loss", "train/acc"):
        assert resumed.history[0][key] == pytest.approx(reference.history[0][key], rel=1e-6)
    # the run directory's final student is the same weights
    saved = torch.load(tmp_path / "run" / "student.pt", weights_only=True)
    assert torch.equal(saved["head.weight"], reference.student.model.head.weight)


def test_training_beats_chance_and_logs_every_term(digits, tmp_path):
    bundle, train, val = digits
    # the teacher here is untrained, so the soft term gets a small weight
    distiller = make(digits, tmp_path / "run", methods=[SoftTarget(weight=0.05), HardLabel(weight=0.95)])
    history = distiller.fit(train, val, epochs=3)
    last = history[-1]
    for key in ("train/soft_target", "train/hard_label", "train/loss", "lr", "epoch_time_s", "val/acc"):
        assert key in last
    assert last["val/acc"] > 0.5
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3
    assert history[-1]["train/loss"] < history[0]["train/loss"]


def test_no_teacher_with_teacher_method_is_an_error():
    student = build_model("mlp", 10, (1, 8, 8))
    with pytest.raises(ValueError, match="need a teacher"):
        Distiller(None, student, [SoftTarget()])


def test_bf16_autocast_trains(digits):
    _, train, val = digits
    distiller = make(digits, augment=False)
    distiller.precision = "bf16"
    history = distiller.fit(train, val, epochs=2)
    assert torch.isfinite(torch.tensor(history[-1]["train/loss"]))
    assert history[-1]["val/acc"] > 0.4


def test_compiled_student_with_taps_matches_eager(digits):
    """torch.compile (dynamo tracing, eager backend to stay fast on CPU) gives the eager run's student."""
    from kdistill.methods import build_method

    _, train, _ = digits
    small = train.subset(torch.arange(256))
    results = []
    for compile_backend in (False, "eager"):
        hint = build_method("hint", {"student_layer": "hidden.0", "teacher_layer": "head:input", "weight": 1.0})
        distiller = make(digits, methods=[SoftTarget(weight=0.5), HardLabel(weight=0.5), hint], augment=False)
        distiller.compile = compile_backend
        distiller.fit(small, epochs=1)
        results.append(distiller.student.model.head.weight.detach().clone())
    torch.testing.assert_close(results[0], results[1], rtol=1e-4, atol=1e-5)


def test_fitnets_two_stages_through_active_epochs(digits):
    """Hint pre-training in epoch 1 only, then KD: each epoch logs exactly the active methods' terms."""
    from kdistill.methods import build_method

    _, train, _ = digits
    hint = build_method("hint", {"student_layer": "hidden.0", "teacher_layer": "head:input", "end_epoch": 1})
    kd = build_method("soft_target", {"start_epoch": 1})
    ce = build_method("hard_label", {"start_epoch": 1, "weight": 0.1})
    distiller = make(digits, methods=[hint, kd, ce], augment=False)
    history = distiller.fit(train.subset(torch.arange(256)), epochs=2)
    assert "train/hint" in history[0] and "train/soft_target" not in history[0]
    assert "train/hint" not in history[1] and "train/soft_target" in history[1] and "train/hard_label" in history[1]


def test_teacher_reuses_student_inputs_only_with_the_same_normalisation(digits):
    from kdistill.data.transforms import Normalize

    same = make(digits)
    assert same.teachers[0].shares_student_inputs
    bundle, _, _ = digits
    other = Distiller(build_model("mlp", 10, (1, 8, 8)), build_model("mlp", 10, (1, 8, 8)), [SoftTarget()],
                      student_normalization=(bundle.mean, bundle.std), teacher_normalization=((0.5,), (0.5,)))
    assert not other.teachers[0].shares_student_inputs
    assert Normalize(None, None).same_as(Normalize(None, None))
    assert not Normalize((0.1,), (1.0,)).same_as(Normalize(None, None))


def test_loader_workers_and_channels_last_give_the_same_student(digits):
    """Augmentation is drawn per sample from (seed, epoch, index), so worker processes change nothing."""
    _, train, _ = digits
    small = train.subset(torch.arange(320))
    students = []
    for workers, channels_last in ((0, False), (2, False), (0, True)):
        torch.manual_seed(7)
        teacher = build_model("cnn", 10, (1, 8, 8), {"channels": [8, 16]})
        torch.manual_seed(123)
        student = build_model("cnn", 10, (1, 8, 8), {"channels": [4, 8]})
        bundle, _, _ = digits
        distiller = Distiller(teacher, student, [SoftTarget(weight=0.5), HardLabel(weight=0.5)], optimizer=OPT,
                              batch_size=64, seed=0, progress=False, num_workers=workers,
                              channels_last=channels_last, augment=Augment(crop_padding=1, seed=0),
                              student_normalization=(bundle.mean, bundle.std),
                              teacher_normalization=(bundle.mean, bundle.std))
        distiller.fit(small, epochs=2)
        students.append(distiller.student.model.head.weight.detach().clone())
    if students[0].is_cuda:  # cuDNN's convolution kernels are not bitwise deterministic run to run
        torch.testing.assert_close(students[0], students[1], rtol=1e-4, atol=1e-5)
    else:
        assert torch.equal(students[0], students[1])  # same numbers, other processes loading
    torch.testing.assert_close(students[0], students[2], rtol=1e-4, atol=1e-5)  # other memory layout


def test_fit_leaves_the_teacher_as_it_came(digits):
    """Frozen during fit (no grad, eval mode), the user's teacher keeps its requires_grad flags after."""
    _, train, _ = digits
    distiller = make(digits)
    teacher = distiller.teachers[0].model
    flags = [p.requires_grad for p in teacher.parameters()]
    distiller.fit(train.subset(torch.arange(128)), epochs=1)
    assert [p.requires_grad for p in teacher.parameters()] == flags and all(flags)
    assert not teacher._forward_hooks
