"""`kdistill pair`: the Pareto front and the capacity gap on hand-made numbers, candidate parsing, and
one small comparison on the digits that never reads the test split."""

from __future__ import annotations

import json

import pytest
from sealed_data import SealedSplitRead  # noqa: F401  (the seal the end-to-end test relies on)

import kdistill.experiment
from kdistill.cli import main
from kdistill.cli_pair import parse_candidate
from kdistill.errors import BadInput
from kdistill.tune.pair import SCRATCH, PairPlan, PairRow, mark_front, run_pair, scaled_student
from kdistill.tune.pareto import Point, capacity_gaps, noise_margin, pareto_front


def test_pareto_front_of_hand_made_points():
    points = [Point("a", 0.90, (100, 1.0)),
              Point("b", 0.85, (50, 0.5)),
              Point("c", 0.80, (60, 0.6)),   # worse and costlier than b: dominated
              Point("d", 0.90, (100, 1.0)),  # equal to a: neither dominates the other
              Point("e", 0.95, (200, 2.0)),
              Point("f", 0.90, (100, 1.5)),  # as accurate as a but slower: dominated
              Point("g", 0.84, (40, 0.7))]   # smaller than b, slower, less accurate: a trade-off, kept
    assert pareto_front(points) == [True, True, False, True, True, False, True]


def test_capacity_gap_found_and_assistant_suggested():
    teacher_size = {"big": 1000, "mid": 400, "small": 100}
    student_size = {"s1": 200, "s2": 300, "s3": 500}
    accuracy = {("s1", "big"): 0.80, ("s1", "mid"): 0.84, ("s1", "small"): 0.81,   # gap: mid wins by 4 points
                ("s2", "big"): 0.86, ("s2", "mid"): 0.864, ("s2", "small"): 0.80,  # mid ahead by 0.4: within margin
                ("s3", "big"): 0.85, ("s3", "mid"): 0.88, ("s3", "small"): 0.83}   # mid (400) < s3 (500): no TA
    gaps = {g.student: g for g in capacity_gaps(accuracy, teacher_size, student_size, margin=0.005)}
    assert set(gaps) == {"s1", "s3"}
    assert (gaps["s1"].best_teacher, gaps["s1"].largest_teacher, gaps["s1"].assistant) == ("mid", "big", "mid")
    assert gaps["s1"].best_accuracy == 0.84 and gaps["s1"].largest_accuracy == 0.80
    assert "teacher_assistant" in gaps["s1"].sentence() and "big -> mid -> s1" in gaps["s1"].sentence()
    assert gaps["s3"].assistant is None and "no larger than itself" in gaps["s3"].sentence()
    assert capacity_gaps(accuracy, teacher_size, student_size, margin=0.05) == []


def test_margin_grows_on_a_small_validation_split():
    # 2 * sqrt((0.84 * 0.16 + 0.80 * 0.20) / n) = 2 * sqrt(0.2944 / n): n = 400 -> 0.054259, n = 10,000 -> 0.010852
    assert noise_margin(0.84, 0.80, 400) == pytest.approx(0.054259, abs=1e-6)
    assert noise_margin(0.84, 0.80, 10_000) == pytest.approx(0.010852, abs=1e-6)
    teacher_size, student_size = {"big": 1000, "mid": 400}, {"s1": 200}
    accuracy = {("s1", "big"): 0.80, ("s1", "mid"): 0.84}  # mid ahead by 4 points
    assert capacity_gaps(accuracy, teacher_size, student_size, margin=0.005, samples=400) == []  # noise there
    assert len(capacity_gaps(accuracy, teacher_size, student_size, margin=0.005, samples=10_000)) == 1
    assert capacity_gaps(accuracy, teacher_size, student_size, margin=0.05, samples=10_000) == []  # the floor holds
    with pytest.raises(ValueError, match="samples: must be >= 1"):
        noise_margin(0.5, 0.5, 0)


def test_a_paired_test_decides_where_the_outcomes_are_kept():
    """McNemar's verdict replaces the binomial margin where it is given; None falls back to it."""
    teacher_size, student_size = {"big": 1000, "mid": 400}, {"s1": 200}
    accuracy = {("s1", "big"): 0.80, ("s1", "mid"): 0.84}  # 4 points: inside the binomial margin at n = 400
    asked = []

    def paired(verdict):
        def decide(student, best, largest):
            asked.append((student, best, largest))
            return verdict
        return decide

    assert len(capacity_gaps(accuracy, teacher_size, student_size, samples=400, paired=paired(True))) == 1
    assert asked == [("s1", "mid", "big")]
    assert capacity_gaps(accuracy, teacher_size, student_size, samples=10_000, paired=paired(False)) == []
    assert capacity_gaps(accuracy, teacher_size, student_size, samples=400, paired=paired(None)) == []  # binomial
    assert capacity_gaps(accuracy, teacher_size, student_size, margin=0.05, paired=paired(True)) == []  # the floor


