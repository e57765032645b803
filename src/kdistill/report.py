"""Run directory -> `report.md`: the comparison table, each stage's last epoch, the config."""

from __future__ import annotations

import json
from pathlib import Path

from kdistill.config import ExperimentConfig, dump_config
from kdistill.results import ExperimentResult


def human_bytes(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


def table_rows(result: ExperimentResult) -> list[list[str]]:
    return [[r.role, f"{100 * r.accuracy:.2f}", f"{r.parameters:,}", human_bytes(r.size_bytes),
             f"{r.latency_ms:.3f}"] for r in result.rows]


TABLE_HEADER = ["model", "test acc %", "parameters", "size", "CPU latency ms / batch of 64"]


def gap_sentence(result: ExperimentResult) -> str:
    return result.gap_summary()


def run_notes(run_dir: Path) -> list[str]:
    """Every stage's warnings (`notes.json`, written by the Distiller), prefixed by the stage."""
    notes = []
    for path in sorted(run_dir.rglob("notes.json")):
        stage = path.parent.relative_to(run_dir).as_posix()
        label = "run" if stage == "." else f"`{stage}`"  # notes about the whole run sit at its top
        notes += [f"{label}: {note}" for note in json.loads(path.read_text())]
    return notes


def reused_baselines(run_dir: Path) -> list[str]:
    """Stages copied from the shared baselines folder rather than trained in this run."""
    lines = []
    for path in sorted(run_dir.rglob("baseline.json")):
        info = json.loads(path.read_text())
        if info.get("reused"):
            lines.append(f"`{path.parent.relative_to(run_dir)}` was not trained in this run: it is the scratch "
                         f"baseline kept in `{info['store']}` (same data, student, training and seed).")
    return lines


def write_report(run_dir: Path, config: ExperimentConfig, result: ExperimentResult) -> Path:
    lines = [f"# {config.name}", "", f"Run directory: `{run_dir}`", "",
             "| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(result)]
    lines += ["", gap_sentence(result), ""]
    lines += [line for reused in reused_baselines(run_dir) for line in (reused, "")]
    notes = run_notes(run_dir)
    if notes:
        lines += ["## Warnings", ""] + [f"- {note}" for note in notes] + [""]
    lines += ["## Stages (last epoch)", ""]
    for metrics_file in sorted(run_dir.rglob("metrics.jsonl")):
        records = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
        if records:
            last = records[-1]
            shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in last.items()
                              if k != "stage")
            lines.append(f"- `{metrics_file.parent.relative_to(run_dir)}`: {shown}")
    lines += ["", "## Resolved config", "", "```yaml", dump_config(config).rstrip(), "```", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
