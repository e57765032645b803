"""Stop signals inside a training loop: the first asks for a stop after the step; the same stop told
twice at once (scancel, systemd and torchrun's agent all signal a worker) stays one stop; a second
stop later stops at once."""

from __future__ import annotations

import os
import signal

import pytest

from kdistill.engine import interrupt


class Stop:
    def __init__(self) -> None:
        self.requests = 0

    def requested(self) -> bool:
        return self.requests > 0

    def request(self) -> None:
        self.requests += 1


def test_one_stop_told_twice_at_once_is_one_stop_and_a_later_one_forces(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(interrupt.time, "monotonic", lambda: now[0])
    stop = Stop()
    with interrupt.stop_requests_on_signals(stop.requested, stop.request):
        try:  # a KeyboardInterrupt escaping a test would end the whole pytest session
            os.kill(os.getpid(), signal.SIGTERM)
            now[0] += 0.01
            os.kill(os.getpid(), signal.SIGTERM)  # torchrun's agent passing on the stop scancel sent
        except KeyboardInterrupt:
            pytest.fail("one stop told twice at once stopped at once")
        assert stop.requests == 1
        now[0] += interrupt.SAME_STOP_SECONDS + 0.5
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C, seconds later: stop at once
    assert signal.getsignal(signal.SIGTERM) is not None and stop.requests == 1


def test_a_signal_after_a_stop_asked_in_code_forces():
    stop = Stop()
    stop.request()
    with interrupt.stop_requests_on_signals(stop.requested, stop.request), pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGTERM)
