"""What a reader of results is told (issue 8, fixes 5 and 6): a distillation run with no label
term is flagged, and "gap recovered" is only a number where there is a gap."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest

from kdistill import Distiller
from kdistill.config import load_config
from kdistill.experiment import DISTILLED, ExperimentResult, ModelResult, run_experiment
from kdistill.methods import DKD, HardLabel, SoftTarget
from kdistill.models import build_model


def _result(teacher: float, scratch: float, distilled: float) -> ExperimentResult:
    rows = [ModelResult(role, acc, 1, 1, 1.0) for role, acc in
            (("teacher", teacher), ("student (scratch)", scratch), (DISTILLED, distilled))]
    return ExperimentResult(Path("."), rows)


def test_gap_recovered_is_the_share_of_a_real_gap():
    result = _result(0.90, 0.80, 0.85)
    assert result.gap_recovered == pytest.approx(0.5)
    assert "recovered 50.0 %" in result.gap_summary() and "WARNING" not in result.gap_summary()


def test_no_gap_is_said_in_words_and_a_worse_student_is_flagged():
    # the case a run reported as "138.5 %": teacher below scratch, distilled student 2.8 points worse
    result = _result(0.700, 0.720, 0.692)
    assert result.gap_recovered is None
    text = result.gap_summary()
    assert "No gap to recover" in text and "%" in text and "138" not in text
    assert "WARNING: the distilled student is worse than the one trained from scratch (-2.80 points" in text


def test_a_student_above_its_teacher_is_said_in_words():
    text = _result(0.9422, 0.9397, 0.9451).gap_summary()  # a born-again run under label noise
    assert "recovered 216.0 %" in text and "above its teacher (+0.29 points)" in text
    assert "above its teacher" not in _result(0.90, 0.80, 0.85).gap_summary()


def test_a_born_again_chain_is_compared_with_the_generation_that_taught_it():
    # MNIST under 40 % label noise, seed 0: generation 2 is above the original teacher but not
    # above generation 1, which taught it; "above its teacher" alone would mislead
    result = _result(0.9422, 0.9397, 0.9451)
    result.rows.insert(2, ModelResult("born-again generation 1", 0.9453, 1, 1, 1.0))
    text = result.gap_summary()
    assert "above the original teacher (+0.29 points)" in text and "above its teacher" not in text
    assert "It learned from born-again generation 1 (94.53 %): -0.02 points against the model that taught it" in text
    assert "It learned from" not in _result(0.9422, 0.9397, 0.9451).gap_summary()
    # without a scratch student there is no gap, and the chain is still compared with its teacher
    result.rows = [r for r in result.rows if r.role != "student (scratch)"]
    text = result.gap_summary()
    assert text.startswith("Gap recovered: n/a") and "-0.02 points against the model that taught it" in text


def test_the_compare_table_cell_says_no_gap_and_flags_a_worse_student():
    assert _result(0.90, 0.80, 0.85).gap_cell() == "50.0"
    no_gap = "none: teacher not above scratch (WORSE than scratch: -2.80 points)"
    assert _result(0.700, 0.720, 0.692).gap_cell() == no_gap
    assert _result(0.90, 0.80, 0.78).gap_cell() == "-20.0 (WORSE than scratch: -2.00 points)"
    assert ExperimentResult(Path("."), []).gap_cell() == "n/a"


def test_worse_than_scratch_is_flagged_with_a_real_gap_too():
    text = _result(0.90, 0.80, 0.78).gap_summary()
    assert "recovered -20.0 %" in text and "WARNING" in text


def _fit(digits, methods, run_dir=None):
    bundle, train, _ = digits
    teacher = build_model("mlp", 10, (1, 8, 8), {"hidden": [32]})
    student = build_model("mlp", 10, (1, 8, 8), {"hidden": [16]})
    distiller = Distiller(teacher, student, methods, batch_size=256, progress=False, run_dir=run_dir,
                          student_normalization=(bundle.mean, bundle.std),
                          teacher_normalization=(bundle.mean, bundle.std))
    distiller.fit(train, epochs=1)
    return distiller


def test_methods_without_a_label_term_are_warned_about(digits, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="kdistill"):
        distiller = _fit(digits, [DKD()], tmp_path / "run")
    assert any("have no label term" in note and "dkd" in note for note in distiller.notes)
    assert "no label term" in caplog.text
    assert json.loads((tmp_path / "run" / "notes.json").read_text()) == distiller.notes


def test_a_label_term_silences_the_warning(digits, caplog):
    with caplog.at_level(logging.WARNING, logger="kdistill"):
        distiller = _fit(digits, [SoftTarget(weight=0.9), HardLabel(weight=0.1)])
    assert distiller.notes == [] and "label term" not in caplog.text


def test_a_method_that_would_never_run_in_the_fit_is_noted(digits, caplog):
    late = SoftTarget(weight=0.9)
    late.start_epoch = 5  # a two-stage recipe's second stage, in a fit of 1 epoch
    with caplog.at_level(logging.WARNING, logger="kdistill"):
        distiller = _fit(digits, [late, HardLabel(weight=0.1)])
    assert any("soft_target starts at epoch 5" in note and "never runs" in note for note in distiller.notes)
    assert "never runs" in caplog.text


def test_the_report_carries_the_warning(tmp_path):
    config = load_config(None, [f"output_dir={tmp_path / 'r'}", "teacher.training.epochs=2", "training.epochs=2",
                                "methods=[{name: dkd}]"])
    result = run_experiment(config, tmp_path / "r", progress=False)
    report = (tmp_path / "r" / "report.md").read_text()
    assert "## Warnings" in report and "no label term" in report
    assert not math.isnan(result.by_role(DISTILLED).accuracy)
