"""Helpers shared by the benchmark scripts: data location, allocator settings, table printing."""

from __future__ import annotations

import ctypes
import os
import platform
import statistics
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    root = Path(os.environ.get("KDISTILL_DATA", REPO.parent / "shared" / "data"))
    if not root.is_dir():
        sys.exit(f"shared data folder not found at {root}; set KDISTILL_DATA")
    return root


def keep_freed_memory() -> None:
    """Stop glibc from returning freed memory to the OS between steps (page faults skew timings)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_trim_threshold, 1 << 30)
        libc.mallopt(m_mmap_threshold, 1 << 30)
    except OSError:
        pass


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} +- {statistics.stdev(values):.1f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
