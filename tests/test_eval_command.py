"""`kdistill eval` (issue 9, item 7): a model's scores without training, as a run would measure them."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO
from rich.console import Console

from kdistill import cli_eval
from kdistill.config import load_config
from kdistill.data.transforms import Normalize
from kdistill.engine import Distiller
from kdistill.evaluate import count_parameters
from kdistill.experiment import run_experiment
from kdistill.methods import HardLabel
from kdistill.models import build_model

CNN = {"channels": [8, 16]}


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli_eval.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["eval", *argv])


def rows_of(capsys, *argv: str) -> list[dict]:
    assert cli_eval.run(parse(*argv, "--json", "--device", "cpu"), Console()) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def checkpoint(digits, tmp_path_factory):
    """A CNN trained on digits with the data set's statistics, saved as a state dict."""
    bundle, train, _ = digits
    torch.manual_seed(0)
    model = build_model("cnn", 10, (1, 8, 8), CNN)
    Distiller(None, model, [HardLabel()], progress=False, student_normalization=Normalize(bundle.mean, bundle.std),
              device="cpu").fit(train, epochs=4)
    path = tmp_path_factory.mktemp("eval") / "cnn.pt"
    torch.save(model.state_dict(), path)
    return model.eval(), path


def test_scores_a_checkpoint_as_the_distiller_does(digits, checkpoint, capsys):
    bundle = digits[0]
    model, path = checkpoint
    expected = Distiller(None, model, progress=False, device="cpu",
                         student_normalization=Normalize(bundle.mean, bundle.std)).evaluate(bundle.test)
    [row] = rows_of(capsys, "cnn", "--options", "{channels: [8, 16]}", "--checkpoint", str(path),
                    "--normalize", "dataset")
    assert row["acc"] == pytest.approx(expected["acc"]) and row["acc"] > 0.8
    assert row["acc_top5"] == pytest.approx(expected["acc_top5"])
    assert row["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert row["parameters"] == count_parameters(model) and row["samples"] == len(bundle.test) == 450
    assert row["size_bytes"] > 4 * row["parameters"] and row["latency_ms"] > 0


def test_the_default_for_a_checkpoint_is_none_and_the_better_choice_is_named(checkpoint, capsys):
    _, path = checkpoint
    [row] = rows_of(capsys, "cnn", "--options", "{channels: [8, 16]}", "--checkpoint", str(path), "--split", "val")
    assert row["normalize"] == "none" and row["samples"] == 136  # 10 % (stratified) of the 1,347 training images
    assert "--normalize dataset" in row["hint"] and "normalize: dataset" in row["hint"]


def test_a_runs_stages_score_what_the_run_reported(tmp_path, capsys):
    config = load_config(None, [], {"name": "t", "training": {"epochs": 1}, "baseline": True,
                                    "teacher": {"name": "cnn", "options": CNN, "training": {"epochs": 2}}})
    result = run_experiment(config, tmp_path / "run", progress=False)
    capsys.readouterr()
    rows = {row["model"]: row for row in rows_of(capsys, "--run", str(tmp_path / "run"))}
    assert set(rows) == {"teacher", "student-scratch", "student-distilled"}
    reported = {r.role: r.accuracy for r in result.rows}
    assert rows["teacher"]["acc"] == pytest.approx(reported["teacher"])
    assert rows["student-scratch"]["acc"] == pytest.approx(reported["student (scratch)"])
    assert rows["student-distilled"]["acc"] == pytest.approx(reported["student (distilled)"])

    # a stage that has not finished is said to be missing from the table (it was left out silently)
    distilled = tmp_path / "run" / "student-distilled"
    (distilled / "student.pt").rename(distilled / "kept.pt")
    (distilled / "checkpoints").mkdir(exist_ok=True)
    (distilled / "checkpoints" / "last.pt").write_bytes(b"")
    assert cli_eval.run(parse("--run", str(tmp_path / "run"), "--json", "--device", "cpu"), Console()) == 0
    captured = capsys.readouterr()
    assert {json.loads(line)["model"] for line in captured.out.splitlines() if line.startswith("{")} == {
        "teacher", "student-scratch"}
    assert "stages student-distilled have not finished and are not scored" in captured.err


@pytest.mark.parametrize("argv, expected", [
    (["nosuch"], "MODEL: unknown model 'nosuch'"),
    (["mlp", "--checkpoint", "absent.pt"], "--checkpoint: file does not exist"),
    (["mlp", "--checkpoint", "."], "--checkpoint: . is a directory, not a weights file"),
    (["mlp", "--options", "{hidden: [8"], "--options: not valid YAML"),
    (["mlp", "--data", "nodata"], "--data: unknown dataset 'nodata'"),
    (["--run", "."], "not a run directory"),
    ([], "MODEL: give a model"),
])
def test_bad_input_is_one_line_with_exit_code_2(tmp_path, argv, expected):
    done = subprocess.run([sys.executable, "-m", "kdistill.cli", "eval", *argv], cwd=tmp_path, capture_output=True,
                          text=True, env={"OMP_NUM_THREADS": "1", "PATH": "", "PYTHONPATH": str(REPO / "src")},
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr and "Traceback" not in done.stderr
