"""The command line's failure behaviour (issue 9): exit codes and one-line messages, `--debug`,
`--resume --set` limited to fields that cannot change finished stages, no debris after an early
failure (and never another's files), `metrics.jsonl` without repeated epochs, `--threads`."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch
from helpers import RequestStopAt

from kdistill import Distiller, OptimizerSettings, TrainingInterrupted
from kdistill.cli import main
from kdistill.cli_errors import report
from kdistill.config import ConfigError, dump_config, load_config
from kdistill.engine.metrics_log import append_record
from kdistill.errors import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_STORAGE, BadInput, StorageFailure, first_line
from kdistill.methods import HardLabel, SoftTarget
from kdistill.models import build_model
from kdistill.run.directory import create_run_dir, remove_debris
from kdistill.run.resume import load_resumed_config
from kdistill.run.threads import choose_threads
from kdistill.strategies.stages import fit_or_load, read_metrics


def test_first_line_quotes_one_bounded_line_of_any_error() -> None:
    assert first_line(ValueError("bad shape\n  at line 3")) == "bad shape"
    assert first_line(KeyError()) == "(no message)"
    assert first_line(KeyError(), with_type=True) == "KeyError"
    assert first_line(TypeError("  takes 2 arguments  "), with_type=True) == "TypeError: takes 2 arguments"
    long = first_line(RuntimeError("x" * 1000))
    assert len(long) == 300 and long.endswith("...")


@pytest.mark.parametrize(("error", "code", "expected"), [
    (BadInput(["training.epochs: must be > 0 (got 0)", "student: required; add it"]), EXIT_BAD_INPUT,
     ["kdistill: training.epochs: must be > 0 (got 0)", "kdistill: student: required; add it"]),
    (StorageFailure("no space left on device while writing the checkpoint x/last.pt"), EXIT_STORAGE,
     ["kdistill: no space left on device while writing the checkpoint x/last.pt"]),
    (OSError(28, "No space left on device", "runs/a/report.md"), EXIT_STORAGE,
     ["kdistill: no space left on device: cannot write runs/a/report.md; free space, then run again"]),
    (PermissionError(13, "Permission denied", "/data/runs"), EXIT_STORAGE,
     ["kdistill: permission denied: cannot write /data/runs; choose a writable --output-dir or fix the permissions"]),
    (NotADirectoryError(20, "Not a directory", "cfg.yaml/trials"), EXIT_BAD_INPUT,  # a file as --output-dir
     ["kdistill: cfg.yaml/trials: a part of it is a file, not a directory; give another path (an output directory "
      "must be a directory or not exist yet)"]),
    (FileNotFoundError(2, "No such file or directory", "/nonexist/x.html"), EXIT_BAD_INPUT,
     ["kdistill: /nonexist/x.html: no such file or directory; give another path (an output directory must be a "
      "directory or not exist yet)"]),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)\nsecond line"), EXIT_FAILURE,
     ["kdistill: RuntimeError: mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)",
      "kdistill: run with --debug to see where it was raised"]),
])
def test_each_kind_of_error_is_its_lines_and_exit_code(error, code, expected, capsys):
    assert report(error) == code
    captured = capsys.readouterr()
    assert captured.err.splitlines() == expected
    assert captured.out == ""


def test_debug_flag_and_environment_reraise(tmp_path, monkeypatch):
    monkeypatch.delenv("KDISTILL_DEBUG", raising=False)
    assert main(["run", str(tmp_path / "nope.yaml")]) == EXIT_BAD_INPUT
    with pytest.raises(ConfigError, match="no such config file"):
        main(["--debug", "run", str(tmp_path / "nope.yaml")])
    with pytest.raises(ConfigError, match="no such config file"):
        main(["run", str(tmp_path / "nope.yaml"), "--debug"])
    monkeypatch.setenv("KDISTILL_DEBUG", "1")
    with pytest.raises(ConfigError, match="no such config file"):
        main(["run", str(tmp_path / "nope.yaml")])


def write_run(run_dir, overrides=()):
    config = load_config(None, ["training.epochs=2", "teacher.training.epochs=1", *overrides])
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(dump_config(config))
    return config


def test_resume_takes_only_settings_that_cannot_change_finished_stages(tmp_path):
    run = tmp_path / "run"
    write_run(run)
    config = load_resumed_config(run, ["training.device=cpu", "data.num_workers=0", "teacher.training.device=cpu"])
    assert config.training.device == "cpu" and config.teacher.training.device == "cpu"
    assert load_config(run / "config.yaml").training.device == "cpu"  # written back for later resumes
    before = (run / "config.yaml").read_text()
    for assignment, name in [("methods.0.temperature=2", "methods[0].temperature"), ("training.epochs=3", None),
                             ("seed=1", None), ("data.root=/elsewhere", None), ("data.batch_size=32", None)]:
        name = name or assignment.partition("=")[0]
        with pytest.raises(ConfigError, match=re.escape(f"--set {name}: refused, it changes what the finished stages")):
            load_resumed_config(run, [assignment])
    assert (run / "config.yaml").read_text() == before


def test_failed_run_removes_only_what_it_created(tmp_path):
    fresh = tmp_path / "runs" / "a"
    created = create_run_dir(fresh)
    assert created == tmp_path / "runs"
    (fresh / "config.yaml").write_text("x")
    assert remove_debris(fresh, created) and not (tmp_path / "runs").exists()

    empty = tmp_path / "given"
    empty.mkdir()
    assert create_run_dir(empty) is None  # it existed (empty): only its contents are the run's
    (empty / "teacher").mkdir()
    (empty / "teacher" / "metrics.jsonl").write_text("")
    assert remove_debris(empty, None)
    assert empty.is_dir() and list(empty.iterdir()) == []

    kept = tmp_path / "kept"
    (kept / "teacher" / "checkpoints").mkdir(parents=True)
    (kept / "teacher" / "checkpoints" / "last.pt").write_bytes(b"resumable")
    assert not remove_debris(kept, kept)
    assert (kept / "teacher" / "checkpoints" / "last.pt").exists()


def test_late_failure_in_a_given_empty_directory_leaves_it_empty(tmp_path, monkeypatch, capsys):
    given = tmp_path / "given"
    given.mkdir()
    teacher = tmp_path / "teacher.pt"
    torch.save(build_model("mlp", 7, (1, 8, 8), {"hidden": [16]}).state_dict(), teacher)
    monkeypatch.chdir(tmp_path)
    code = main(["run", "--no-progress", "--output-dir", str(given), "--set", f"teacher.checkpoint={teacher}",
                 "--set", "teacher.name=mlp", "--set", "teacher.options={hidden: [16]}"])
    assert code == EXIT_BAD_INPUT, capsys.readouterr()
    assert "teacher.checkpoint" in capsys.readouterr().err
    assert given.is_dir() and list(given.iterdir()) == []


def test_metrics_past_the_checkpoint_are_dropped_on_resume(digits, tmp_path):
    """A run killed after logging epochs its checkpoint never saw: the resumed run logs each epoch once."""
    bundle, train, val = digits
    stage = tmp_path / "stage"

    def make(stop_at):
        torch.manual_seed(0)
        student = build_model("mlp", 10, (1, 8, 8), {"hidden": [16]})
        teacher = build_model("mlp", 10, (1, 8, 8), {"hidden": [32]})
        return student, lambda: Distiller(teacher, student, [SoftTarget(weight=0.5), HardLabel(weight=0.5)],
                                          optimizer=OptimizerSettings(name="sgd", lr=0.05), batch_size=256,
                                          run_dir=stage, progress=False, callbacks=[RequestStopAt(stop_at)])

    student, make_distiller = make(stop_at=7)  # 5 steps an epoch: stops in epoch 2, checkpoint at (1, 2)
    with pytest.raises(TrainingInterrupted):
        fit_or_load(stage, student, make_distiller, train, val, 3)
    assert [row["epoch"] for row in read_metrics(stage)] == [1]
    logged = read_metrics(stage)[0]
    with open(stage / "metrics.jsonl", "a") as handle:  # what a later attempt logged before it was killed
        for epoch in (2, 3):
            handle.write(json.dumps({**logged, "epoch": epoch, "train/loss": -1.0}) + "\n")
        handle.write('{"stage": "stage", "epo')  # and a row cut short
    student, make_distiller = make(stop_at=None)
    fit_or_load(stage, student, make_distiller, train, val, 3, resume=True)
    rows = read_metrics(stage)
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert all(row["train/loss"] > 0 for row in rows)
    assert rows[0] == logged


def test_append_record_replaces_an_epoch_logged_twice(tmp_path):
    append_record(tmp_path, {"epoch": 1, "v": 1})
    append_record(tmp_path, {"epoch": 2, "v": 2})
    append_record(tmp_path, {"epoch": 2, "v": 3})  # epoch 2 again: its checkpoint was never written
    append_record(tmp_path, {"epoch": 3, "v": 4})
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"epoch": 1, "v": 1}, {"epoch": 2, "v": 3}, {"epoch": 3, "v": 4}]


def test_thread_defaults_do_not_oversubscribe(monkeypatch):
    for variable in ("KDISTILL_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert choose_threads(None) == 4
    assert choose_threads(None, processes=2) == 2
    assert choose_threads(None, processes=8) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert choose_threads(None) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert choose_threads(None) == 3
    monkeypatch.setenv("KDISTILL_THREADS", "2")
    assert choose_threads(None) == 2
    assert choose_threads(6) == 6
    monkeypatch.setenv("KDISTILL_THREADS", "0")
    with pytest.raises(BadInput, match="KDISTILL_THREADS: must be a whole number"):
        choose_threads(None)


def test_report_on_another_commands_output_says_whose_it_is(tmp_path, capsys):
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "tune.md").write_text("# search\n")
    assert main(["report", str(tmp_path / "search")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "no results.json, so not a finished kdistill run (it is the output of kdistill tune: read" in err
    assert "BadInput" not in err  # one message, not one wrapped in another


def test_a_device_that_is_not_there_is_bad_input_not_a_failure(capsys):
    assert main(["eval", "mlp", "--device", "gpu"]) == EXIT_BAD_INPUT
    assert "device: 'gpu' is not a device; use auto, cpu, cuda" in capsys.readouterr().err
