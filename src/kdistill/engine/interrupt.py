"""Ctrl-C (or SIGTERM) as a request: the loop stops after the current step and writes a resumable
checkpoint. SIGTERM counts as Ctrl-C because that is how batch schedulers, `timeout` and container
runtimes stop a job, and a job stopped that way must be as resumable as one stopped by hand."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path


class TrainingInterrupted(KeyboardInterrupt):
    """Raised after Ctrl-C once a resumable checkpoint has been written."""

    def __init__(self, checkpoint: Path | None) -> None:
        super().__init__(f"interrupted; checkpoint at {checkpoint}" if checkpoint else "interrupted")
        self.checkpoint = checkpoint


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
SAME_STOP_SECONDS = 2.0  # signals this close to the first are one stop told twice, not a second stop


@contextlib.contextmanager
def stop_requests_on_signals(requested: Callable[[], bool], request: Callable[[], None]) -> Iterator[None]:
    """The first SIGINT or SIGTERM calls `request` (the loop finishes its step, checkpoints, raises
    TrainingInterrupted); a second one, with the request still pending, stops at once, unless it
    comes within SAME_STOP_SECONDS of the first: SLURM's scancel and systemd signal every process of
    a job and torchrun's agent passes the stop on too, so a worker gets one stop twice within
    milliseconds, and stopping at once there would lose the checkpoint (and leave the other ranks
    waiting in a collective). Signals reach the main thread only, so elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    first: list[float] = []

    def handler(signum, frame):
        if not requested():
            first[:] = [time.monotonic()]
            request()
        elif not first or time.monotonic() - first[0] > SAME_STOP_SECONDS:  # asked in code, or by a signal before
            raise KeyboardInterrupt

    previous = {number: signal.signal(number, handler) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
