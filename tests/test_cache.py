"""The teacher-output cache: same student as without it, keyed on what makes it valid, exact replay."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from kdistill import Distiller, OptimizerSettings
from kdistill.data.base import InMemoryDataset
from kdistill.data.transforms import Augment
from kdistill.engine.cache import CacheSettings
from kdistill.methods import HardLabel, SoftTarget, StepContext
from kdistill.models import build_model

OPT = OptimizerSettings(name="sgd", lr=0.05, momentum=0.9, weight_decay=0.0)


def teacher_model(seed: int = 7):
    torch.manual_seed(seed)
    return build_model("cnn", 10, (1, 8, 8), {"channels": [8, 16]}).eval()


def make(digits, teacher, cache_dir=None, augment=None, dtype="float32", views=None, seed=0):
    bundle, _, _ = digits
    torch.manual_seed(123)
    student = build_model("mlp", 10, (1, 8, 8), {"hidden": [32]})
    cache = CacheSettings(cache_dir, dtype=dtype, views=views) if cache_dir else None
    return Distiller(teacher, student, [SoftTarget(weight=0.9, temperature=4.0), HardLabel(weight=0.1)], device="cpu",
                     optimizer=OPT, batch_size=64, seed=seed, progress=False, augment=augment,
                     student_normalization=(bundle.mean, bundle.std), teacher_normalization=(bundle.mean, bundle.std),
                     teacher_cache=cache)


def test_cached_run_gives_the_same_student(digits, tmp_path):
    _, train, _ = digits
    teacher = teacher_model()
    plain = make(digits, teacher)
    plain.fit(train, epochs=3)
    cached = make(digits, teacher, tmp_path / "cache")
    cached.fit(train, epochs=3)
    assert cached.cache is not None and cached.cache.is_complete()
    for (name, a), b in zip(plain.student.model.state_dict().items(), cached.student.model.state_dict().values(),
                            strict=True):
        # the cache computed the teacher with another batch size: equal up to float rounding
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_teacher_or_data_change_invalidates(digits, tmp_path):
    _, train, _ = digits
    teacher = teacher_model()
    first = make(digits, teacher, tmp_path)
    first.fit(train, epochs=1)
    key = first.cache.key
    same = make(digits, teacher, tmp_path)
    same.fit(train, epochs=1)
    assert same.cache.key == key  # reused, not rebuilt

    changed_teacher = teacher_model()
    with torch.no_grad():
        changed_teacher.head.bias[0] += 1.0
    other = make(digits, changed_teacher, tmp_path)
    other.fit(train, epochs=1)
    assert other.cache.key != key
    idx = torch.arange(5)
    x = train.__getitems__(idx.tolist())["input"]
    expected = changed_teacher(other.teachers[0].normalize(x))
    torch.testing.assert_close(other.cache.lookup(idx, 0, torch.device("cpu")), expected, rtol=1e-5, atol=1e-5)

    fewer = make(digits, teacher, tmp_path)
    fewer.fit(train.subset(torch.arange(len(train) - 1)), epochs=1)
    assert fewer.cache.key not in (key, other.cache.key)
    reordered = make(digits, teacher, tmp_path)
    reordered.fit(train.subset(torch.arange(len(train)).flip(0)), epochs=1)
    assert reordered.cache.key not in (key, other.cache.key, fewer.cache.key)


def test_incomplete_cache_is_never_used(digits, tmp_path):
    _, train, _ = digits
    teacher = teacher_model()
    first = make(digits, teacher, tmp_path)
    first.fit(train, epochs=1)
    path = first.cache.path
    (path / "meta.json").unlink()  # as if the build had been interrupted
    torch.from_numpy(__import__("numpy").load(path / "logits.npy", mmap_mode="r+")).zero_()
    again = make(digits, teacher, tmp_path)
    again.fit(train, epochs=1)
    assert again.cache.lookup(torch.arange(3), 0, torch.device("cpu")).abs().sum() > 0


def test_top_k_reproduces_full_loss_within_tolerance(tmp_path):
    """100 classes, top-20 kept, a confident teacher: the soft-target loss at T=4 within 3 % of the full one."""
    torch.manual_seed(0)
    classes, samples = 100, 512
    inputs = torch.randn(samples, 32)
    teacher = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, classes))
    with torch.no_grad():
        teacher[2].weight.mul_(60)  # top-1 probability ~0.85 at T=1, as trained teachers give
        teacher[2].bias.mul_(60)
    data = InMemoryDataset(inputs, torch.randint(0, classes, (samples,)))
    student = torch.nn.Linear(32, classes)
    with torch.no_grad():
        full = teacher(inputs)
        reference = SoftTarget(1.0, 4.0)(StepContext(student(inputs), teacher_logits=[full]))["soft_target"]
    losses, sizes = {}, {}
    for top_k in (None, 20):
        distiller = Distiller(teacher, student, [SoftTarget(weight=1.0, temperature=4.0)], batch_size=128, device="cpu",
                              progress=False, teacher_cache=CacheSettings(tmp_path / str(top_k), top_k=top_k,
                                                                          dtype="float32"))
        distiller._build(distiller.make_loader(data, train=True), epochs=1)
        cached = distiller.cache.lookup(torch.arange(samples), 0, torch.device("cpu"))
        sizes[top_k] = distiller.cache.size_bytes()
        with torch.no_grad():
            losses[top_k] = SoftTarget(1.0, 4.0)(StepContext(student(inputs), teacher_logits=[cached]))["soft_target"]
    # at T=4 the top-k probabilities are exact and the rest keeps its total mass
    top = full.topk(20, 1).indices
    torch.testing.assert_close((cached / 4).softmax(1).gather(1, top), (full / 4).softmax(1).gather(1, top),
                               rtol=1e-4, atol=1e-6)
    assert sizes[20] < 0.5 * sizes[None]
    assert losses[None].item() == pytest.approx(reference.item(), rel=1e-5)
    assert losses[20].item() == pytest.approx(reference.item(), rel=0.03)
    assert not math.isclose(losses[20].item(), reference.item(), rel_tol=1e-4)  # top-k is an approximation


def test_augmentation_replay_gives_teacher_the_cached_views(digits, tmp_path):
    _, train, _ = digits
    teacher = teacher_model()
    augment = Augment(crop_padding=1, horizontal_flip=True, seed=5)
    distiller = make(digits, teacher, tmp_path, augment=augment, views=2)
    distiller.fit(train, epochs=3)
    cache = distiller.cache
    assert cache.settings.views == 2
    idx = torch.tensor([0, 7, 100, 500])
    raw = train.__getitems__(idx.tolist())
    norm = distiller.teachers[0].normalize
    for epoch in range(4):
        expected = teacher(norm(augment(raw["input"], idx, epoch % 2)))
        torch.testing.assert_close(cache.lookup(idx, epoch, torch.device("cpu")), expected, rtol=1e-5, atol=1e-5)
        # and the student is shown exactly that view in that epoch
        inputs, _, _ = distiller.prepare_inputs(raw, epoch, train=True)
        torch.testing.assert_close(inputs, augment(raw["input"], idx, epoch % 2))
    assert not torch.equal(augment(raw["input"], idx, 0), augment(raw["input"], idx, 1))


def test_cache_with_feature_methods_is_refused():
    from kdistill.methods import build_method

    hint = build_method("hint", {"student_layer": "hidden.0", "teacher_layer": "features.1"})
    with pytest.raises(ValueError, match="logits only"):
        Distiller(teacher_model(), build_model("mlp", 10, (1, 8, 8)), [hint], teacher_cache=CacheSettings("x"))


def test_cached_features_give_the_same_student_as_running_the_teacher(digits, tmp_path):
    """Hint reads teacher layer `features.1`: with features cached, the student is the uncached one."""
    from kdistill.methods import build_method

    _, train, _ = digits
    small = train.subset(torch.arange(512))
    teacher = teacher_model()
    students = []
    for cache in (None, CacheSettings(tmp_path / "c", dtype="float32", features=True)):
        bundle, _, _ = digits
        torch.manual_seed(123)
        student = build_model("cnn", 10, (1, 8, 8), {"channels": [4, 8]})
        hint = build_method("hint", {"student_layer": "features.1", "teacher_layer": "features.1", "weight": 1.0})
        distiller = Distiller(teacher, student, [hint, SoftTarget(weight=0.5), HardLabel(weight=0.5)], optimizer=OPT,
                              device="cpu",
                              batch_size=64, progress=False, student_normalization=(bundle.mean, bundle.std),
                              teacher_normalization=(bundle.mean, bundle.std), teacher_cache=cache)
        distiller.fit(small, epochs=2)
        students.append(distiller)
    cached = students[1].cache
    assert cached.taps == ["features.1"] and any(p.name.startswith("feature-") for p in cached.path.glob("*.npy"))
    expected = teacher.features(students[1].teachers[0].normalize(small.inputs[:5]))
    torch.testing.assert_close(cached.lookup_features(torch.arange(5), 0, torch.device("cpu"))["features.1"],
                               expected, rtol=1e-5, atol=1e-5)
    for (name, a), b in zip(students[0].student.model.state_dict().items(),
                            students[1].student.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a.float(), b.float(), rtol=1e-4, atol=1e-5, msg=name)


def test_with_augmentation_the_cache_defaults_to_a_fresh_view_per_epoch(digits, tmp_path):
    """Issue 8 fix 2: under augmentation a cached run must see what an uncached one sees, a fresh
    crop every epoch, so it gives the same student (not one trained on a single frozen crop)."""
    _, train, _ = digits
    teacher = teacher_model()
    augment = Augment(crop_padding=1, horizontal_flip=True, seed=3)
    plain = make(digits, teacher, augment=augment)
    plain.fit(train, epochs=3)
    cached = make(digits, teacher, tmp_path / "cache", augment=augment)
    cached.fit(train, epochs=3)
    assert cached.cache.settings.views == 3 and not cached.notes
    for (name, a), b in zip(plain.student.model.state_dict().items(), cached.student.model.state_dict().values(),
                            strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_a_shorter_cycle_of_views_is_noted_in_the_run(digits, tmp_path):
    _, train, _ = digits
    teacher = teacher_model()
    distiller = make(digits, teacher, tmp_path / "cache", augment=Augment(crop_padding=1, seed=3), views=2)
    distiller.run_dir = tmp_path / "run"
    distiller.fit(train, epochs=3)
    assert distiller.cache.settings.views == 2
    notes = json.loads((tmp_path / "run" / "notes.json").read_text())
    assert any("teacher.cache.views = 2 < 3 epochs" in note for note in notes)
    # and the run's report says so, under its warnings
    from kdistill.report import render_reports
    from kdistill.results import ExperimentResult

    report = render_reports(tmp_path, "cycle", "", ExperimentResult(tmp_path, [])).read_text()
    warnings = report.split("## Warnings", 1)[1]
    assert "`run`: " in warnings and "teacher.cache.views = 2 < 3 epochs" in warnings


def test_extra_taps_let_runs_of_other_methods_share_one_cache(digits, tmp_path, monkeypatch):
    """A hint run and a KD-only run name the same extra taps: the teacher runs once, for the first."""
    from kdistill.engine import cache as cache_module
    from kdistill.methods import build_method

    _, train, _ = digits
    small = train.subset(torch.arange(256))
    teacher = teacher_model()
    settings = CacheSettings(tmp_path / "c", dtype="float32", features=True, extra_taps=("features.1", "head:input"))
    builds = []
    original = cache_module.TeacherCache.build
    monkeypatch.setattr(cache_module.TeacherCache, "build",
                        lambda self, *a, **k: (builds.append(self.key), original(self, *a, **k))[1])
    runs = []
    for methods in ([build_method("hint", {"student_layer": "features.1", "teacher_layer": "features.1"}),
                     HardLabel()], [SoftTarget(weight=0.9), HardLabel(weight=0.1)]):
        torch.manual_seed(0)
        student = build_model("cnn", 10, (1, 8, 8), {"channels": [4, 8]})
        distiller = Distiller(teacher, student, methods, optimizer=OPT, batch_size=64, progress=False, device="cpu",
                              teacher_cache=settings)
        distiller.fit(small, epochs=1)
        runs.append(distiller)
    assert len(builds) == 1 and runs[0].cache.key == runs[1].cache.key
    assert sorted(runs[1].cache.taps) == ["features.1", "head:input"]
    with torch.no_grad():
        expected = teacher.pool(teacher.features(small.inputs[:3].float())).flatten(1)
    torch.testing.assert_close(runs[1].cache.lookup_features(torch.arange(3), 0, torch.device("cpu"))["head:input"],
                               expected, rtol=1e-5, atol=1e-5)


def test_builders_of_the_same_cache_never_clash(digits, tmp_path):
    """Building happens in a private directory published by one rename: a leftover half-built
    directory is replaced, and a builder that finds the cache already published uses that copy."""
    from kdistill.engine.cache import TeacherCache, open_cache

    _, train, _ = digits
    teacher = teacher_model()
    distiller = make(digits, teacher)
    loader = distiller.make_loader(train, train=False)
    settings = CacheSettings(tmp_path, dtype="float32")
    norm = distiller.teachers[0].normalize
    args = (settings, teacher, train, loader, norm, Augment(), 10, torch.device("cpu"))
    key = TeacherCache.make_key(settings, teacher, train, norm, Augment())
    (tmp_path / key).mkdir()
    (tmp_path / key / "logits.npy").write_bytes(b"half a file from a crash")
    first = open_cache(*args)
    assert first.is_complete() and first.path == tmp_path / key
    # a second builder that started before the first published: it finds the published copy
    second = TeacherCache(first.settings, key, len(train), 10)
    second.build(teacher, loader, norm, Augment(), torch.device("cpu"))
    assert second.path == tmp_path / key
    torch.testing.assert_close(second.lookup(torch.arange(5), 0, torch.device("cpu")),
                               first.lookup(torch.arange(5), 0, torch.device("cpu")))
    assert sorted(p.name for p in tmp_path.iterdir()) == [key]  # no staging directories left


def test_a_cached_layer_whose_shape_changes_between_batches_is_refused_with_the_fix(tmp_path):
    # text batches padded to their longest sentence give a tapped layer a new length per batch
    from kdistill.engine.cache import TeacherCache
    from kdistill.errors import BadInput

    cache = TeacherCache(CacheSettings(tmp_path / "c", dtype="float32", views=1), "k", num_samples=4, num_classes=2,
                         taps=["encoder"])
    cache.path.mkdir(parents=True)
    cache.create({"encoder": (5, 3)})
    cache.store(0, np.array([0, 1]), torch.zeros(2, 2), {"encoder": torch.ones(2, 5, 3)})
    with pytest.raises(BadInput, match=r"layer 'encoder' gave per-sample shape \(7, 3\).*padding: max_length"):
        cache.store(0, np.array([2, 3]), torch.zeros(2, 2), {"encoder": torch.ones(2, 7, 3)})
