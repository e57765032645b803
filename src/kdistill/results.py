"""What an experiment produces: one row per model (accuracy, size, latency) and the run's summary.

A leaf module (no kdistill imports), shared by the experiment that fills it and the report that
prints it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DISTILLED = "student (distilled)"
SCRATCH = "student (scratch)"
GENERATION = "born-again generation "  # + k: the rows of a chain before its last generation (DISTILLED)


@dataclass
class ModelResult:
    role: str
    accuracy: float
    parameters: int
    size_bytes: int
    latency_ms: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExperimentResult:
    run_dir: Path
    rows: list[ModelResult]

    def by_role(self, role: str) -> ModelResult:
        return next(r for r in self.rows if r.role == role)

    def _gap_parts(self) -> tuple[float, float, float] | None:
        """(best teacher, scratch, distilled) accuracies, where the run has all three."""
        roles = {r.role for r in self.rows}
        if not {SCRATCH, DISTILLED} <= roles:
            return None
        teachers = [r.accuracy for r in self.rows if r.role.startswith("teacher") and not math.isnan(r.accuracy)]
        if not teachers:
            return None
        return max(teachers), self.by_role(SCRATCH).accuracy, self.by_role(DISTILLED).accuracy

    def _previous_generation(self) -> tuple[str, float] | None:
        """(role, accuracy) of the generation that taught the distilled row, in a born-again chain."""
        chain = [r for r in self.rows if r.role.startswith(GENERATION) and r.role[len(GENERATION):].isdigit()]
        if not chain:
            return None
        last = max(chain, key=lambda r: int(r.role[len(GENERATION):]))
        return last.role, last.accuracy

    @property
    def gap_recovered(self) -> float | None:
        """(distilled - scratch) / (teacher - scratch): the share of the gap distillation closed.

        None where it means nothing: no teacher, scratch or distilled row, or a teacher that is
        not better than the scratch student (then there is no gap; a ratio would read as nonsense
        such as "138 %" for a student that lost accuracy)."""
        parts = self._gap_parts()
        if parts is None:
            return None
        teacher, scratch, distilled = parts
        gap = teacher - scratch
        return (distilled - scratch) / gap if gap > 1e-12 else None

    def gap_cell(self) -> str:
        """The gap recovered in a table cell (`kdistill compare`): a number only where there is a gap,
        and a flag where distillation made the student worse."""
        parts = self._gap_parts()
        if parts is None:
            return "n/a"
        gap = self.gap_recovered
        _, scratch, distilled = parts
        text = "none: teacher not above scratch" if gap is None else f"{100 * gap:.1f}"
        if distilled < scratch:
            text += f" (WORSE than scratch: {100 * (distilled - scratch):+.2f} points)"
        return text

    def gap_summary(self) -> str:
        """The gap in words, with a flag where distillation made the student worse; in a born-again chain,
        the last generation also against the generation that taught it (the teacher row is the chain's
        original teacher)."""
        parts = self._gap_parts()
        previous = self._previous_generation()
        if parts is None:
            text = ("Gap recovered: n/a (needs a teacher, a scratch student and a distilled student; the scratch "
                    "student is trained with `baseline: true` or `kdistill run --baseline`).")
            if previous is not None and any(r.role == DISTILLED for r in self.rows):
                text += " " + self._against_previous(previous, 100 * self.by_role(DISTILLED).accuracy)
            return text
        teacher, scratch, distilled = (100 * p for p in parts)
        change = f"{distilled - scratch:+.2f} points against scratch"
        if teacher - scratch <= 1e-10:
            text = (f"No gap to recover: the teacher ({teacher:.2f} %) is not better than the student trained "
                    f"from scratch ({scratch:.2f} %); the distilled student is at {distilled:.2f} % ({change}).")
        else:
            text = (f"Distillation recovered {100 * self.gap_recovered:.1f} % of the teacher-student accuracy gap "
                    f"({scratch:.2f} % scratch, {distilled:.2f} % distilled, {teacher:.2f} % teacher).")
        if distilled > teacher and teacher - scratch > 1e-10:
            whose = "its teacher" if previous is None else "the original teacher"
            text += (f" The distilled student is above {whose} ({distilled - teacher:+.2f} points), so the share "
                     "exceeds 100 %.")
        if previous is not None:  # in a chain the last generation learned from the one before, not the teacher
            text += " " + self._against_previous(previous, distilled)
        if distilled < scratch:
            text += f" WARNING: the distilled student is worse than the one trained from scratch ({change})."
        return text

    @staticmethod
    def _against_previous(previous: tuple[str, float], distilled: float) -> str:
        role, accuracy = previous
        return (f"It learned from {role} ({100 * accuracy:.2f} %): {distilled - 100 * accuracy:+.2f} points against "
                "the model that taught it.")


def write_results(result: ExperimentResult) -> None:
    payload = {
        "rows": [r.__dict__ for r in result.rows],
        "gap_recovered": result.gap_recovered,
    }
    (result.run_dir / "results.json").write_text(json.dumps(payload, indent=2))
