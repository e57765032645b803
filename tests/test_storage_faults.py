"""A file system that refuses a write in the middle of a run (issue 9): one line that names what was
being written and which checkpoint survived, exit 3, the last good checkpoint untouched, no temp
file left, and a resume (once there is room) that ends with an uninterrupted run's weights.

The full disk is a per-process file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored: a write past it fails
with EFBIG, which kdistill treats as ENOSPC). A training checkpoint grows with its metrics history,
so a limit between the sizes of the epoch-2 and epoch-3 checkpoints lets epochs 1-2 be saved and
fails the third: the sizes are measured from the reference run's own checkpoint.
"""

from __future__ import annotations

import io
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdistill.engine.checkpoint import atomic_save, checkpoint_position
from kdistill.errors import EXIT_STORAGE, StorageFailure

EPOCHS = 5
RUN = ["--set", "teacher.name=mlp", "--set", "teacher.options={hidden: [8]}", "--set", "teacher.training.epochs=1",
       "--set", f"training.epochs={EPOCHS}", "--set", "baseline=false", "--no-progress"]
STAGE = "student-distilled"


def kdistill(args: list[str], cwd: Path, file_limit: int | None = None) -> subprocess.CompletedProcess:
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "KDISTILL_THREADS": "1", "COLUMNS": "300"}
    return subprocess.run([sys.executable, "-m", "kdistill.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, preexec_fn=limit if file_limit else None)


def checkpoint_size(state: dict, epochs: int) -> int:
    """The size of the checkpoint written after `epochs` epochs: same tensors, a shorter history."""
    history = json.loads(state["history"])[:epochs]
    buffer = io.BytesIO()
    torch.save({**state, "epoch": epochs, "history": json.dumps(history)}, buffer)
    return len(buffer.getvalue())


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(resource, "RLIMIT_FSIZE"), reason="needs RLIMIT_FSIZE")
def test_full_disk_mid_run_keeps_last_checkpoint_and_resume_equals_uninterrupted(tmp_path):
    reference = kdistill(["run", *RUN, "--output-dir", "ref"], tmp_path)
    assert reference.returncode == 0, reference.stderr
    state = torch.load(tmp_path / "ref" / STAGE / "checkpoints" / "last.pt", weights_only=True)
    sizes = [checkpoint_size(state, k) for k in (2, 3)]
    assert (tmp_path / "ref" / STAGE / "checkpoints" / "last.pt").stat().st_size == checkpoint_size(state, EPOCHS)
    assert (tmp_path / "ref" / "teacher" / "checkpoints" / "last.pt").stat().st_size < sizes[0]

    full = kdistill(["run", *RUN, "--output-dir", "run"], tmp_path, file_limit=sum(sizes) // 2)
    assert full.returncode == EXIT_STORAGE, full.stdout + full.stderr
    message = full.stderr.strip()
    assert "Traceback" not in full.stdout + full.stderr
    assert len(message.splitlines()) == 1, message
    assert f"while writing the checkpoint run/{STAGE}/checkpoints/last.pt" in message
    assert "the last good checkpoint (epoch 2) is intact" in message
    assert "kdistill run --resume run" in message
    checkpoints = tmp_path / "run" / STAGE / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.pt"]  # no temp file left behind
    assert checkpoint_position(checkpoints / "last.pt") == (2, 0)
    assert not (tmp_path / "run" / STAGE / "student.pt").exists()

    resumed = kdistill(["run", "--resume", "run", "--no-progress"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    for stage in ("teacher", STAGE):
        a = torch.load(tmp_path / "ref" / stage / "student.pt", weights_only=True)
        b = torch.load(tmp_path / "run" / stage / "student.pt", weights_only=True)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), stage
    # epoch 3 was logged before its checkpoint failed, and logged again by the resumed run: once in all
    rows = [json.loads(line) for line in (tmp_path / "run" / STAGE / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == list(range(1, EPOCHS + 1))


def test_failed_save_leaves_previous_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.pt"
    atomic_save({"epoch": 4, "step_in_epoch": 0, "w": torch.ones(3)}, path)
    before = path.read_bytes()

    def refuse(obj, handle):
        handle.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", refuse)
    with pytest.raises(StorageFailure) as caught:
        atomic_save({"epoch": 5, "w": torch.zeros(3)}, path)
    assert str(caught.value).startswith(f"no space left on device while writing the checkpoint {path}")
    assert "the last good checkpoint (epoch 4) is intact" in str(caught.value)
    assert caught.value.errno == 28
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]
