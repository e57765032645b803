"""`report.html`: one self-contained file a person opens in a browser, beside `report.md`.

Plots are drawn with matplotlib (the `report` extra) and embedded as base64 PNG, so the file can be
mailed or archived alone: the training curves of every stage (every loss term from `metrics.jsonl`,
training and validation accuracy), and the diagnostics (reliability diagrams with their ECE,
per-class accuracy of teacher, scratch and distilled student with the flagged classes, confusion
matrices). Tables: the results, agreement / KL / ECE, per-class accuracy, label noise, any
compression table (`compress.json` / `compression.json`), the warnings. Hook for other tools: every
PNG at the top of the run directory or in its `figures/` folder (e.g. a search's history and
parameter importances, `tune-*.png`) is embedded too.

Each plot is a `<figure data-figure="...">`; a small script marks every image that decoded
(`data-rendered="yes"`), which a headless browser's DOM dump can check. Without matplotlib the
report still has every table and says how to get the plots.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from pathlib import Path
from typing import Any

from kdistill.report_sections import (
    SUMMARY_HEADER,
    compression_tables,
    noise_sentence,
    paired_sentence,
    per_class_columns,
    per_class_rows,
    read_json,
    summary_rows,
    weakness_sentence,
)
from kdistill.results import ExperimentResult

FIGURES_DIR = "figures"  # PNGs other tools leave for the report
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1100px;color:#222;
 background:#fff;padding:0 1em}
h1{border-bottom:2px solid #446;padding-bottom:.2em}h2{margin-top:1.8em;color:#335}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}th,td{border:1px solid #ccd;padding:.25em .6em;
 text-align:right}th{background:#eef}td:first-child,th:first-child{text-align:left}
tr.flag-inherited td{background:#fdd}tr.flag-weak td{background:#ffe9c6}
figure{margin:1em 0;border:1px solid #dde;padding:.5em;background:#fafafe}figure img{max-width:100%}
figcaption{font-size:.9em;color:#445}.note{color:#744}pre{background:#f4f4f8;padding:.8em;overflow:auto}
"""
MARK_RENDERED = """
window.addEventListener('load', function () {
  document.querySelectorAll('figure img').forEach(function (img) {
    img.setAttribute('data-rendered', img.complete && img.naturalWidth > 0 ? 'yes' : 'no');
  });
  document.body.setAttribute('data-ready', 'yes');
});
"""


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "run"


def _matplotlib_figure():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure


