"""kornia augmentation pipelines: views are a pure function of (seed, epoch, index), so runs resume
exactly and the teacher cache replays them; batch-level ops (MixUp) run the teacher live."""

from __future__ import annotations

import sys

import pytest
import torch
from helpers import StopAtStep

pytest.importorskip("kornia")

from kdistill import Distiller, OptimizerSettings, TrainingInterrupted  # noqa: E402
from kdistill.config import ConfigError, load_raw, validate  # noqa: E402
from kdistill.data.augment_pipeline import KorniaAugment, build_augment  # noqa: E402
from kdistill.data.transforms import Augment, Normalize  # noqa: E402
from kdistill.engine.cache import CacheSettings, TeacherCache  # noqa: E402
from kdistill.methods import HardLabel, SoftTarget  # noqa: E402
from kdistill.models import build_model  # noqa: E402
from kdistill.run.build import distiller_kwargs  # noqa: E402

OPT = OptimizerSettings(name="sgd", lr=0.05, momentum=0.9, weight_decay=0.0)
DIGITS_PIPELINE = [{"name": "RandomResizedCrop", "size": [8, 8], "scale": [0.6, 1.0]},
                   {"name": "RandomAffine", "degrees": 10, "p": 0.5},
                   {"name": "RandomErasing", "scale": [0.02, 0.1], "p": 0.25}]
