"""The run report's profiling section: one line per model that carries a profile record in
`ModelResult.extra["profile"]` (`Profile.as_record()` or `profile_onnx`), with the same columns
`kdistill compress` prints. The report calls `profile_section(result.rows)`; rows without a
profile are left out, so the section is empty (no lines) for a run that measured none."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kdistill.evaluate.profile import PROFILE_HEADER, profile_cells


def profile_table(rows: Sequence[Any]) -> tuple[list[str], list[list[str]]] | None:
    """(header, cells per profiled row) for any renderer; None when no row has a profile."""
    profiled = [(row.role, row.extra["profile"]) for row in rows if isinstance(getattr(row, "extra", None), dict)
                and isinstance(row.extra.get("profile"), dict)]
    if not profiled:
        return None
    batch = profiled[0][1].get("batch_size", "N")
    header = ["model"] + [h.replace("batch N", f"batch {batch}") for h in PROFILE_HEADER]
    return header, [[role, *profile_cells(record)] for role, record in profiled]


def profile_section(rows: Sequence[Any]) -> list[str]:
    """Markdown lines: a heading, what was measured, and the table; [] when no row has a profile."""
    profiled = [(row.role, row.extra["profile"]) for row in rows if isinstance(getattr(row, "extra", None), dict)
                and isinstance(row.extra.get("profile"), dict)]
    if not profiled:
        return []
    first = profiled[0][1]
    batch, threads = first.get("batch_size", "N"), first.get("threads", "?")
    header = ["model"] + [h.replace("batch N", f"batch {batch}") for h in PROFILE_HEADER]
    lines = ["## Profile", "",
             f"CPU, {threads} thread(s); latency: median of repeats after warm-up, [10th-90th percentile] (a busy "
             "machine shows as a wide spread); FLOPs from torch.utils.flop_counter (a multiply-add is 2); peak "
             "memory: torch's allocator during one forward pass at the larger batch (ONNX rows: the memory an ONNX "
             "Runtime session adds to a fresh process).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([role, *profile_cells(record)]) + " |" for role, record in profiled]
    return lines + [""]
