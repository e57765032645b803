"""The per-epoch record: what `metrics.jsonl` holds, one JSON object a line, and `history` keeps."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch


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


def append_record(run_dir: Path, record: dict[str, Any]) -> None:
    with open(run_dir / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")
