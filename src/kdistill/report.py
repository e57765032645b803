"""Run directory -> `report.md` and `report.html`: the comparison table, the diagnostics (agreement, KL,
calibration, per-class accuracy and inherited weakness, confusion matrices), label noise, any
compression table, each stage's last epoch, the config.

Everything is read from the run directory's files (`results.json`, `diagnostics.json`,
`label_noise.json`, `metrics.jsonl`, `config.yaml`), so `kdistill report RUN_DIR` rebuilds both
reports without the models (`rebuild_reports`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from kdistill.config import ExperimentConfig, dump_config
from kdistill.engine.metrics_log import read_records
from kdistill.errors import BadInput, first_line
from kdistill.evaluate.profile_report import profile_section
from kdistill.report_sections import compression_lines, diagnostics_lines, label_noise_lines, read_json
from kdistill.results import ExperimentResult, ModelResult

LOG = logging.getLogger("kdistill")


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


TRIAL_NOTE = ("A tuning trial (kdistill tune): its data is the training split cut in two, and every \"test\" "
              "figure below is on the validation split; the test set was not read.")


def tuning_trial(config_yaml: str) -> bool:
    """Whether the run is a trial of `kdistill tune` (its data is `kdistill.tune.data:held_out`)."""
    from kdistill.tune.data import HELD_OUT

    data = (yaml.safe_load(config_yaml) or {}).get("data") or {}
    return isinstance(data, dict) and data.get("name") == HELD_OUT


def write_report(run_dir: Path, config: ExperimentConfig, result: ExperimentResult) -> Path:
    """`report.md` (returned) and `report.html` beside it. At the end of a run a failure to draw the
    HTML report is a warning, not a failed run (`kdistill report RUN_DIR` retries it)."""
    return render_reports(Path(run_dir), config.name, dump_config(config), result, strict=False)


def render_reports(run_dir: Path, name: str, config_yaml: str, result: ExperimentResult,
                   strict: bool = True) -> Path:
    from kdistill.report_html import write_html

    diagnostics = read_json(run_dir / "diagnostics.json")
    lines = [f"# {name}", "", f"Run directory: `{run_dir}`", ""]
    if tuning_trial(config_yaml):
        lines += [TRIAL_NOTE, ""]
    lines += ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(result)]
    lines += ["", gap_sentence(result), ""]
    lines += profile_section(result.rows)
    lines += [line for reused in reused_baselines(run_dir) for line in (reused, "")]
    lines += label_noise_lines(run_dir)
    notes = run_notes(run_dir)
    if notes:
        lines += ["## Warnings", ""] + [f"- {note}" for note in notes] + [""]
    lines += diagnostics_lines(diagnostics)
    lines += compression_lines(run_dir)
    lines += ["## Stages (last epoch)", ""]
    for metrics_file in sorted(run_dir.rglob("metrics.jsonl")):
        records = read_records(metrics_file)  # a torn last line (a killed write) is skipped
        if records:
            last = records[-1]
            shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in last.items()
                              if k != "stage")
            lines.append(f"- `{metrics_file.parent.relative_to(run_dir)}`: {shown}")
    lines += ["", "## Resolved config", "", "```yaml", config_yaml.rstrip(), "```", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    try:
        write_html(run_dir, name, config_yaml, result, diagnostics, notes)
    except Exception as error:
        if strict:
            raise
        LOG.warning("kdistill: report.html could not be written (%s: %s); report.md is complete. Run "
                    "`kdistill report %s` to try again (--debug for the traceback)", type(error).__name__, error,
                    run_dir)
    return path


def read_result(run_dir: Path) -> ExperimentResult:
    """The results table a finished run saved (`results.json`)."""
    path = Path(run_dir) / "results.json"
    from kdistill.lm.detect import is_lm_run, lm_run_problem

    if is_lm_run(run_dir):  # its results.json holds perplexities, not this table
        raise BadInput(lm_run_problem(run_dir, "kdistill report / compare"))
    if not path.is_file():
        raise BadInput(f"{run_dir}: no results.json, so not a finished kdistill run{other_output(run_dir)}; give the "
                       "directory of a run that finished (kdistill run writes it at the end)")
    try:
        payload = read_json(path)
        if not isinstance(payload, dict) or not isinstance(payload.get("rows"), list):
            raise TypeError("no table of rows")
        return ExperimentResult(Path(run_dir), [ModelResult(**row) for row in payload["rows"]])
    except BadInput:  # already one message (a damaged file, named)
        raise
    except (ValueError, TypeError) as error:  # JSONDecodeError is a ValueError; TypeError: rows of another form
        raise BadInput(f"{path}: not the results of a kdistill run ({first_line(error, with_type=True)})"
                       f"{other_output(run_dir)}; rerun the experiment, or give another run directory") from None


OTHER_OUTPUTS = {"tune.md": "kdistill tune", "compress.md": "kdistill compress", "pair.md": "kdistill pair"}


def other_output(run_dir: Path) -> str:
    """What a directory holds when it is not a `kdistill run` directory: another command's output."""
    for name, command in OTHER_OUTPUTS.items():
        if (Path(run_dir) / name).is_file():
            return f" (it is the output of {command}: read {Path(run_dir) / name})"
    return ""


def rebuild_reports(run_dir: Path) -> Path:
    """`report.md` and `report.html` again from the run directory's files alone (no models, no data)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BadInput(f"{run_dir}: not a directory; give a run directory (the one kdistill run printed)")
    result = read_result(run_dir)
    config_path = run_dir / "config.yaml"
    config_yaml = config_path.read_text() if config_path.exists() else ""
    try:
        name = (yaml.safe_load(config_yaml) or {}).get("name", run_dir.name)
    except (yaml.YAMLError, AttributeError):
        name = run_dir.name
    return render_reports(run_dir, str(name), config_yaml, result)
