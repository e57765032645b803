"""`kdistill pair`: distil each candidate student from each candidate teacher on a short budget, then
report accuracy against parameters and CPU latency, the Pareto front, and any capacity gap.

Every pairing is one ordinary experiment (`run_experiment`: the user's data, methods and training,
with this teacher and this student) in its own folder of the work directory, so an interrupted
comparison resumes with `--resume` and each pairing's report is there to read. A teacher without a
checkpoint is trained once (on the same held-out split) and loaded by every pairing.

Choosing a pair is model selection, so by default every score is on the validation split carved
from the training data (`kdistill.tune.data`: the test split is not read); `test=True` scores on the
test split instead, for reporting a choice already made.

    work_dir/
      teachers/<teacher>/teacher/student.pt    teachers trained here
      <student>__<teacher>/                    one experiment per pairing (teacher row, distilled row)
      pair.json, pair.md, pair-front.png       the table, the front, the gaps
"""

from __future__ import annotations

import copy
import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kdistill.engine.checkpoint import atomic_write_text
from kdistill.errors import BadInput
from kdistill.evaluate.paired import compare_outcomes
from kdistill.tune.data import tuning_raw
from kdistill.tune.pareto import CapacityGap, Point, capacity_gaps, noise_margin, pareto_front

SCRATCH = "none (scratch)"
PLOT = "pair-front.png"


@dataclass
class PairPlan:
    base: dict[str, Any]  # the raw experiment: data, methods, training (its teacher and student are replaced)
    teachers: Sequence[dict[str, Any]]  # model specs as in an experiment file ({name, options, checkpoint, ...})
    students: Sequence[dict[str, Any]]
    work_dir: Path
    scratch: bool = False  # also each student trained from the labels alone (the run's scratch baseline)
    test: bool = False  # score on the test split (default: the validation split)
    # a smaller teacher must be this much better to call it a capacity gap (and beyond the split's
    # noise: McNemar's test where the runs kept their outcomes, else tune.pareto.noise_margin)
    margin: float = 0.005


@dataclass
class PairRow:
    student: str
    teacher: str
    accuracy: float
    parameters: int
    latency_ms: float
    teacher_accuracy: float | None = None
    front: bool = False  # the student's best row, on the front of accuracy vs (parameters, latency)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PairOutcome:
    rows: list[PairRow]
    gaps: list[CapacityGap]
    split: str
    plot: Path | None = None
    notes: list[str] = field(default_factory=list)
    margin: float = 0.005
    samples: int | None = None  # examples each accuracy was measured on (scales the margin)
    paired: bool = False  # every pairing kept its per-example outcomes: the noise rule is McNemar's test

    def margin_sentence(self) -> str:
        fixed = f"a smaller teacher must lead the largest by more than {100 * self.margin:.2f} points"
        if self.paired:
            return (f"Capacity-gap rule: {fixed}, and the two students must differ by McNemar's exact test on the "
                    f"same {self.samples:,} {self.split} examples (p < 0.05).")
        if self.samples is None:
            return f"Capacity-gap rule: {fixed}."
        return (f"Capacity-gap rule: {fixed} and by more than two standard errors of the two accuracies on "
                f"{self.samples:,} {self.split} examples (about {100 * noise_margin(0.9, 0.9, self.samples):.2f} "
                "points at 90 %).")

    def markdown(self) -> str:
        lines = [f"# Pairs ({self.split} accuracy)", "",
                 "| student | teacher | accuracy % | teacher % | parameters | CPU ms / 64 | Pareto front |",
                 "|---|---|---|---|---|---|---|"]
        for row in self.rows:
            teacher = "-" if row.teacher_accuracy is None else f"{100 * row.teacher_accuracy:.2f}"
            lines.append(f"| {row.student} | {row.teacher} | {100 * row.accuracy:.2f} | {teacher} | "
                         f"{row.parameters:,} | {row.latency_ms:.3f} | {'yes' if row.front else ''} |")
        lines.append("")
        lines += [f"- {gap.sentence()}" for gap in self.gaps] or ["No capacity gap: every student learned best "
                                                                  "from the largest teacher (or within the margin)."]
        lines += [f"- {self.margin_sentence()}"] + [f"- {note}" for note in self.notes]
        if self.plot is not None:
            lines += ["", f"![accuracy against parameters and latency]({self.plot.name})"]
        return "\n".join(lines) + "\n"


