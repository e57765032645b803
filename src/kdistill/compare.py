"""Runs side by side: one column per run directory, one row per measure, read from the runs' files.

The measures: each table row's test accuracy (teacher, scratch, distilled, ...), the gap recovered,
the realised label-noise rate, and per model ECE and agreement / KL with the teacher (from
`diagnostics.json`), and each distilled student against the first run's on the same test samples
(McNemar's exact test on the per-sample outcomes, where the runs kept them over the same labels in
the same order). `compare_html` adds, per stage folder the runs share, their validation
accuracy curves on one plot. Used by `kdistill compare RUN_DIR...`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kdistill.errors import BadInput
from kdistill.evaluate.paired import compare_outcomes
from kdistill.report import read_result
from kdistill.report_sections import percent, read_json
from kdistill.results import ExperimentResult
from kdistill.run.diagnostics import distilled_outcomes


@dataclass
class RunSummary:
    label: str
    run_dir: Path
    result: ExperimentResult
    diagnostics: dict[str, Any] | None
    noise: dict[str, Any] | None
    values: dict[str, str] = field(default_factory=dict)


def _labels(run_dirs: list[Path]) -> list[str]:
    """Each run's folder name; the parent is added where two runs share a folder name."""
    names = [d.name for d in run_dirs]
    return [f"{d.parent.name}/{d.name}" if names.count(d.name) > 1 else d.name for d in run_dirs]


def summarise(run_dir: Path, label: str) -> RunSummary:
    if not run_dir.is_dir():
        raise BadInput(f"{run_dir}: not a directory; give run directories (the ones kdistill run printed)")
    summary = RunSummary(label, run_dir, read_result(run_dir), read_json(run_dir / "diagnostics.json"),
                         read_json(run_dir / "label_noise.json"))
    values = summary.values
    for row in summary.result.rows:
        values[f"{row.role}: test acc %"] = percent(row.accuracy)
    values["gap recovered %"] = summary.result.gap_cell()
    values["label noise realised %"] = percent(summary.noise["realised_rate"]) if summary.noise else "none"
    if summary.diagnostics:
        for role, model in summary.diagnostics["models"].items():
            values[f"{role}: ECE %"] = percent(model["reliability"]["ece"])
        for role, pair in summary.diagnostics["pairs"].items():
            values[f"{role}: agreement with teacher %"] = percent(pair["agreement"])
            values[f"{role}: KL(teacher ∥ model)"] = f"{pair['kl']:.4f}"
        weakness = summary.diagnostics.get("weakness")
        if weakness:
            names = summary.diagnostics["classes"]
            values["inherited weak classes"] = ", ".join(names[c] for c in weakness["inherited"]) or "none"
    return summary


def distilled_outcomes_of(summary: RunSummary) -> tuple[str, torch.Tensor] | None:
    """(labels digest, right / wrong per test sample) of the run's distilled student, where kept."""
    found = distilled_outcomes(summary.diagnostics)
    return found if found is not None and found[0] is not None else None


def add_paired_row(summaries: list[RunSummary]) -> None:
    """Each run's distilled student against the first run's on the same test samples (McNemar), where
    both kept their outcomes over the same labels in the same order."""
    first = distilled_outcomes_of(summaries[0])
    if first is None:
        return
    measure = f"distilled: right only here / only in {summaries[0].label}, McNemar p"
    for summary in summaries[1:]:
        other = distilled_outcomes_of(summary)
        if other is None or other[0] != first[0]:
            continue
        result = compare_outcomes(other[1], first[1])
        summary.values[measure] = f"{result.first_only} / {result.second_only}, p = {result.p_value:.3g}"


def compare_runs(run_dirs: list[Path]) -> tuple[list[str], list[list[str]], list[RunSummary]]:
    """(header, rows, summaries): one column per run, one row per measure any run has."""
    if len(run_dirs) < 1:
        raise BadInput("RUN_DIR: give at least one run directory (two or more to compare)")
    summaries = [summarise(Path(d), label) for d, label in zip(run_dirs, _labels([Path(d) for d in run_dirs]),
                                                               strict=True)]
    add_paired_row(summaries)
    measures = list(dict.fromkeys(key for s in summaries for key in s.values))
    rows = [[measure] + [s.values.get(measure, "") for s in summaries] for measure in measures]
    return ["measure"] + [s.label for s in summaries], rows, summaries


def compare_html(header: list[str], rows: list[list[str]], summaries: list[RunSummary]) -> str:
    """A self-contained page: the side-by-side table and the validation accuracy of each shared stage."""
    import html

    from kdistill.report_html import _matplotlib_figure, figure_html, png_data, slug, stage_records, table_html

    parts = ["<h1>kdistill compare</h1>", "<ul>" + "".join(
        f"<li><b>{html.escape(s.label)}</b>: <code>{html.escape(str(s.run_dir))}</code></li>" for s in summaries)
        + "</ul>", table_html(header, rows)]
    Figure = _matplotlib_figure()
    if Figure is not None:
        records = [stage_records(s.run_dir) for s in summaries]
        stages = list(dict.fromkeys(stage for r in records for stage in r))
        for stage in stages:
            figure = Figure(figsize=(6, 3.4))
            axis = figure.add_subplot(1, 1, 1)
            for summary, runs in zip(summaries, records, strict=True):
                points = [(r["epoch"], r["val/acc"]) for r in runs.get(stage, []) if "val/acc" in r]
                if points:
                    axis.plot(*zip(*points, strict=True), label=summary.label)
            axis.set_xlabel("epoch")
            axis.set_ylabel("validation accuracy")
            axis.set_title(stage)
            axis.grid(alpha=0.3)
            axis.legend(fontsize=8)
            figure_id = f"val-{slug(stage)}"
            parts.append(figure_html(figure_id, png_data(figure), f"{stage}: validation accuracy per epoch"))
    from kdistill.report_html import MARK_RENDERED, STYLE

    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>kdistill compare</title>"
            f"<style>{STYLE}</style><script>{MARK_RENDERED}</script></head><body>\n" + "\n".join(parts)
            + "\n</body></html>\n")