def png_data(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def figure_html(figure_id: str, data: str, caption: str) -> str:
    return (f'<figure data-figure="{html.escape(figure_id)}" id="fig-{html.escape(figure_id)}">'
            f'<img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def table_html(header: list[str], rows: list[list[str]], row_classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for index, row in enumerate(rows):
        css = f' class="{row_classes[index]}"' if row_classes and row_classes[index] else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# plots ---------------------------------------------------------------------------------------------
def _stage_order(path: Path) -> tuple[int, str]:
    """Teachers first, then the scratch student, then the strategy's stages."""
    name = path.parent.name
    return (0 if name.startswith("teacher") else 1 if name == "student-scratch" else 2), path.as_posix()


def stage_records(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Every stage's epoch records, by stage folder (relative to the run directory)."""
    stages = {}
    for path in sorted(Path(run_dir).rglob("metrics.jsonl"), key=_stage_order):
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line
        if rows:
            stages[path.parent.relative_to(run_dir).as_posix()] = rows
    return stages


def curve_keys(rows: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(loss terms, accuracies) logged in a stage: every `train/<term>` and `val/loss`; `*/acc*`."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    accuracy = [k for k in keys if "/" in k and k.split("/", 1)[1].startswith("acc")]
    losses = [k for k in keys if "/" in k and k not in accuracy and isinstance(rows[-1].get(k, 0.0), int | float)]
    return losses, accuracy


def curves_figure(Figure: Any, stage: str, rows: list[dict[str, Any]]) -> Any:
    from matplotlib.ticker import MaxNLocator

    losses, accuracy = curve_keys(rows)
    figure = Figure(figsize=(10, 3.4))
    for axis, keys, title in ((figure.add_subplot(1, 2, 1), losses, "loss terms"),
                              (figure.add_subplot(1, 2, 2), accuracy, "accuracy")):
        for key in keys:
            points = [(r["epoch"], r[key]) for r in rows if isinstance(r.get(key), int | float)]
            if points:
                axis.plot(*zip(*points, strict=True), marker="." if len(points) < 30 else None, label=key)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_title(f"{stage}: {title}")
        axis.grid(alpha=0.3)
        if keys:
            axis.legend(fontsize=8)
    return figure


def reliability_figure(Figure: Any, diagnostics: dict[str, Any]) -> Any:
    models = diagnostics["models"]
    figure = Figure(figsize=(3.3 * len(models), 3.3))
    for index, (role, summary) in enumerate(models.items()):
        axis = figure.add_subplot(1, len(models), index + 1)
        rel = summary["reliability"]
        edges = rel["edges"]
        width = edges[1] - edges[0]
        heights = [0.0 if a is None or math.isnan(a) else a for a in rel["accuracy"]]
        axis.bar(edges[:-1], heights, width=width, align="edge", edgecolor="#335", color="#8ab", label="accuracy")
        axis.plot([0, 1], [0, 1], "--", color="#a33", label="perfect calibration")
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.set_xlabel("confidence")
        axis.set_title(f"{role}\nECE {100 * rel['ece']:.2f} %", fontsize=9)
        if index == 0:
            axis.set_ylabel("accuracy")
            axis.legend(fontsize=7, loc="upper left")
    return figure


def per_class_figure(Figure: Any, diagnostics: dict[str, Any]) -> Any:
    columns = per_class_columns(diagnostics)
    names = diagnostics["classes"]
    weakness = diagnostics.get("weakness") or {}
    inherited, weak = set(weakness.get("inherited", [])), set(weakness.get("teacher_weak", []))
    figure = Figure(figsize=(max(6.0, 0.45 * len(names) * max(len(columns), 1)), 3.6))
    axis = figure.add_subplot(1, 1, 1)
    width = 0.8 / max(len(columns), 1)
    for offset, role in enumerate(columns):
        values = [0.0 if v is None or math.isnan(v) else v for v in diagnostics["models"][role]["per_class_accuracy"]]
        axis.bar([c + (offset - (len(columns) - 1) / 2) * width for c in range(len(names))], values, width=width,
                 label=role)
    axis.set_xticks(range(len(names)))
    axis.set_xticklabels([f"{n}*" if c in inherited else (f"{n}!" if c in weak else n) for c, n in enumerate(names)],
                         rotation=90 if len(names) > 20 else 0)
    for c, label in enumerate(axis.get_xticklabels()):
        if c in inherited or c in weak:
            label.set_color("#c00" if c in inherited else "#c70")
    axis.set_ylabel("test accuracy")
    axis.set_ylim(0, 1.05)
    axis.set_title("per-class accuracy (! teacher-weak, * inherited by the distilled student)", fontsize=10)
    axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(columns) or 1)
    return figure


def confusion_figure(Figure: Any, diagnostics: dict[str, Any]) -> Any:
    models = diagnostics["models"]
    names = diagnostics["classes"]
    figure = Figure(figsize=(3.6 * len(models), 3.5))
    for index, (role, summary) in enumerate(models.items()):
        axis = figure.add_subplot(1, len(models), index + 1)
        matrix = summary["confusion"]
        shares = [[v / max(sum(row), 1) for v in row] for row in matrix]  # each true class's row sums to 1
        axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        if len(names) <= 20:
            axis.set_xticks(range(len(names)), names, fontsize=7)
            axis.set_yticks(range(len(names)), names, fontsize=7)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_title(role, fontsize=9)
    return figure


def plots(run_dir: Path, diagnostics: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """(section, figure id, html) of every plot."""
    Figure = _matplotlib_figure()
    if Figure is None:
        return []
    found = []
    for stage, rows in stage_records(run_dir).items():
        found.append(("curves", f"curves-{slug(stage)}", figure_html(
            f"curves-{slug(stage)}", png_data(curves_figure(Figure, stage, rows)),
            f"{stage}: every loss term and accuracy per epoch")))
    if diagnostics:
        for name, draw, caption in (
                ("reliability", reliability_figure, "reliability diagrams (accuracy per confidence bin)"),
                ("per-class", per_class_figure, "per-class test accuracy, teacher / scratch / distilled"),
                ("confusion", confusion_figure, "confusion matrices (share of each true class)")):
            found.append(("diagnostics", name, figure_html(name, png_data(draw(Figure, diagnostics)), caption)))
    for path in sorted(Path(run_dir).glob("*.png")) + sorted((Path(run_dir) / FIGURES_DIR).glob("*.png")):
        figure_id = f"extra-{slug(path.stem)}"
        found.append(("extra", figure_id, figure_html(figure_id, base64.b64encode(path.read_bytes()).decode("ascii"),
                                                      path.stem.replace("_", " "))))
    return found


# the page ------------------------------------------------------------------------------------------
def diagnostics_html(diagnostics: dict[str, Any] | None, figures: list[str]) -> list[str]:
    parts = ["<h2>Diagnostics</h2>"]
    if not diagnostics:
        return parts + ['<p class="note">No diagnostics.json in this run directory.</p>']
    parts.append(f"<p>On the {diagnostics['test_samples']:,} test samples; ECE with {diagnostics['bins']} "
                 "equal-width confidence bins; KL at temperature 1.</p>")
    parts.append(table_html(SUMMARY_HEADER, summary_rows(diagnostics)))
    paired = paired_sentence(diagnostics)
    if paired:
        parts.append(f"<p>{html.escape(paired)}</p>")
    header, rows = per_class_rows(diagnostics)
    css = ["flag-inherited" if r[-1] == "INHERITED" else ("flag-weak" if r[-1] else "") for r in rows]
    parts += ["<h3>Per-class accuracy</h3>", f"<p>{html.escape(weakness_sentence(diagnostics))}</p>",
              table_html(header, rows, css)]
    return parts + figures


def write_html(run_dir: Path, name: str, config_yaml: str, result: ExperimentResult,
               diagnostics: dict[str, Any] | None, notes: list[str]) -> Path:
    """Write `run_dir/report.html` and return its path."""
    from kdistill.evaluate.profile_report import profile_table
    from kdistill.report import (  # report.py imports this module lazily
        TABLE_HEADER,
        TRIAL_NOTE,
        gap_sentence,
        table_rows,
        tuning_trial,
    )

    run_dir = Path(run_dir)
    drawn = plots(run_dir, diagnostics)
    by_section: dict[str, list[str]] = {}
    for section, _, fragment in drawn:
        by_section.setdefault(section, []).append(fragment)
    parts = [f"<h1>{html.escape(name)}</h1>", f"<p>Run directory: <code>{html.escape(str(run_dir))}</code></p>"]
    if tuning_trial(config_yaml):
        parts.append(f'<p class="note">{html.escape(TRIAL_NOTE)}</p>')
    parts += [table_html(TABLE_HEADER, table_rows(result)), f"<p>{html.escape(gap_sentence(result))}</p>"]
    if _matplotlib_figure() is None:
        parts.append('<p class="note">Plots need matplotlib: pip install "kdistill[report]", then '
                     "kdistill report RUN_DIR.</p>")
    profile = profile_table(result.rows)
    if profile is not None:  # FLOPs, latency with its spread, peak memory (the same table as report.md's)
        parts += ["<h2>Profile</h2>", table_html(*profile)]
    noise = read_json(run_dir / "label_noise.json")
    if noise:
        parts += ["<h2>Label noise</h2>", f"<p>{html.escape(noise_sentence(noise))}</p>"]
    if notes:
        parts += ["<h2>Warnings</h2>", "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"]
    parts += ["<h2>Training curves</h2>"] + by_section.get("curves", [])
    parts += diagnostics_html(diagnostics, by_section.get("diagnostics", []))
    for file_name, header, rows in compression_tables(run_dir):
        parts += [f"<h2>Compression (<code>{html.escape(file_name)}</code>)</h2>", table_html(header, rows)]
    if by_section.get("extra"):
        parts += ["<h2>More figures</h2>"] + by_section["extra"]
    parts += ["<h2>Resolved config</h2>", f"<pre>{html.escape(config_yaml)}</pre>"]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(name)}: kdistill report</title><style>{STYLE}</style>"
            f"<script>{MARK_RENDERED}</script></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
    path = run_dir / "report.html"
    path.write_text(page)
    return path
