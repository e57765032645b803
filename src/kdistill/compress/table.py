"""The per-stage table of a compression run (markdown), from its rows."""

from __future__ import annotations

from collections.abc import Sequence

from kdistill.compress.pipeline import StageRow
from kdistill.evaluate.profile import PROFILE_HEADER, profile_cells


def kept(row: StageRow) -> str:
    """The stop rule's word on a row; none on a pruned model awaiting recovery (its recovery decides)."""
    if row.note.startswith("before recovery"):
        return "-"
    return "yes" if row.accepted else "no"


def stage_table(rows: Sequence[StageRow]) -> str:
    """One line per stage: artefact, validation accuracy (what the stop rule read: '-' in records
    made before it did), test accuracy and its change from the start, the profile columns, whether
    the stop rule kept it, and the note."""
    start = next((r.accuracy for r in rows if r.stage in ("start", "distil")), rows[0].accuracy if rows else 0.0)
    batch = next((r.profile.get("batch_size") for r in rows if r.profile.get("batch_size")), "N")
    header = ["stage", "artefact", "val acc %", "test acc %", "vs start"] + [
        h.replace("batch N", f"batch {batch}") for h in PROFILE_HEADER] + ["kept", "note"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        val = "-" if row.val_accuracy is None else f"{100 * row.val_accuracy:.2f}"
        cells = [row.stage, row.artefact, val, f"{100 * row.accuracy:.2f}", f"{100 * (row.accuracy - start):+.2f}",
                 *profile_cells(row.profile), kept(row), row.note]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
