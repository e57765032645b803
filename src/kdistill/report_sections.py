"""The report sections read from files of the run directory, as markdown: diagnostics, label noise,
compression. Shared by `report.md` (here) and `report.html` (`report_html`), which draws the plots.

Each reader returns None where the run has no such file, so an older run directory (or one without
a scratch student, or without a teacher) still gets a report with what it has.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from kdistill.data.label_noise import LABEL_NOISE_FILE
from kdistill.errors import BadInput, first_line
from kdistill.evaluate.paired import ALPHA

# a compression run's table (kdistill compress writes compress.json: {"rows": [...], "files": ...}); rendered
# where present in the run directory or below it, nested fields flattened ("profile.parameters")
COMPRESSION_FILES = ("compression.json", "compress.json")
CONFUSION_MAX_CLASSES = 20  # larger confusion matrices only as plots in report.html


def read_json(path: Path) -> Any:
    """A run file's JSON (None where absent); a damaged one (a copy cut short) is named, not a bare
    JSONDecodeError."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise BadInput(f"{path}: damaged, not readable JSON ({first_line(error)}); restore it from the run, or "
                       "delete it and run the experiment again to write it anew") from None


def percent(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def noise_sentence(noise: dict[str, Any]) -> str:
    asked = "" if noise.get("requested_rate") is None else f"{100 * noise['requested_rate']:.1f} % asked, "
    return (f"Label noise was injected into the training labels ({noise['kind']}, seed {noise['seed']}): "
            f"{asked}{100 * noise['realised_rate']:.2f} % realised ({noise['changed']:,} of {noise['samples']:,} "
            f"labels changed). Validation and test labels are clean.")


def label_noise_lines(run_dir: Path) -> list[str]:
    noise = read_json(Path(run_dir) / LABEL_NOISE_FILE)
    if not noise:
        return []
    return ["## Label noise", "", noise_sentence(noise), ""]


def summary_rows(diagnostics: dict[str, Any]) -> list[list[str]]:
    """Per model: test accuracy, ECE, and agreement / KL with the teacher."""
    rows = []
    for role, summary in diagnostics["models"].items():
        pair = diagnostics["pairs"].get(role)
        rows.append([role, percent(summary["accuracy"]), percent(summary["reliability"]["ece"]),
                     percent(pair["agreement"]) if pair else "", f"{pair['kl']:.4f}" if pair else ""])
    return rows


def paired_sentence(diagnostics: dict[str, Any]) -> str | None:
    """The distilled student against the scratch one on the same test samples, in words (McNemar)."""
    paired = diagnostics.get("distilled_vs_scratch")
    if not paired:
        return None
    b, c, p = paired["first_only"], paired["second_only"], paired["p_value"]
    better = "distilled" if b > c else "scratch"
    verdict = (f"beyond what the number of test samples explains (p < {ALPHA:g}): the {better} student is the "
               "better one here" if p < ALPHA else
               f"within what the number of test samples explains (p >= {ALPHA:g}): this run does not show either "
               "student to be the better one")
    return (f"Distilled against scratch on the same {paired['samples']:,} test samples: the distilled student "
            f"alone is right on {b:,}, the scratch student alone on {c:,}; exact McNemar test, two-sided p = "
            f"{p:.3g}: {verdict}. The test says whether these two trained models differ here; another "
            "training seed moves both, which one run cannot show.")


SUMMARY_HEADER = ["model", "test acc %", "ECE %", "top-1 agreement with teacher %", "KL(teacher ∥ model) nats"]


def per_class_columns(diagnostics: dict[str, Any]) -> list[str]:
    """Teacher, scratch and distilled roles present, in that order (the side-by-side table)."""
    roles = diagnostics["roles"]
    return [roles[k] for k in ("teacher", "scratch", "distilled") if roles.get(k)]


def per_class_rows(diagnostics: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    columns = per_class_columns(diagnostics)
    weakness = diagnostics.get("weakness") or {}
    weak, inherited = set(weakness.get("teacher_weak", [])), set(weakness.get("inherited", []))
    rows = []
    for c, name in enumerate(diagnostics["classes"]):
        flag = "INHERITED" if c in inherited else ("teacher weak" if c in weak else "")
        rows.append([name] + [percent(diagnostics["models"][r]["per_class_accuracy"][c]) for r in columns] + [flag])
    return ["class"] + [f"{r} %" for r in columns] + ["flag"], rows


def weakness_sentence(diagnostics: dict[str, Any]) -> str:
    weakness = diagnostics.get("weakness")
    if not weakness:
        return "Inherited weakness: n/a (needs a teacher and a distilled student)."
    names = diagnostics["classes"]
    weak = ", ".join(names[c] for c in weakness["teacher_weak"]) or "none"
    inherited = ", ".join(names[c] for c in weakness["inherited"]) or "none"
    return f"Teacher-weak classes: {weak}. Inherited by the distilled student: {inherited}. Rule: {weakness['rule']}"


def confusion_lines(diagnostics: dict[str, Any], role: str) -> list[str]:
    matrix = diagnostics["models"][role]["confusion"]
    names = diagnostics["classes"]
    return [f"Confusion matrix of {role} (rows: true class, columns: predicted):", ""] + md_table(
        ["true \\ predicted"] + names, [[names[i]] + [str(v) for v in row] for i, row in enumerate(matrix)]) + [""]


def diagnostics_lines(diagnostics: dict[str, Any] | None) -> list[str]:
    if not diagnostics:
        return ["## Diagnostics", "", "No `diagnostics.json` in this run directory (a run made before diagnostics, "
                "or one whose diagnostics failed: its log says why).", ""]
    lines = ["## Diagnostics", "", f"On the {diagnostics['test_samples']:,} test samples; ECE with "
             f"{diagnostics['bins']} equal-width confidence bins; KL at temperature 1.", ""]
    lines += md_table(SUMMARY_HEADER, summary_rows(diagnostics)) + [""]
    paired = paired_sentence(diagnostics)
    if paired:
        lines += [paired, ""]
    header, rows = per_class_rows(diagnostics)
    lines += ["### Per-class accuracy", ""] + md_table(header, rows) + ["", weakness_sentence(diagnostics), ""]
    if diagnostics["num_classes"] <= CONFUSION_MAX_CLASSES:
        lines += ["### Confusion matrices", ""]
        for role in diagnostics["models"]:
            lines += confusion_lines(diagnostics, role)
    else:
        lines += [f"Confusion matrices of {diagnostics['num_classes']} classes: see report.html.", ""]
    return lines


def compression_tables(run_dir: Path) -> list[tuple[str, list[str], list[list[str]]]]:
    """(file, header, rows) of each compression file present: a list of records or {"rows": [...]}."""
    tables = []
    for name in COMPRESSION_FILES:
        for path in sorted(Path(run_dir).rglob(name)):
            data = read_json(path)
            records = data.get("rows", data.get("table")) if isinstance(data, dict) else data
            if not isinstance(records, list) or not all(isinstance(r, dict) for r in records) or not records:
                continue
            records = [flatten(record) for record in records]
            header = list(dict.fromkeys(key for record in records for key in record))
            rows = [[format_cell(record.get(key, "")) for key in header] for record in records]
            tables.append((path.relative_to(run_dir).as_posix(), header, rows))
    return tables


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys: {"profile": {"parameters": 5}} -> {"profile.parameters": 5}."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def format_cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def compression_lines(run_dir: Path) -> list[str]:
    lines = []
    for name, header, rows in compression_tables(run_dir):
        lines += [f"## Compression (`{name}`)", ""] + md_table(header, rows) + [""]
    return lines
