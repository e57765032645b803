"""Distiller.fit never overwrites another run's directory; a rerun of the same fit, or a directory
left by a run that failed before its first checkpoint, may be reused."""

from __future__ import annotations

import pytest
import torch

from kdistill import Distiller, OptimizerSettings
from kdistill.errors import BadInput
from kdistill.methods import HardLabel, SoftTarget
from kdistill.methods.base import Method
from kdistill.models import build_model


class FailsAtFirstStep(Method):
    name = "fails"
    needs_teacher = False

    def loss_terms(self, ctx):
        raise RuntimeError("a bug in the user's method")


def make(digits, run_dir, seed=0, student_seed=123, methods=None):
    bundle, _, _ = digits
    torch.manual_seed(7)
    teacher = build_model("cnn", 10, (1, 8, 8), {"channels": [8, 16]})
    torch.manual_seed(student_seed)
    student = build_model("mlp", 10, (1, 8, 8), {"hidden": [16]})
    return Distiller(teacher, student, methods or [SoftTarget(weight=0.9), HardLabel(weight=0.1)],
                     optimizer=OptimizerSettings(name="sgd", lr=0.05), batch_size=64, seed=seed, progress=False,
                     run_dir=run_dir, student_normalization=(bundle.mean, bundle.std),
                     teacher_normalization=(bundle.mean, bundle.std))


def files(run_dir):
    return {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.fixture
def small(digits):
    return digits[1].subset(torch.arange(256))


@pytest.mark.parametrize("change", [{"seed": 1}, {"student_seed": 5}])
def test_another_runs_directory_is_refused_and_left_as_it_was(digits, small, tmp_path, change):
    run_dir = tmp_path / "run"
    make(digits, run_dir).fit(small, epochs=1)
    before = files(run_dir)
    assert {"checkpoints/last.pt", "student.pt", "fit.json", "metrics.jsonl"} <= set(before)
    with pytest.raises(BadInput) as caught:
        make(digits, run_dir, **change).fit(small, epochs=1)
    message = str(caught.value)
    assert "\n" not in message and str(run_dir) in message and "resume=True" in message
    assert ("seed" if "seed" in change else "student") in message  # what differs is named
    assert files(run_dir) == before


def test_a_different_number_of_epochs_is_another_run(digits, small, tmp_path):
    make(digits, tmp_path).fit(small, epochs=1)
    with pytest.raises(BadInput, match="epochs"):
        make(digits, tmp_path).fit(small, epochs=2)
    make(digits, tmp_path).fit(small, epochs=2, resume=True)  # continuing it is what resume is for


def test_the_same_fit_may_run_again_in_its_own_directory(digits, small, tmp_path):
    first = make(digits, tmp_path)
    first.fit(small, epochs=1)
    again = make(digits, tmp_path)
    again.fit(small, epochs=1)
    for name, value in first.student.model.state_dict().items():
        torch.testing.assert_close(again.student.model.state_dict()[name], value, rtol=0, atol=0)


def test_a_run_that_failed_before_its_first_checkpoint_leaves_a_reusable_directory(digits, small, tmp_path):
    with pytest.raises(RuntimeError, match="a bug"):
        make(digits, tmp_path, methods=[FailsAtFirstStep()]).fit(small, epochs=1)
    assert not (tmp_path / "checkpoints").exists()
    make(digits, tmp_path, seed=4).fit(small, epochs=1)  # corrected (another config): nothing is lost
    assert (tmp_path / "student.pt").exists()


def test_a_directory_with_a_checkpoint_but_no_record_is_refused(digits, small, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"someone's checkpoint")
    with pytest.raises(BadInput, match="no fit.json says what ran"):
        make(digits, tmp_path).fit(small, epochs=1)
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == b"someone's checkpoint"


def test_resume_without_a_checkpoint_is_refused_before_any_work(digits, tmp_path):
    from kdistill.file_checks import MissingFile

    bundle, _, _ = digits
    distiller = make(digits, tmp_path / "run")
    built = []
    distiller._build = lambda *args: built.append(args)  # the work the refusal must precede
    with pytest.raises(MissingFile, match="nothing to resume"):
        distiller.fit(bundle.train, epochs=1, resume=True)
    assert built == [] and not (tmp_path / "run").exists()
