"""Result records: one JSON line per finished run in `benchmarks/results/<benchmark>.jsonl`.

A run is identified by (benchmark, variant, seed, config_digest); one already recorded is skipped,
so a benchmark that takes hours resumes where it stopped, across sessions. Tables are rendered
from these records only (`python benchmarks/table.py <benchmark>`), never typed in.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import REPO, machine

# overridable so that a smoke test of a benchmark does not write into the real records
RESULTS = Path(os.environ.get("KDISTILL_BENCH_RESULTS", REPO / "benchmarks" / "results"))
WORK = Path(os.environ.get("KDISTILL_BENCH_WORK", REPO / "benchmarks" / "runs"))  # checkpoints, caches (not in git)


def config_digest(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "src"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load(benchmark: str) -> list[dict[str, Any]]:
    path = RESULTS / f"{benchmark}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Records:
    """The records of one benchmark: look a run up, or append a finished one."""

    def __init__(self, benchmark: str, repeated_measurements: bool = False) -> None:
        """`repeated_measurements`: the records are one measurement taken again and again (a latency
        timed in turns, whose median is the figure), so every record of the same key is kept."""
        self.benchmark = benchmark
        self.path = RESULTS / f"{benchmark}.jsonl"
        self.repeated_measurements = repeated_measurements

    def find(self, variant: str, seed: int, config: dict[str, Any]) -> dict[str, Any] | None:
        digest = config_digest(config)
        for record in load(self.benchmark):
            if (record["variant"], record["seed"], record["config_digest"]) == (variant, seed, digest):
                return record
        return None

    def append(self, variant: str, seed: int, config: dict[str, Any], metrics: dict[str, Any], seconds: float,
               **extra: Any) -> dict[str, Any]:
        """Record a finished run, unless another process recorded the same run first: two processes
        that both found the run missing and trained it (or a rerun after a lost find) leave one record,
        the first, so a table's n never counts one seed twice."""
        record = {"benchmark": self.benchmark, "variant": variant, "seed": seed, "metrics": metrics,
                  **extra, "config": config, "config_digest": config_digest(config), "commit": git_commit(),
                  "date": datetime.now(UTC).isoformat(timespec="seconds"), "seconds": round(seconds, 1),
                  "machine": machine()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # find-then-write as one step across processes
            try:
                earlier = None if self.repeated_measurements else self.find(variant, seed, config)
                if earlier is not None:
                    print(f"{self.benchmark}: {variant} seed {seed} was recorded by another run; kept that record",
                          flush=True)
                    return earlier
                handle.write(json.dumps(record) + "\n")  # one line per write: a crash never leaves half a record
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return record


def train_seconds(history: list[dict[str, Any]]) -> float:
    """Training time summed over every epoch of a run, also across interruptions and resumes
    (the record's `seconds` is the wall time of the process that finished it)."""
    return round(sum(record.get("epoch_time_s", 0.0) for record in history), 1)


class Timer:
    def __enter__(self) -> Timer:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started
