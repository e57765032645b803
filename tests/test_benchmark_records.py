"""The benchmarks' result records: one record per (variant, seed, config), even when two
processes finish the same run."""

from __future__ import annotations

import json
import multiprocessing
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def records_module(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import _records

    monkeypatch.setattr(_records, "RESULTS", tmp_path)
    return _records


@pytest.fixture
def table_module(records_module, monkeypatch):
    import table

    monkeypatch.setattr(table, "load", records_module.load)
    return table


def test_a_run_recorded_twice_keeps_the_first_record(records_module, tmp_path):
    first, second = records_module.Records("demo"), records_module.Records("demo")
    config = {"lr": 0.1}
    assert first.find("KD", 0, config) is None and second.find("KD", 0, config) is None  # both would train
    kept = first.append("KD", 0, config, {"test_acc": 81.0}, 1.0)
    returned = second.append("KD", 0, config, {"test_acc": 82.0}, 1.0)
    lines = (tmp_path / "demo.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["metrics"] == {"test_acc": 81.0}
    assert returned["metrics"] == kept["metrics"] == {"test_acc": 81.0}
    second.append("KD", 1, config, {"test_acc": 80.0}, 1.0)  # another seed is another run
    second.append("KD", 0, {"lr": 0.2}, {"test_acc": 80.0}, 1.0)  # and another config
    assert len((tmp_path / "demo.jsonl").read_text().splitlines()) == 3


def _append_after(barrier, results: str, index: int) -> None:
    sys.path.insert(0, str(BENCHMARKS))
    import _records

    _records.RESULTS = Path(results)
    barrier.wait()
    _records.Records("demo").append("KD", 0, {"lr": 0.1}, {"test_acc": float(index)}, 1.0)


def test_processes_finishing_the_same_run_at_once_leave_one_record(tmp_path):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    workers = [context.Process(target=_append_after, args=(barrier, str(tmp_path), i)) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert len((tmp_path / "demo.jsonl").read_text().splitlines()) == 1


def test_a_row_with_a_baseline_of_its_own_is_compared_with_it(records_module, table_module):
    records = records_module.Records("demo")
    for variant, errors, extra in [("teacher", 80, {}), ("scratch", 140, {}), ("distilled", 100, {}),
                                   ("scratch (jittered)", 70, {"baseline": "scratch (jittered)"}),
                                   ("distilled (jittered)", 90, {"baseline": "scratch (jittered)"})]:
        records.append(variant, 0, {}, {"test_errors": errors}, 1.0, **extra)
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in table_module.render("demo").splitlines()}
    assert rows["distilled"][3:5] == ["-40.00", "67 %"]  # (100 - 140) / (80 - 140)
    assert rows["scratch (jittered)"][3:5] == ["", ""]  # a baseline: no "gap" of 117 % against plain scratch
    # its teacher (80) is worse than its baseline (70): a difference, and no share of a gap
    assert rows["distilled (jittered)"][3:5] == ["+20.00 (vs scratch (jittered))", ""]


def test_no_gap_is_shared_out_when_the_teacher_leads_by_less_than_the_seed_spread(records_module, table_module):
    records = records_module.Records("demo")
    records.append("teacher", 0, {}, {"test_errors": 80}, 1.0)
    for seed, (scratch, distilled) in enumerate([(70, 90), (90, 100), (89, 90)]):  # scratch 83.0 +- 11.3
        records.append("scratch", seed, {}, {"test_errors": scratch}, 1.0)
        records.append("distilled", seed, {}, {"test_errors": distilled}, 1.0)
    text = table_module.render("demo")
    row = next(line for line in text.splitlines() if line.startswith("| distilled"))
    assert row.split(" | ")[3:5] == ["+10.33", ""]  # not (93.3 - 83) / (80 - 83) = -344 %
    assert "leads scratch by 3.00, less than scratch's seed spread" in text


def test_repeated_measurements_keep_every_record(records_module, tmp_path):
    latency = records_module.Records("timing", repeated_measurements=True)
    for ms in (2.0, 2.2, 1.9):  # one latency timed in turns again and again: the median of all is the figure
        latency.append("student", 0, {"threads": 1}, {"ms_b1": ms}, 1.0)
    assert len((tmp_path / "timing.jsonl").read_text().splitlines()) == 3


def test_the_table_keeps_the_latest_run_of_a_seed_and_says_what_it_left_out(records_module, table_module, tmp_path):
    """A teacher trained again under the same config (the machine lost it) is one run, the latest;
    a run under an older config is another kind of omission, and the notes tell them apart."""
    lines = [{"variant": "teacher", "seed": 0, "config_digest": "old", "date": "2026-11-27T00:00:00+00:00",
              "metrics": {"test_errors": 90}},
             {"variant": "teacher", "seed": 0, "config_digest": "new", "date": "2026-11-28T00:00:00+00:00",
              "metrics": {"test_errors": 82}},
             {"variant": "teacher", "seed": 0, "config_digest": "new", "date": "2026-11-30T00:00:00+00:00",
              "metrics": {"test_errors": 81}}]
    (tmp_path / "demo.jsonl").write_text("".join(json.dumps({"seconds": 1.0, **line}) + "\n" for line in lines))
    chosen, notes = table_module.latest_runs(records_module.load("demo"))
    assert [run["metrics"]["test_errors"] for run in chosen["teacher"]] == [81]
    assert notes == ["teacher: 1 run(s) under an older config not shown",
                     "teacher: 1 earlier run(s) of the same seed and config not shown (the latest is)"]


def test_a_row_taught_by_another_teacher_row_shares_out_that_teachers_gap(records_module, table_module):
    records = records_module.Records("demo")
    for variant, errors, extra in [("teacher", 80, {}), ("scratch", 140, {}),
                                   ("ensemble", 60, {"teacher_row": "ensemble"}),
                                   ("distilled (ensemble)", 100, {"teacher_row": "ensemble"})]:
        records.append(variant, 0, {}, {"test_errors": errors}, 1.0, **extra)
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in table_module.render("demo").splitlines()}
    # (100 - 140) / (60 - 140) = 50 %, where the plain teacher's gap would give 67 %
    assert rows["distilled (ensemble)"][3:5] == ["-40.00", "50 % (of ensemble)"]
    assert rows["ensemble"][3:5] == ["", ""]  # a teacher row is not a student with a share of its own gap
