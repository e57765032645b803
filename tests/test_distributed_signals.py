"""Stopping `kdistill run --nproc 2` with SIGTERM (a scheduler, `timeout`, `kill`) or Ctrl-C sent to
the command the user started, or SIGTERM to every process of the job (systemd, SLURM's scancel):
the workers stop after a step and keep a resumable checkpoint, no process is left behind, the
command exits 130 only after they finished, and `--resume` completes. A second stop kills at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdistill.launch import descendants, kill_tree, wait_passing_stops

LINUX_PROC = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@LINUX_PROC
@pytest.mark.parametrize(("stop", "everyone", "workers", "resume"), [
    (signal.SIGTERM, False, 1, True),  # with a DataLoader worker: it must not die on the stop meant for its parent
    (signal.SIGINT, False, 0, False),
    (signal.SIGTERM, True, 0, False),  # the agent gets two stops: its own and the one passed on
], ids=["SIGTERM", "SIGINT", "SIGTERM-to-every-process"])
def test_a_stop_stops_every_worker_resumably(tmp_path, stop, everyone, workers, resume):
    command = [sys.executable, "-m", "kdistill.cli", "run", "--nproc", "2", "--device", "cpu", "--no-progress",
               "--output-dir", "run", "--set", "training.epochs=15", "--set", "teacher.training.epochs=1",
               "--set", "baseline=false", "--set", f"data.num_workers={workers}"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = tmp_path / "output.txt"
    with log.open("w") as sink:  # a file, not a pipe: a pipe would wait for any worker left behind
        # as from a terminal: a shell without job control starts background jobs with SIGINT ignored
        # (CI under nohup ... &), and the command would inherit that
        launcher = subprocess.Popen(command, cwd=tmp_path, env=environment, stdout=sink, stderr=subprocess.STDOUT,
                                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    first_epoch = tmp_path / "run" / "student-distilled" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 600  # a loaded 2-core machine: the teacher and 2 processes first
    while not first_epoch.exists() and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert first_epoch.exists(), log.read_text()[-3000:]
    processes = descendants(launcher.pid)
    assert len(processes) >= 3  # torchrun's agent and its 2 workers (and their DataLoader workers)
    for pid in [launcher.pid, *(processes if everyone else [])]:
        os.kill(pid, stop)
    code = launcher.wait(timeout=120)
    left = [pid for pid in processes if alive(pid)]  # at once: the command returns after its workers
    kill_tree(launcher.pid)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    output = log.read_text()
    assert not left, output[-3000:]
    assert code == 130, output[-3000:]
    assert "continue with: kdistill run --resume" in output and "Traceback" not in output, output[-3000:]
    assert not (tmp_path / "run" / "report.md").exists()
    if resume:
        resumed = subprocess.run([sys.executable, "-m", "kdistill.cli", "run", "--nproc", "2", "--no-progress",
                                  "--resume", "run"], cwd=tmp_path, env=environment, capture_output=True, text=True,
                                 timeout=300)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        assert (tmp_path / "run" / "report.md").exists()


@LINUX_PROC
def test_kill_tree_reaches_children_in_sessions_of_their_own(tmp_path):
    """torchrun starts each worker in a session of its own: killing the agent's group misses them."""
    script = ("import subprocess, sys, time\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],\n"
              "                         start_new_session=True)\n"
              "print(child.pid, flush=True)\n"
              "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert descendants(parent.pid) == [child]
    kill_tree(parent.pid)
    parent.wait(timeout=10)
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)


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


def test_the_first_stop_is_passed_on_once_and_a_second_kills_the_tree(monkeypatch, capsys):
    import kdistill.launch

    killed = []
    monkeypatch.setattr(kdistill.launch, "kill_tree", killed.append)
    once = Launcher(stops=1)
    assert wait_passing_stops(once) == 130 and once.signals == [signal.SIGTERM] and not killed
    twice = Launcher(stops=2)
    assert wait_passing_stops(twice) == 130 and twice.signals == [signal.SIGTERM] and killed == [4321]
    assert "stopped at once" in capsys.readouterr().err


def test_a_hang_up_while_waiting_is_a_stop_to_pass_on():
    """torchrun's agent sits in a session of its own, so a closed terminal reaches only the command."""
    import kdistill.launch

    before = signal.getsignal(signal.SIGHUP)
    with pytest.raises(KeyboardInterrupt), kdistill.launch._hangup_as_interrupt():
        os.kill(os.getpid(), signal.SIGHUP)
    assert signal.getsignal(signal.SIGHUP) == before
