"""`kdistill run` end to end: the demo's accuracy, and Ctrl-C then --resume equals an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kdistill.config import load_config
from kdistill.experiment import run_experiment

FAST = ["--set", "teacher.training.epochs=6", "--set", "training.epochs=8"]


@pytest.mark.slow
def test_demo_reaches_sane_accuracy_and_writes_run_directory(tmp_path):
    config = load_config(None, [f"output_dir={tmp_path / 'demo'}"])
    result = run_experiment(config, tmp_path / "demo", progress=False)
    accuracy = {row.role: row.accuracy for row in result.rows}
    assert accuracy["teacher"] > 0.97
    assert accuracy["student (scratch)"] > 0.9
    assert accuracy["student (distilled)"] > 0.9
    teacher, student = result.by_role("teacher"), result.by_role("student (distilled)")
    assert student.parameters < teacher.parameters / 10
    assert student.size_bytes < teacher.size_bytes
    run = tmp_path / "demo"
    for name in ("config.yaml", "report.md", "results.json", "teacher/metrics.jsonl", "teacher/student.pt",
                 "student-scratch/student.pt", "student-distilled/checkpoints/last.pt"):
        assert (run / name).exists(), name
    assert "recovered" in (run / "report.md").read_text()
    assert json.loads((run / "results.json").read_text())["gap_recovered"] == result.gap_recovered
    assert json.loads((run / "labels.json").read_text()) == [str(digit) for digit in range(10)]
    report = (run / "report.md").read_text()  # every model profiled: FLOPs, latency spread, peak memory
    profile = report.split("## Profile", 1)[1].split("\n## ", 1)[0]
    assert all(f"| {role} |" in profile for role in ("teacher", "student (scratch)", "student (distilled)"))


def cli(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "kdistill.cli", "run", *args, "--no-progress"], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


@pytest.mark.slow
def test_ctrl_c_leaves_resumable_run_equal_to_uninterrupted(tmp_path):
    # the reference keeps its scratch baseline apart: the interrupted run must train its own, not reuse it
    reference = cli(*FAST, "--set", "baselines_dir=ref-baselines", "--output-dir", "ref", cwd=tmp_path)
    assert reference.wait(timeout=300) == 0, reference.stdout.read()

    run = cli(*FAST, "--output-dir", "run", cwd=tmp_path)
    metrics = tmp_path / "run" / "student-scratch" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.05)
    run.send_signal(signal.SIGINT)
    output = run.communicate(timeout=120)[0]
    assert run.returncode == 130, output
    assert "kdistill run --resume run" in output
    assert "Traceback" not in output
    assert (tmp_path / "run" / "student-scratch" / "checkpoints" / "last.pt").exists()
    assert not (tmp_path / "run" / "student-distilled").exists()

    resumed = subprocess.run([sys.executable, "-m", "kdistill.cli", "run", "--resume", "run", "--no-progress"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    for stage in ("teacher", "student-scratch", "student-distilled"):
        a = torch.load(tmp_path / "ref" / stage / "student.pt", weights_only=True)
        b = torch.load(tmp_path / "run" / stage / "student.pt", weights_only=True)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{stage}: {key} differs"
    ref_results = json.loads((tmp_path / "ref" / "results.json").read_text())
    run_results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [r["accuracy"] for r in ref_results["rows"]] == [r["accuracy"] for r in run_results["rows"]]


def _wait_for_epochs(metrics: Path, epochs: int, seconds: float = 240) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= epochs):
        time.sleep(0.05)


@pytest.mark.slow
def test_sigterm_mid_training_stops_like_ctrl_c(tmp_path):
    """Schedulers and `timeout` stop jobs with SIGTERM: the run must end as after Ctrl-C (exit 130,
    a checkpoint, the resume line), not die with exit 143, and the resumed run must finish."""
    run = cli(*FAST, "--output-dir", "run", cwd=tmp_path)
    _wait_for_epochs(tmp_path / "run" / "student-scratch" / "metrics.jsonl", 2)
    run.send_signal(signal.SIGTERM)
    output = run.communicate(timeout=120)[0]
    assert run.returncode == 130, output
    assert "kdistill run --resume run" in output and "Traceback" not in output
    assert (tmp_path / "run" / "student-scratch" / "checkpoints" / "last.pt").exists()
    resumed = subprocess.run([sys.executable, "-m", "kdistill.cli", "run", "--resume", "run", "--no-progress"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (tmp_path / "run" / "results.json").exists()


def test_sigterm_outside_training_ends_with_exit_130(monkeypatch, capsys):
    """Outside a training loop (loading data, evaluating, profiling) SIGTERM is an interrupt too:
    exit 130 and a message, not Python's silent exit 143; the previous handler comes back after."""
    import kdistill.cli as cli_module

    def dispatch(args, console):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the handler interrupts the sleep
        return 0

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(cli_module, "_dispatch", dispatch)
    started = time.time()
    assert cli_module.main(["methods"]) == 130
    assert time.time() - started < 20
    assert "interrupted" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == before
