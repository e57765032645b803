"""Stopping `kdistill run --nproc 2` with SIGTERM (a scheduler, `timeout`, `kill`) or Ctrl-C sent to
the command the user started: the workers stop after a step and keep a resumable checkpoint, no
process is left behind, the command exits 130 only after they finished, and `--resume` completes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def descendants(pid: int) -> set[int]:
    """Every live process under `pid` (from /proc: Linux)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc (Linux)")
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_to_the_launching_command_stops_every_worker_resumably(tmp_path, stop):
    command = [sys.executable, "-m", "kdistill.cli", "run", "--nproc", "2", "--device", "cpu", "--no-progress",
               "--output-dir", "run", "--set", "training.epochs=15", "--set", "teacher.training.epochs=2"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = tmp_path / "output.txt"
    with log.open("w") as sink:  # a file, not a pipe: a pipe would wait for any worker left behind
        launcher = subprocess.Popen(command, cwd=tmp_path, env=environment, stdout=sink, stderr=subprocess.STDOUT)
    first_epoch = tmp_path / "run" / "student-distilled" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 240
    while not first_epoch.exists() and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert first_epoch.exists(), log.read_text()[-3000:]
    workers = descendants(launcher.pid)
    assert len(workers) >= 3  # torchrun's agent and its 2 workers
    launcher.send_signal(stop)  # to the command alone, as `kill` or a scheduler sends it
    code = launcher.wait(timeout=120)
    left = [pid for pid in workers if alive(pid)]  # at once: the command returns after its workers
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    output = log.read_text()
    assert not left, output[-3000:]
    assert code == 130, output[-3000:]
    assert "continue with: kdistill run --resume" in output, output[-3000:]
    assert not (tmp_path / "run" / "report.md").exists()
    resumed = subprocess.run([sys.executable, "-m", "kdistill.cli", "run", "--nproc", "2", "--no-progress",
                              "--resume", "run"], cwd=tmp_path, env=environment,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert (tmp_path / "run" / "report.md").exists()


class Launcher:
    """A stand-in for the torchrun process: `wait()` is interrupted by the given stops, then ends."""

    def __init__(self, stops: int) -> None:
        self.pid, self.stops, self.signals = 4321, stops, []

    def wait(self) -> int:
        if self.stops:
            self.stops -= 1
            raise KeyboardInterrupt
        return 130

    def send_signal(self, number: int) -> None:
        self.signals.append(number)


def test_a_second_stop_kills_the_launchers_process_group(monkeypatch):
    from kdistill.launch import wait_passing_stops

    killed = []
    monkeypatch.setattr(os, "killpg", lambda group, number: killed.append((group, number)))
    once = Launcher(stops=1)
    assert wait_passing_stops(once) == 130 and once.signals == [signal.SIGTERM] and not killed
    twice = Launcher(stops=2)
    assert wait_passing_stops(twice) == 130 and twice.signals == [signal.SIGTERM]
    assert killed == [(4321, signal.SIGKILL)]