def label_specs(specs: Sequence[dict[str, Any]]) -> list[str]:
    """Readable, unique labels: the model name, with options where names repeat."""
    names = [str(spec["name"]) for spec in specs]
    labels = []
    for name, spec in zip(names, specs, strict=True):
        options = spec.get("options") or {}
        shown = ", ".join(f"{k}={json.dumps(v).replace(' ', '')}" for k, v in sorted(options.items()))
        text = name if names.count(name) == 1 or not options else f"{name}({shown})"
        labels.append(text)
    for index, text in enumerate(labels):
        if labels.count(text) > 1:
            labels[index] = f"{text} #{index + 1}"
    return labels


def _folder(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:80]


def _experiment(plan: PairPlan, teacher: dict[str, Any], student: dict[str, Any]) -> dict[str, Any]:
    raw = copy.deepcopy(plan.base)
    raw.pop("teachers", None)
    raw.pop("tune", None)
    raw["teacher"], raw["student"] = copy.deepcopy(teacher), copy.deepcopy(student)
    raw["strategy"] = {"name": "standard"}
    raw["baseline"] = plan.scratch
    return raw if plan.test else tuning_raw(raw)


def _trained_teacher(plan: PairPlan, teacher: dict[str, Any], label: str, progress: bool) -> dict[str, Any]:
    """A teacher without a checkpoint, trained once on the held-out data; its spec then loads it."""
    if teacher.get("checkpoint"):
        return teacher
    from kdistill.tune.study import pretrain_teachers

    raw = copy.deepcopy(plan.base)
    raw.pop("teachers", None)
    raw.pop("tune", None)
    raw["teacher"] = copy.deepcopy(teacher)
    trained = pretrain_teachers(raw, [], plan.work_dir / "teachers" / _folder(label), progress)
    return trained["teacher"]


def run_pair(plan: PairPlan, resume: bool = False, progress: bool = False,
             announce: Callable[[str], None] | None = None) -> PairOutcome:
    """Every (student, teacher) pairing, the table with its front, the gaps; written to the work directory."""
    from kdistill.config import ConfigError, validate
    from kdistill.experiment import run_experiment
    from kdistill.results import DISTILLED
    from kdistill.results import SCRATCH as SCRATCH_ROLE

    if not plan.teachers or not plan.students:
        raise BadInput("pair: give at least one teacher and one student")
    teacher_labels, student_labels = label_specs(plan.teachers), label_specs(plan.students)
    teachers = [_trained_teacher(plan, t, label, progress) for t, label in zip(plan.teachers, teacher_labels,
                                                                                 strict=True)]
    rows: list[PairRow] = []
    teacher_size: dict[str, int] = {}
    student_size: dict[str, int] = {}
    accuracy: dict[tuple[str, str], float] = {}
    scored: set[int | None] = set()  # how many examples each pairing was scored on
    folders: dict[tuple[str, str], Path] = {}
    for student, s_label in zip(plan.students, student_labels, strict=True):
        scratch = None
        for teacher, t_label in zip(teachers, teacher_labels, strict=True):
            where = plan.work_dir / f"{_folder(s_label)}__{_folder(t_label)}"
            try:
                config = validate(_experiment(plan, teacher, student))
            except ConfigError as error:
                raise BadInput(f"pair {s_label} <- {t_label}: {error.problems[0]}") from error
            if announce:
                announce(f"{s_label} <- {t_label}")
            result = run_experiment(config, where, resume=resume and where.exists(), progress=progress)
            distilled, taught_by = result.by_role(DISTILLED), result.by_role("teacher")
            rows.append(PairRow(s_label, t_label, distilled.accuracy, distilled.parameters, distilled.latency_ms,
                                taught_by.accuracy))
            teacher_size[t_label], student_size[s_label] = taught_by.parameters, distilled.parameters
            accuracy[(s_label, t_label)] = distilled.accuracy
            folders[(s_label, t_label)] = where
            scored.add(_scored_samples(where))
            if plan.scratch and scratch is None:
                scratch = result.by_role(SCRATCH_ROLE)
        if scratch is not None:
            rows.append(PairRow(s_label, SCRATCH, scratch.accuracy, scratch.parameters, scratch.latency_ms))
    mark_front(rows)
    samples = None if None in scored or not scored else min(scored)
    outcomes = {pair: _distilled_outcomes(where) for pair, where in folders.items()}

    def paired(student: str, best: str, largest: str) -> bool | None:
        """McNemar on the two students' right / wrong answers, where both runs kept them."""
        first, second = outcomes[(student, best)], outcomes[(student, largest)]
        if first is None or second is None or first[0] != second[0]:  # not kept, or not the same examples
            return None
        return compare_outcomes(first[1], second[1]).differs

    gaps = capacity_gaps(accuracy, teacher_size, student_size, plan.margin, samples=samples, paired=paired)
    kept = all(o is not None for o in outcomes.values())
    outcome = PairOutcome(rows, gaps, "test" if plan.test else "validation", margin=plan.margin, samples=samples,
                          paired=kept)
    if len(plan.teachers) < 2:
        outcome.notes.append("one teacher only: a capacity gap shows only against a smaller teacher; add "
                             "intermediate teachers with --teachers (without a checkpoint they are trained here)")
    write_outcome(plan.work_dir, outcome)
    return outcome


