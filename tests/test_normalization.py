"""Loaded teachers keep their own input statistics (issue 9, item 5).

Trained here: the data set's statistics by default. Loaded from a checkpoint: none by default,
printed at the start of the run, refused when the data set's statistics clearly fit it better, and
noted when it scores far below the accuracy its checkpoint records.
"""

from __future__ import annotations

import json

import pytest
import torch

from kdistill.config import ConfigError, NormalizeSpec, TeacherSpec, load_config
from kdistill.data.transforms import Normalize
from kdistill.engine import Distiller
from kdistill.experiment import run_experiment
from kdistill.methods import HardLabel
from kdistill.models import build_model
from kdistill.run.normalization import check_default_normalization, check_recorded_accuracy, normalization_choice

CNN = {"channels": [8, 16]}


def trained(digits, norm: Normalize, epochs: int = 5) -> torch.nn.Module:
    """A small CNN (BatchNorm: sensitive to its input statistics) trained on digits with `norm`."""
    bundle, train, val = digits
    torch.manual_seed(0)
    model = build_model("cnn", 10, (1, 8, 8), CNN)
    Distiller(None, model, [HardLabel()], progress=False, student_normalization=norm, batch_size=64,
              device="cpu").fit(train, epochs=epochs)
    return model.eval()


@pytest.fixture(scope="module")
def with_stats(digits):
    """Trained with the data set's statistics (mean 0.3, std 0.4)."""
    bundle = digits[0]
    return trained(digits, Normalize(bundle.mean, bundle.std))


def test_defaults_trained_here_dataset_loaded_none(digits, tmp_path):
    bundle = digits[0]
    checkpoint = tmp_path / "t.pt"
    torch.save(build_model("mlp", 10, (1, 8, 8)).state_dict(), checkpoint)
    trained_here = TeacherSpec(name="mlp")
    loaded = TeacherSpec(name="mlp", checkpoint=checkpoint)
    explicit = TeacherSpec(name="mlp", checkpoint=checkpoint, normalize=NormalizeSpec(mean=[0.5], std=[0.25]))
    norm, text = normalization_choice(trained_here, bundle)
    assert norm.enabled and torch.allclose(norm.mean.flatten(), torch.tensor(bundle.mean)) and "dataset" in text
    norm, text = normalization_choice(loaded, bundle)
    assert not norm.enabled and text == "none (the default for a loaded checkpoint)"
    norm, text = normalization_choice(explicit, bundle)
    assert norm.enabled and float(norm.std.flatten()[0]) == 0.25 and text == "mean [0.5] std [0.25]"
    # the words a config may use (once the schema takes them)
    for word, enabled in (("dataset", True), ("none", False)):
        spec = TeacherSpec.model_construct(name="mlp", checkpoint=checkpoint, normalize=word, options={})
        assert normalization_choice(spec, bundle)[0].enabled is enabled


def test_a_loaded_teacher_trained_with_the_statistics_is_not_silently_given_none(digits, with_stats, tmp_path):
    bundle, _, val = digits
    checkpoint = tmp_path / "teacher.pt"
    torch.save(with_stats.state_dict(), checkpoint)
    spec = TeacherSpec(name="cnn", options=CNN, checkpoint=checkpoint)
    with pytest.raises(ConfigError, match=r"teacher.normalize: not given.*normalize: dataset"):
        check_default_normalization(spec, "teacher", with_stats, bundle, val, "validation")
    chosen = spec.model_copy(update={"normalize": NormalizeSpec(mean=list(bundle.mean), std=list(bundle.std))})
    check_default_normalization(chosen, "teacher", with_stats, bundle, val, "validation")  # explicit: respected


def test_a_teacher_trained_on_raw_inputs_passes_with_the_default(digits, tmp_path):
    bundle, _, val = digits
    raw = trained(digits, Normalize(None, None))
    checkpoint = tmp_path / "raw.pt"
    torch.save(raw.state_dict(), checkpoint)
    spec = TeacherSpec(name="cnn", options=CNN, checkpoint=checkpoint)
    check_default_normalization(spec, "teacher", raw, bundle, val, "validation")


def test_an_untrained_teacher_near_chance_either_way_is_not_refused(digits, tmp_path):
    bundle, _, val = digits
    for seed in range(3):  # near chance with or without the statistics: no evidence for either
        torch.manual_seed(seed)
        model = build_model("mlp", 10, (1, 8, 8), {"hidden": [32]}).eval()
        checkpoint = tmp_path / f"untrained-{seed}.pt"
        torch.save(model.state_dict(), checkpoint)
        spec = TeacherSpec(name="mlp", options={"hidden": [32]}, checkpoint=checkpoint)
        check_default_normalization(spec, "teacher", model, bundle, val, "validation")


def test_far_below_the_recorded_accuracy_is_a_warning(digits, with_stats, tmp_path):
    loading = pytest.importorskip("kdistill.models.loading")
    if not hasattr(loading, "recorded_accuracy"):
        pytest.skip("checkpoints' recorded accuracy is not read by this version")
    bundle, _, val = digits
    norm = Normalize(bundle.mean, bundle.std)
    measured = Distiller(None, with_stats, progress=False, student_normalization=norm).evaluate(val)["acc"]
    for recorded, warned in ((99.9, measured < 0.949), (measured * 100, False)):
        checkpoint = tmp_path / f"{recorded}.pt"
        torch.save({"state_dict": with_stats.state_dict(), "best_acc1": recorded}, checkpoint)
        spec = TeacherSpec(name="cnn", options=CNN, checkpoint=checkpoint)
        note = check_recorded_accuracy(spec, "teacher", with_stats, norm, val, "validation")
        assert (note is not None) == warned, note
    # seen without its statistics it scores far below what it records: named, with the field to check
    checkpoint = tmp_path / "record.pt"
    torch.save({"state_dict": with_stats.state_dict(), "best_acc1": measured * 100}, checkpoint)
    spec = TeacherSpec(name="cnn", options=CNN, checkpoint=checkpoint)
    wrong = Normalize([0.9], [0.1])
    note = check_recorded_accuracy(spec, "teacher", with_stats, wrong, val, "validation")
    assert note is not None and "teacher.normalize" in note and f"{measured:.1%}" in note


def test_a_run_prints_each_models_normalisation_and_notes_a_poor_teacher(digits, with_stats, tmp_path, capsys):
    loading = pytest.importorskip("kdistill.models.loading")
    checkpoint = tmp_path / "teacher.pt"
    torch.save({"state_dict": with_stats.state_dict(), "best_acc1": 99.9}, checkpoint)
    bundle = digits[0]
    config = load_config(None, values={
        "name": "t", "data": {"name": "digits", "batch_size": 64}, "training": {"epochs": 1}, "baseline": False,
        "teacher": {"name": "cnn", "options": CNN, "checkpoint": str(checkpoint),
                    "normalize": {"mean": list(bundle.mean), "std": list(bundle.std)}},
        "student": {"name": "mlp", "options": {"hidden": [8]}}})
    run_experiment(config, tmp_path / "run", progress=False)
    printed = capsys.readouterr().out
    assert "input normalisation of teacher: mean [0.3] std [0.4]\n" in printed
    assert "input normalisation of student: dataset, mean [0.3] std [0.4] (the default)\n" in printed
    if hasattr(loading, "recorded_accuracy"):
        notes = json.loads((tmp_path / "run" / "notes.json").read_text())
        assert len(notes) == 1 and "far below the 99.9%" in notes[0]
        assert "far below the 99.9%" in (tmp_path / "run" / "report.md").read_text()