RGB_PIPELINE = [{"name": "RandomResizedCrop", "size": [12, 12], "scale": [0.5, 1.0]},
                {"name": "ColorJitter", "brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.05, "p": 0.8},
                {"name": "RandomHorizontalFlip"}, {"name": "RandomErasing", "p": 0.5}]


def teacher_model(seed: int = 7):
    torch.manual_seed(seed)
    return build_model("cnn", 10, (1, 8, 8), {"channels": [8, 16]}).eval()


def make(digits, augment, teacher=None, cache=None, methods=None, run_dir=None, seed=0):
    bundle, _, _ = digits
    torch.manual_seed(123)
    student = build_model("mlp", 10, (1, 8, 8), {"hidden": [32]})
    methods = methods or [SoftTarget(weight=0.9, temperature=4.0), HardLabel(weight=0.1)]
    return Distiller(teacher if teacher is not None else teacher_model(), student, methods, optimizer=OPT,
                     batch_size=64, seed=seed, progress=False, augment=augment, run_dir=run_dir,
                     student_normalization=(bundle.mean, bundle.std), teacher_normalization=(bundle.mean, bundle.std),
                     teacher_cache=cache)


def test_pipeline_trains_on_digits(digits):
    _, train, val = digits
    distiller = make(digits, KorniaAugment(DIGITS_PIPELINE, seed=1), methods=[HardLabel(weight=1.0)])
    distiller.fit(train, val, epochs=3)
    losses = [r["train/loss"] for r in distiller.history]
    assert losses[-1] < losses[0]
    assert distiller.history[-1]["val/acc"] > 0.5  # chance is 0.1


def test_view_depends_only_on_seed_epoch_and_index():
    torch.manual_seed(0)
    images, indices = torch.rand(24, 3, 16, 16), torch.arange(1000, 1024)
    augment = KorniaAugment(RGB_PIPELINE, seed=3)
    full = augment(images, indices, 2)
    assert full.shape == (24, 3, 12, 12) and augment.replayable
    order = torch.randperm(24)[:9]
    assert torch.equal(augment(images[order], indices[order], 2), full[order])  # other batch, other order
    assert torch.equal(augment(images[:1], indices[:1], 2), full[:1])  # alone
    torch.manual_seed(99)  # the global RNG plays no part, and is left as it was
    state = torch.get_rng_state()
    assert torch.equal(KorniaAugment(RGB_PIPELINE, seed=3)(images, indices, 2), full)
    assert torch.equal(torch.get_rng_state(), state)
    assert not torch.equal(augment(images, indices, 3), full)  # another epoch, another view
    assert not torch.equal(KorniaAugment(RGB_PIPELINE, seed=4)(images, indices, 2), full)


def test_builtin_crop_and_flip_come_first_and_unchanged():
    images, indices = torch.rand(8, 1, 8, 8), torch.arange(8)
    assert build_augment([], 5, 1, True) == Augment(1, True, 5)  # no pipeline: the built-in, as before
    combined = KorniaAugment([{"name": "RandomHorizontalFlip", "p": 0.0}], seed=5, crop_padding=1,
                             horizontal_flip=True)
    assert torch.equal(combined(images, indices, 1), Augment(1, True, 5)(images, indices, 1))


@pytest.mark.parametrize("stop_at", [13])  # 10 steps/epoch: mid-epoch 2
def test_resumed_run_equals_uninterrupted(digits, tmp_path, stop_at):
    _, train, val = digits
    train = train.subset(torch.arange(640))
    teacher = teacher_model()
    reference = make(digits, KorniaAugment(DIGITS_PIPELINE), teacher, run_dir=tmp_path / "ref")
    reference.fit(train, val, epochs=2)
    ref: list = []
    methods = [SoftTarget(weight=0.9, temperature=4.0), HardLabel(weight=0.1), StopAtStep(ref, stop_at)]
    interrupted = make(digits, KorniaAugment(DIGITS_PIPELINE), teacher, methods=methods, run_dir=tmp_path / "run")
    ref.append(interrupted)
    with pytest.raises(TrainingInterrupted):
        interrupted.fit(train, val, epochs=2)
    methods = [SoftTarget(weight=0.9, temperature=4.0), HardLabel(weight=0.1), StopAtStep([None], 10**9)]
    resumed = make(digits, KorniaAugment(DIGITS_PIPELINE), teacher, methods=methods, run_dir=tmp_path / "run")
    resumed.fit(train, val, epochs=2, resume=True)
    for (name, a), b in zip(reference.student.model.state_dict().items(), resumed.student.model.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), f"{name} differs after resume"


def test_cache_replays_the_teacher_views_and_gives_the_uncached_student(digits, tmp_path):
    _, train, _ = digits
    train = train.subset(torch.arange(640))
    teacher = teacher_model()
    augment = KorniaAugment(DIGITS_PIPELINE, seed=5)
    plain = make(digits, augment, teacher)
    plain.fit(train, epochs=2)
    cached = make(digits, augment, teacher, cache=CacheSettings(tmp_path / "c", dtype="float32"))
    cached.fit(train, epochs=2)
    cache = cached.cache
    assert cache is not None and cache.settings.views == 2
    idx = torch.tensor([0, 7, 100, 500])
    raw = train.__getitems__(idx.tolist())
    norm = cached.teachers[0].normalize
    for epoch in range(2):
        view = augment(raw["input"], idx, epoch)
        with torch.no_grad():
            expected = teacher(norm(view))
        torch.testing.assert_close(cache.lookup(idx, epoch, torch.device("cpu")), expected, rtol=1e-5, atol=1e-5)
        inputs, _, _ = cached.prepare_inputs(raw, epoch, train=True)
        assert torch.equal(inputs, view)  # the student is shown exactly the view the teacher saw
    for (name, a), b in zip(plain.student.model.state_dict().items(), cached.student.model.state_dict().values(),
                            strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_cache_key_holds_the_pipeline(digits):
    _, train, _ = digits
    teacher, settings, norm = teacher_model(), CacheSettings("unused", views=2), Normalize(None, None)

    def key(augment):
        return TeacherCache.make_key(settings, teacher, train, norm, augment)

    base = key(KorniaAugment(DIGITS_PIPELINE, seed=1))
    assert base == key(KorniaAugment(DIGITS_PIPELINE, seed=1))
    assert base != key(KorniaAugment(DIGITS_PIPELINE, seed=2))
    assert base != key(KorniaAugment(DIGITS_PIPELINE[:2], seed=1))
    assert base != key(KorniaAugment([{**DIGITS_PIPELINE[0], "scale": [0.7, 1.0]}, *DIGITS_PIPELINE[1:]], seed=1))
    assert base != key(Augment(1, True, 1))


def test_mixup_with_a_cache_runs_the_teacher_live_and_says_so(digits, tmp_path):
    _, train, _ = digits
    small = train.subset(torch.arange(256))
    augment = KorniaAugment([{"name": "RandomMixUpV2"}], seed=2)
    assert not augment.replayable
    images, indices = small.__getitems__(list(range(16)))["input"].float(), torch.arange(16)
    assert torch.equal(augment(images, indices, 0), augment(images, indices, 0))  # still reproducible
    distiller = make(digits, augment, cache=CacheSettings(tmp_path / "c"))
    distiller.fit(small, epochs=1)
    assert distiller.cache is None
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())
    assert any("teacher runs live" in note for note in distiller.notes)
    assert augment.mixes_samples
    # the run has a label term (see make): the labels are not mixed with the images, and it says so
    assert any("mixes images" in note for note in distiller.notes)


def test_a_data_set_without_a_fingerprint_is_not_refused_where_the_cache_would_be_off():
    """The cache's fingerprint check applies only where the cache would be used: under MixUp the teacher
    runs live, so a data set the cache could not identify is fine there (and refused otherwise)."""
    from torch.utils.data import TensorDataset

    from kdistill.engine.cache_setup import check_cacheable
    from kdistill.errors import BadInput

    data = TensorDataset(torch.randn(8, 1, 8, 8), torch.zeros(8, dtype=torch.long))
    check_cacheable(data, KorniaAugment([{"name": "RandomMixUpV2"}], seed=2))
    with pytest.raises(BadInput, match="has no fingerprint"):
        check_cacheable(data, Augment(1, True, 1))


def _problems(pipeline) -> list[str]:
    raw = load_raw(None)
    raw["data"]["augment"] = {"pipeline": pipeline}
    with pytest.raises(ConfigError) as error:
        validate(raw)
    return error.value.problems


def test_config_pipeline_is_checked_and_built():
    raw = load_raw(None)
    raw["data"]["augment"] = {"crop_padding": 1, "pipeline": DIGITS_PIPELINE}
    config = validate(raw)
    assert [op.name for op in config.data.augment.pipeline] == [op["name"] for op in DIGITS_PIPELINE]
    augment = distiller_kwargs(config, config.training, Normalize(None, None), None, "test", False)["augment"]
    assert isinstance(augment, KorniaAugment) and augment.crop_padding == 1 and augment.seed == config.seed
    assert augment.entries == [(op["name"], {k: v for k, v in op.items() if k != "name"}) for op in DIGITS_PIPELINE]
    raw["data"]["augment"] = {"crop_padding": 1}
    config = validate(raw)
    assert distiller_kwargs(config, config.training, Normalize(None, None), None, "test", False)["augment"] == \
        Augment(1, False, config.seed)
    problems = _problems([DIGITS_PIPELINE[0], {"name": "RandomNothing"}])
    assert len(problems) == 1
    assert problems[0].startswith("data.augment.pipeline[1]: unknown kornia augmentation 'RandomNothing'")
    assert _problems([{"name": "ColorJitter", "brightnes": 0.2}])[0].startswith(
        "data.augment.pipeline[0]: ColorJitter: unknown argument 'brightnes'")
    assert _problems([{"name": "RandomResizedCrop", "size": [8, 8], "scale": [1.5, 0.5]}])[0].startswith(
        "data.augment.pipeline[0]: kornia.augmentation.RandomResizedCrop(")
    assert _problems([{"p": 0.5}]) == ["data.augment.pipeline[0].name: required; add it"]


def test_without_kornia_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "kornia.augmentation", None)
    problems = _problems([{"name": "RandomHorizontalFlip"}])
    assert len(problems) == 1 and 'pip install "kdistill[augment]"' in problems[0]
    with pytest.raises(ImportError, match=r"kdistill\[augment\]"):
        KorniaAugment([{"name": "RandomHorizontalFlip"}])
