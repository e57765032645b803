"""Ctrl-C as a request: the loop stops after the current step and writes a resumable checkpoint."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path


class TrainingInterrupted(KeyboardInterrupt):
    """Raised after Ctrl-C once a resumable checkpoint has been written."""

    def __init__(self, checkpoint: Path | None) -> None:
        super().__init__(f"interrupted; checkpoint at {checkpoint}" if checkpoint else "interrupted")
        self.checkpoint = checkpoint


@contextlib.contextmanager
def stop_requests_on_sigint(requested: Callable[[], bool], request: Callable[[], None]) -> Iterator[None]:
    """The first SIGINT calls `request` (the loop finishes its step, checkpoints, raises
    TrainingInterrupted); a second one, with the request still pending, stops at once. Signals
    reach the main thread only, so elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if requested():
            raise KeyboardInterrupt
        request()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
