"""Student runs spread over several one-thread processes ("lanes"), for the benchmarks whose
students are small models: on this 2-core machine a 4 x 128 BERT or a 2-block MiniLM cut gains
little from a second thread (SST-2's best student: 469 s an epoch at 2 threads), so two one-thread
processes finish the same runs sooner than one two-thread process. Every run still appends its own
record and skips a recorded one, so lanes need no coordination beyond what the records give."""

from __future__ import annotations

import subprocess
import sys
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
    for each of its runs, in order), all lanes at once; raises if any run failed. Ctrl-C reaches every
    child (one process group), and each stops at a checkpoint as it would alone."""
    def run_lane(lane: list[tuple[str, int]]) -> list[str]:
        failed = []
        for variant, seed in lane:
            command = [sys.executable, script, *common, "--threads", "1", "--stages", "students",
                       "--variants", variant, "--seeds", str(seed)]
            if subprocess.run(command, check=False).returncode != 0:
                failed.append(f"{variant} seed {seed}")
        return failed

    with ThreadPoolExecutor(len(lanes)) as pool:
        failed = [run for lane in pool.map(run_lane, lanes) for run in lane]
    if failed:
        raise SystemExit(f"lanes: {len(failed)} run(s) failed: {failed}")