def test_front_marks_each_students_best_distilled_row_only():
    rows = [PairRow("s-small", "big", 0.70, 100, 1.0), PairRow("s-small", "mid", 0.75, 100, 1.0),
            PairRow("s-small", SCRATCH, 0.99, 100, 1.0),  # scratch rows are shown, not on the front
            PairRow("s-big", "big", 0.74, 400, 3.0),      # bigger and worse than s-small's best: off
            PairRow("s-huge", "big", 0.90, 900, 5.0)]
    mark_front(rows)
    assert [r.front for r in rows] == [False, True, False, False, True]


def test_candidates_parse_and_scale():
    assert parse_candidate("resnet8", "--students") == {"name": "resnet8"}
    assert parse_candidate("mlp{options: {hidden: [64]}, normalize: none}", "--students") == {
        "name": "mlp", "options": {"hidden": [64]}, "normalize": "none"}
    with pytest.raises(BadInput, match="not valid YAML"):
        parse_candidate("mlp{options: {hidden: [64}", "--students")
    with pytest.raises(BadInput, match="no model name"):
        parse_candidate("{options: {}}", "--teachers")
    assert scaled_student({"name": "mlp", "options": {"hidden": [64, 32]}}, 0.5)["options"] == {"hidden": [32, 16]}
    assert scaled_student({"name": "mlp"}, 2)["options"] == {"hidden": [512, 512]}  # the factory's default, scaled
    assert scaled_student({"name": "wrn", "options": {"depth": 16}}, 2)["options"] == {"depth": 16, "width": 4}
    with pytest.raises(BadInput, match="no width option"):
        scaled_student({"name": "resnet8"}, 2)
    for width in (0, -0.5, float("nan")):  # 0 trained a 1-unit mlp labelled "mlp", exit 0
        with pytest.raises(BadInput, match=r"--widths: each must be a number > 0"):
            scaled_student({"name": "mlp"}, width)


def test_cli_bad_candidate_is_one_line(tmp_path, capsys):
    code = main(["pair", "--students", "mlp{options: [", "--output-dir", str(tmp_path / "out"), "x.yaml"])
    assert code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err


def test_small_comparison_on_validation_never_reads_test(tmp_path, monkeypatch):
    monkeypatch.setattr(kdistill.experiment, "write_report", lambda *args, **kwargs: None)  # not checked here
    base = {"name": "pairs", "seed": 0, "data": {"name": "sealed_data:digits_sealed_test", "batch_size": 64},
            "student": {"name": "mlp", "options": {"hidden": [8]}},
            "methods": [{"name": "soft_target", "weight": 0.9, "temperature": 4.0},
                        {"name": "hard_label", "weight": 0.1}],
            "training": {"epochs": 2, "optimizer": {"name": "adam", "lr": 0.01}}}
    teachers = [{"name": "mlp", "options": {"hidden": [64]}, "training": {"epochs": 1}},
                {"name": "mlp", "options": {"hidden": [16]}, "training": {"epochs": 1}}]
    students = [{"name": "mlp", "options": {"hidden": [8]}}, {"name": "mlp", "options": {"hidden": [32]}}]
    work = tmp_path / "pairs"
    outcome = run_pair(PairPlan(base, teachers, students, work, scratch=True))
    assert outcome.split == "validation"
    assert [(r.student, r.teacher) for r in outcome.rows] == [
        ("mlp(hidden=[8])", "mlp(hidden=[64])"), ("mlp(hidden=[8])", "mlp(hidden=[16])"),
        ("mlp(hidden=[8])", SCRATCH), ("mlp(hidden=[32])", "mlp(hidden=[64])"),
        ("mlp(hidden=[32])", "mlp(hidden=[16])"), ("mlp(hidden=[32])", SCRATCH)]
    assert all(0.0 < r.accuracy <= 1.0 for r in outcome.rows)
    assert {r.parameters for r in outcome.rows if r.student == "mlp(hidden=[8])"} == {64 * 8 + 8 + 8 * 10 + 10}
    assert sum(r.front for r in outcome.rows) >= 1
    saved = json.loads((work / "pair.json").read_text())
    assert len(saved["rows"]) == 6 and (work / "pair-front.png").stat().st_size > 10_000
    assert "| student | teacher |" in (work / "pair.md").read_text()
    # the held-out 10 % of the digits' training split (136 images) scored every pairing: the margin says so
    assert saved["scored_samples"] == outcome.samples == 136
    # every pairing kept its students' right / wrong answers, so the noise rule is McNemar's paired test
    assert saved["noise_rule"] == "mcnemar" and outcome.paired
    assert "must differ by McNemar's exact test on the same 136 validation examples" in (work / "pair.md").read_text()
    # each teacher was trained once, and a resumed comparison reuses every finished pairing
    trained = sorted(p.relative_to(work).as_posix() for p in work.glob("teachers/*/teacher/student.pt"))
    assert len(trained) == 2
    again = run_pair(PairPlan(base, teachers, students, work, scratch=True), resume=True)
    assert [r.accuracy for r in again.rows] == [r.accuracy for r in outcome.rows]
