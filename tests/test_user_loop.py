"""kdistill inside a user's own loop: `DistillationLoss` without the Distiller (issue 10, item 6)."""

from __future__ import annotations

import importlib.util
import statistics

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO
from torch import nn

from kdistill import DistillationLoss, methods


def _models():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10))
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    return teacher, student


def test_loss_of_a_batch_equals_the_hand_written_one():
    teacher, student = _models()
    teacher.train()  # the loss must still run it in eval mode: no dropout in the soft targets
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    loss_fn = DistillationLoss(teacher, student, [methods.SoftTarget(weight=0.9, temperature=4.0),
                                                  methods.HardLabel(weight=0.1)])
    out = loss_fn(x, y)
    teacher.eval()
    with torch.no_grad():
        soft_teacher = F.softmax(teacher(x) / 4, dim=1)
    logits = student(x)
    kl = (soft_teacher * (soft_teacher.log() - F.log_softmax(logits / 4, dim=1))).sum(1).mean() * 16
    expected = 0.9 * kl + 0.1 * F.cross_entropy(logits, y)
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)
    assert set(out.terms) == {"soft_target", "hard_label"}
    torch.testing.assert_close(out.student_logits, logits)
    out.loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())


def test_adapters_train_with_the_student_and_hooks_leave_on_exit():
    teacher, student = _models()
    loss_fn = DistillationLoss(teacher, student, [methods.Hint(student_layer="2", teacher_layer="2", weight=1.0),
                                                  methods.HardLabel()])
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    assert list(loss_fn.parameters()) == []
    loss_fn.build(x, y)  # the 16 -> 32 adapter, sized from the batch
    adapter = list(loss_fn.parameters())
    assert [tuple(p.shape) for p in adapter] == [(32, 16), (32,)]  # Linear(16 -> 32)
    assert not student[2]._forward_hooks  # build leaves no hooks behind
    before = [p.detach().clone() for p in adapter]
    optimizer = torch.optim.SGD([*student.parameters(), *loss_fn.parameters()], lr=0.1)
    with loss_fn:
        assert student[2]._forward_hooks and teacher[2]._forward_hooks
        for _ in range(3):
            out = loss_fn(x, y)
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
        assert "hint" in out.terms
    assert not student[2]._forward_hooks and not teacher[2]._forward_hooks
    assert any(not torch.equal(a, b) for a, b in zip(before, adapter, strict=True))
    assert set(loss_fn.state_dict()) == {f"methods.0.{k}" for k in loss_fn.methods[0].state_dict()}


def test_a_misspelt_layer_fails_at_construction():
    teacher, student = _models()
    with pytest.raises(ValueError, match="closest"):
        DistillationLoss(teacher, student, [methods.Hint(student_layer="22", teacher_layer="2")])


def _example():
    spec = importlib.util.spec_from_file_location("plain_pytorch_loop", REPO / "examples" / "plain_pytorch_loop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_plain_pytorch_example_distils_a_student_better_than_scratch():
    """The documented example, as written: over three seeds the distilled student beats the one
    trained from the labels (mean test accuracy on the 450 held-out digits)."""
    example = _example()
    runs = [example.main(seed) for seed in (0, 1, 2)]
    scratch = statistics.mean(r["scratch"] for r in runs)
    distilled = statistics.mean(r["distilled"] for r in runs)
    assert all(r["teacher"] > 97 for r in runs)
    assert distilled > scratch, runs


def test_lightning_module_example_distils_and_leaves_models_clean(monkeypatch):
    """The Lightning example (optional extra): trains through Lightning's own loop, logs each
    term, leaves no hooks on either model and the teacher's weights untouched."""
    lightning = pytest.importorskip("lightning")
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    import lightning_module
    import plain_pytorch_loop as plain

    lightning.seed_everything(0, verbose=False)
    train, test = plain.digits_loaders(0)
    teacher = plain.train_teacher(train, epochs=5)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    module = lightning_module.DistilledStudent(teacher, plain.make_student(), next(iter(train)), epochs=4)
    trainer = lightning.Trainer(max_epochs=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, train, test)
    assert {"train/soft_target", "train/hard_label", "val/acc"} <= set(trainer.callback_metrics)
    assert plain.accuracy(module.student, test) > 90.0
    assert not any(m._forward_hooks for m in [*teacher.modules(), *module.student.modules()])
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), key