def _distilled_outcomes(run_dir: Path) -> tuple[str, Any] | None:
    """(labels digest, right / wrong per scored example) of a pairing's distilled student, where kept."""
    from kdistill.run.diagnostics import distilled_outcomes, read_diagnostics

    try:
        found = distilled_outcomes(read_diagnostics(run_dir))
    except (OSError, ValueError):
        return None
    return found if found is not None and found[0] is not None else None


def _scored_samples(run_dir: Path) -> int | None:
    """The number of examples a pairing's accuracies were measured on (from its diagnostics; None
    when a run has none, and then the margin is not scaled)."""
    try:
        return int(json.loads((run_dir / "diagnostics.json").read_text())["test_samples"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def mark_front(rows: list[PairRow]) -> None:
    """Each student's best distilled row competes; the front is over (accuracy, parameters, latency)."""
    best: dict[str, PairRow] = {}
    for row in rows:
        if row.teacher != SCRATCH and (row.student not in best or row.accuracy > best[row.student].accuracy):
            best[row.student] = row
    chosen = list(best.values())
    # one latency per architecture: the median of its runs' measurements (each run measures it again, with noise)
    latency = {s: statistics.median(r.latency_ms for r in rows if r.student == s) for s in best}
    points = [Point(r.student, r.accuracy, (float(r.parameters), latency[r.student])) for r in chosen]
    for row, on_front in zip(chosen, pareto_front(points), strict=True):
        row.front = on_front


def write_outcome(work_dir: Path, outcome: PairOutcome) -> None:
    work_dir.mkdir(parents=True, exist_ok=True)
    outcome.plot = draw_front(outcome.rows, work_dir / PLOT, outcome.split)
    payload = {"split": outcome.split, "margin": outcome.margin, "scored_samples": outcome.samples,
               "noise_rule": "mcnemar" if outcome.paired else ("binomial" if outcome.samples else None),
               "rows": [r.as_dict() for r in outcome.rows],
               "capacity_gaps": [g.as_dict() for g in outcome.gaps], "notes": outcome.notes,
               "suggestions": [suggestion(g) for g in outcome.gaps if g.assistant]}
    atomic_write_text(work_dir / "pair.json", json.dumps(payload, indent=2))
    atomic_write_text(work_dir / "pair.md", outcome.markdown())


def suggestion(gap: CapacityGap) -> dict[str, Any]:
    """The experiment-file change the gap suggests."""
    return {"student": gap.student, "teacher": gap.largest_teacher,
            "strategy": {"name": "teacher_assistant", "assistants": [{"name": gap.assistant}]}}


def draw_front(rows: list[PairRow], path: Path, split: str) -> Path | None:
    """Accuracy against parameters and against latency: every row, the front joined by a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    distilled = [r for r in rows if r.teacher != SCRATCH]
    if not distilled:
        return None
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    teachers = sorted({r.teacher for r in rows}, key=lambda t: (t == SCRATCH, t))
    markers = "osD^v<>ph*"
    for axis, (cost, title) in zip(axes, (("parameters", "parameters"), ("latency_ms", "CPU latency, ms / 64")),
                                   strict=True):
        for index, teacher in enumerate(teachers):
            mine = [r for r in rows if r.teacher == teacher]
            axis.scatter([getattr(r, cost) for r in mine], [100 * r.accuracy for r in mine],
                         marker=markers[index % len(markers)], label=f"teacher: {teacher}", alpha=0.8)
        # this panel's own front (accuracy against this one cost) among each student's best rows
        best = [r for r in distilled if r.front or not any(o.student == r.student and o.accuracy > r.accuracy
                                                           for o in distilled)]
        on_front = pareto_front([Point(r.student, r.accuracy, (float(getattr(r, cost)),)) for r in best])
        front = sorted((r for r, kept in zip(best, on_front, strict=True) if kept), key=lambda r: getattr(r, cost))
        axis.plot([getattr(r, cost) for r in front], [100 * r.accuracy for r in front], "k--", lw=1,
                  label="Pareto front (best teacher per student)")
        for row in front:
            axis.annotate(row.student, (getattr(row, cost), 100 * row.accuracy), textcoords="offset points",
                          xytext=(4, 4), fontsize=8)
        if cost == "parameters":
            if max(r.parameters for r in rows) / max(1, min(r.parameters for r in rows)) > 20:
                axis.set_xscale("log")
            axis.xaxis.set_major_formatter(FuncFormatter(_thousands))
        axis.set_xlabel(title)
        axis.set_ylabel(f"{split} accuracy, %")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    figure.suptitle("student accuracy against size and speed")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _thousands(value: float, _position: int) -> str:
    return f"{value / 1e6:g} M" if value >= 1e6 else f"{value / 1e3:g} k"


def scaled_student(spec: dict[str, Any], width: float) -> dict[str, Any]:
    """`spec` with its width scaled by `width` (mlp hidden sizes, cnn channels, wrn width factor)."""
    from kdistill.models import MODELS

    if not (isinstance(width, int | float) and math.isfinite(width) and width > 0):
        raise BadInput(f"--widths: each must be a number > 0, a multiplier of the student's width (got {width})")
    scaled = copy.deepcopy(spec)
    options = dict(scaled.get("options") or {})
    name = str(spec["name"])
    if name == "mlp" or name.startswith("wrn") or name in ("cnn", "small-cnn"):
        import inspect

        defaults = {k: p.default for k, p in inspect.signature(MODELS.get("wrn" if name.startswith("wrn") else name))
                    .parameters.items()}
        if name == "mlp":
            options["hidden"] = [max(1, round(h * width)) for h in options.get("hidden", defaults["hidden"])]
        elif name in ("cnn", "small-cnn"):
            options["channels"] = [max(1, round(c * width)) for c in options.get("channels", defaults["channels"])]
        else:
            options["width"] = max(1, round(options.get("width", defaults["width"]) * width))
    else:
        raise BadInput(f"--widths: {name} has no width option to scale; width multipliers apply to mlp, cnn and wrn "
                       "(for the CIFAR ResNets list the depths as students: resnet8 resnet14 resnet20)")
    scaled["options"] = options
    return scaled


__all__ = ["PairOutcome", "PairPlan", "PairRow", "capacity_gaps", "label_specs", "mark_front", "run_pair",
           "scaled_student"]
