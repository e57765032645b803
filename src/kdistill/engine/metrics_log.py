"""The per-epoch record: what `metrics.jsonl` holds, one JSON object a line, and `history` keeps."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from kdistill.engine.checkpoint import atomic_write_text, storage_failure


def epoch_record(stage: str, epoch: int, lr: float, sums: dict[str, torch.Tensor], elapsed: float) -> dict[str, Any]:
    """Means of the epoch's summed terms (`samples` and `correct` sums are expected among them)."""
    sums = dict(sums)
    samples = float(sums.pop("samples"))
    record: dict[str, Any] = {"stage": stage, "epoch": epoch + 1, "lr": lr,
                              "train/acc": float(sums.pop("correct")) / samples}
    record.update({f"train/{key}": float(value) / samples for key, value in sums.items()})
    record["epoch_time_s"] = elapsed
    record["samples_per_s"] = samples / elapsed if elapsed > 0 else math.nan
    return record


def read_records(path: Path) -> list[dict[str, Any]]:
    """The rows of a metrics log; a torn last row (a write cut short by a full disk or a kill) is skipped."""
    rows = []
    for line in Path(path).read_text().splitlines() if Path(path).exists() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _rewrite(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def append_record(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one epoch's record. Rows of this epoch or later are dropped first: they were logged by a
    run that died before its next checkpoint, and the resumed run logs them again (never twice)."""
    path = Path(run_dir) / "metrics.jsonl"
    try:
        text = path.read_text() if path.exists() else ""
        rows = read_records(path)
        if (rows and rows[-1].get("epoch", 0) >= record["epoch"]) or (text and not text.endswith("\n")):
            _rewrite(path, [row for row in rows if row.get("epoch", 0) < record["epoch"]])
        with open(path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
    except OSError as error:
        raise storage_failure(error, path) from error


def truncate_records(run_dir: Path, epochs_done: int) -> None:
    """Keep the rows of the first `epochs_done` epochs (those the checkpoint resumed from has seen)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return
    rows = read_records(path)
    kept = [row for row in rows if row.get("epoch", 0) <= epochs_done]
    if len(kept) != len(path.read_text().splitlines()):
        _rewrite(path, kept)
