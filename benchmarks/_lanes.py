"""Student runs spread over several one-thread processes ("lanes"), for the benchmarks whose
students are small models: on this 2-core machine a 4 x 128 BERT or a 2-block MiniLM cut gains
little from a second thread (SST-2's best student: 469 s an epoch at 2 threads), so two one-thread
processes finish the same runs sooner than one two-thread process. Every run still appends its own
record and skips a recorded one, so lanes need no coordination beyond what the records give."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor


def split_into_lanes(runs: Sequence[tuple[str, int]], lanes: int,
                     cost: Callable[[str], float]) -> list[list[tuple[str, int]]]:
    """Longest runs first, each to the lane with the least work so far (LPT scheduling)."""
    work = [0.0] * lanes
    out: list[list[tuple[str, int]]] = [[] for _ in range(lanes)]
    for variant, seed in sorted(runs, key=lambda r: -cost(r[0])):
        lane = min(range(lanes), key=work.__getitem__)
        out[lane].append((variant, seed))
        work[lane] += cost(variant)
    return [lane for lane in out if lane]


def run_lanes(script: str, lanes: list[list[tuple[str, int]]], common: list[str]) -> None:
    """One process at a time per lane (`script ... --threads 1 --stages students --variants V --seeds S`
    for each of its runs, in order), all lanes at once; raises if any run failed. A SIGINT or SIGTERM
    (Ctrl-C, or `pkill -INT` on a background run, where the shell leaves SIGINT ignored) is passed to
    the runs in flight, which stop at a checkpoint as they would alone, and no lane starts another."""
    stop = threading.Event()
    running: set[subprocess.Popen] = set()
    lock = threading.Lock()

    def run_lane(lane: list[tuple[str, int]]) -> list[str]:
        failed = []
        for variant, seed in lane:
            command = [sys.executable, script, *common, "--threads", "1", "--stages", "students",
                       "--variants", variant, "--seeds", str(seed)]
            with lock:
                if stop.is_set():
                    break
                child = subprocess.Popen(command)
                running.add(child)
            if child.wait() != 0:
                failed.append(f"{variant} seed {seed}")
            with lock:
                running.discard(child)
        return failed

    def on_signal(number: int, _frame) -> None:
        with lock:
            stop.set()
            for child in running:  # a group-wide signal reaches them twice: kdistill takes it as one stop
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(number)

    previous = {number: signal.signal(number, on_signal) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        with ThreadPoolExecutor(len(lanes)) as pool:
            failed = [run for lane in pool.map(run_lane, lanes) for run in lane]
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if stop.is_set():
        raise SystemExit(f"lanes: stopped by a signal; the runs in flight kept checkpoints ({len(failed)} stopped)")
    if failed:
        raise SystemExit(f"lanes: {len(failed)} run(s) failed: {failed}")
