"""A 2-process gloo run (torchrun) ends with the same student as 1 process with the same global batch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from distributed_case import train_case

HERE = Path(__file__).parent


def torchrun(tmp_path, mode: str = "full") -> None:
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(HERE / "_ddp_worker.py"), str(tmp_path), mode],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.slow
def test_two_process_gloo_run_equals_one_process(tmp_path):
    torchrun(tmp_path)
    reference = train_case(tmp_path / "reference")
    distributed = torch.load(tmp_path / "student.pt", weights_only=True)
    for name, value in reference.student.model.state_dict().items():
        torch.testing.assert_close(distributed[name], value, rtol=1e-4, atol=1e-5, msg=name)
    adapter = torch.load(tmp_path / "methods.pt", weights_only=True)
    for name, value in reference.methods.state_dict().items():
        torch.testing.assert_close(adapter[name], value, rtol=1e-4, atol=1e-5, msg=name)
    history = torch.load(tmp_path / "history.pt", weights_only=False)
    # metrics are reduced over both processes: the epoch saw every sample once
    assert history[-1]["train/acc"] == pytest.approx(reference.history[-1]["train/acc"], abs=2 / 1155)
    assert history[-1]["train/hint"] == pytest.approx(reference.history[-1]["train/hint"], rel=1e-4)
    assert history[-1]["val/acc"] == pytest.approx(reference.history[-1]["val/acc"], abs=1e-6)
    assert (tmp_path / "run" / "student.pt").exists() and (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.slow
def test_cli_nproc_runs_the_demo_with_two_processes(tmp_path):
    """`kdistill run --nproc 2` launches torchrun; rank 0 alone writes one complete run directory."""
    result = subprocess.run(
        [sys.executable, "-m", "kdistill.cli", "run", "--nproc", "2", "--device", "cpu", "--no-progress",
         "--output-dir", "run", "--set", "training.epochs=2", "--set", "teacher.training.epochs=2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("digits-demo: test set") == 1  # only rank 0 prints the table
    for name in ("config.yaml", "report.md", "results.json", "teacher/student.pt", "student-distilled/student.pt"):
        assert (tmp_path / "run" / name).exists(), name


@pytest.mark.slow
def test_two_process_run_interrupted_mid_epoch_resumes_to_the_same_student(tmp_path):
    """Stopped at step 25 (mid-epoch 2) on both ranks, resumed with 2 processes: equal to 1 process."""
    torchrun(tmp_path, "interrupt")
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["step_in_epoch"]) == (1, 6)
    assert not (tmp_path / "run" / "student.pt").exists()
    torchrun(tmp_path, "resume")
    reference = train_case(None)
    resumed = torch.load(tmp_path / "student.pt", weights_only=True)
    for name, value in reference.student.model.state_dict().items():
        torch.testing.assert_close(resumed[name], value, rtol=1e-4, atol=1e-5, msg=name)
    memory = torch.load(tmp_path / "methods.pt", weights_only=True)
    for name, value in reference.methods.state_dict().items():
        torch.testing.assert_close(memory[name], value, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.slow
def test_cli_nproc_born_again_stages(tmp_path):
    """Multi-stage strategies under 2 processes: rank 0 alone decides and writes each stage's record."""
    example = HERE.parent / "examples" / "digits_born_again.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "kdistill.cli", "run", str(example), "--nproc", "2", "--device", "cpu", "--no-progress",
         "--output-dir", "run", "--set", "training.epochs=1", "--set", "teacher.training.epochs=1",
         "--set", "strategy.generations=2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for k in (1, 2):
        assert (tmp_path / "run" / "born-again" / f"generation-{k}" / "student.pt").exists()
        assert (tmp_path / "run" / "born-again" / f"generation-{k}" / "stage.json").exists()
    assert "generation-2" in (tmp_path / "run" / "report.md").read_text()  # nested stages are reported


@pytest.mark.slow
def test_two_process_cache_build_is_byte_identical_and_trains_the_same_student(tmp_path):
    """Both ranks build their share of the teacher cache (logits and tapped features) into one
    memory map: the same bytes as one process's build, and the same student as one process."""
    torchrun(tmp_path, "cached")
    torch.set_num_threads(1)  # as the workers: the teacher's forward is then the same computation
    reference = train_case(tmp_path / "reference", cache_dir=tmp_path / "reference-cache")
    built, expected = sorted((tmp_path / "cache").iterdir()), sorted((tmp_path / "reference-cache").iterdir())
    assert [p.name for p in built] == [p.name for p in expected] == [reference.cache.key]  # no staging left
    files = sorted(p.name for p in expected[0].iterdir())
    assert sorted(p.name for p in built[0].iterdir()) == files and len(files) == 3  # logits, the tap, meta
    for name in files:
        assert (built[0] / name).read_bytes() == (expected[0] / name).read_bytes(), name
    distributed = torch.load(tmp_path / "student.pt", weights_only=True)
    for name, value in reference.student.model.state_dict().items():
        torch.testing.assert_close(distributed[name], value, rtol=1e-4, atol=1e-5, msg=name)
