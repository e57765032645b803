"""`kdistill pair`: which student, from which teacher? Every candidate pairing distilled on a short
budget; accuracy against parameters and CPU latency, the Pareto front, capacity gaps.

    kdistill pair experiment.yaml --students mlp "mlp{options: {hidden: [64]}}" --epochs 5
    kdistill pair experiment.yaml --widths 0.25 0.5 1 2            # the experiment's student, scaled
    kdistill pair cifar.yaml --teachers "resnet56{checkpoint: t56.th}" "resnet32{checkpoint: t32.th}" \\
        --students resnet8 resnet14 resnet20 --epochs 3 --set data.train_limit=5000
    kdistill pair --resume runs/pairs-20260101-120000

A candidate is a model name, or a name followed by its fields as in an experiment file
(`NAME{options: {...}, checkpoint: ..., normalize: ...}`). Teachers default to the experiment's;
one without a checkpoint is trained once here. Scores are on the validation split (`--test`: on the
test split). A student that does better from a smaller teacher than from the largest one is a
capacity gap, and the teacher assistant that would bridge it is suggested.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from kdistill.errors import BadInput

PLAN_FILE = "pair-plan.json"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("pair", help="distil candidate students from candidate teachers on a short "
                                   "budget: accuracy vs size and latency, Pareto front, capacity gaps")
    parser.add_argument("config", nargs="?", help="experiment YAML (data, methods, training; its teacher and student "
                        "are the defaults)")
    parser.add_argument("--students", nargs="+", default=[], metavar="MODEL",
                        help="candidate students: NAME or NAME{fields}, e.g. resnet8 'mlp{options: {hidden: [64]}}'")
    parser.add_argument("--teachers", nargs="+", default=[], metavar="MODEL",
                        help="candidate teachers (default: the experiment's), e.g. 'resnet56{checkpoint: t.th}'")
    parser.add_argument("--widths", nargs="+", type=float, default=[], metavar="W",
                        help="width multipliers of the experiment's student (mlp, cnn, wrn), added as candidates")
    parser.add_argument("--epochs", type=int, help="epochs per pairing (default: the experiment's training.epochs)")
    parser.add_argument("--scratch", action="store_true", help="also train each student from the labels alone")
    parser.add_argument("--test", action="store_true", help="score on the test split (default: the validation "
                        "split, since choosing a pair is model selection)")
    parser.add_argument("--gap-margin", type=float, default=0.5, metavar="POINTS",
                        help="accuracy points a smaller teacher must win by to call it a capacity gap (default 0.5; "
                        "raised to two standard errors of the two accuracies on the split's size)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of the experiment, as for kdistill run")
    parser.add_argument("--output-dir", help="work directory (must not exist yet, or be empty)")
    parser.add_argument("--resume", metavar="DIR", help="continue a comparison from its work directory")
    parser.add_argument("--progress", action="store_true", help="progress bars while training")
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads (default as for kdistill run)")
    return parser


def parse_candidate(text: str, flag: str) -> dict[str, Any]:
    """`resnet8` -> {name: resnet8}; `mlp{options: {hidden: [64]}}` -> {name: mlp, options: {...}}."""
    name, brace, rest = text.partition("{")
    name = name.strip()
    if not name:
        raise BadInput(f"{flag}: {text!r} has no model name; write NAME or NAME{{options: {{...}}}}")
    if not brace:
        return {"name": name}
    try:
        fields = yaml.safe_load("{" + rest)
    except yaml.YAMLError as error:
        raise BadInput(f"{flag}: {text!r}: the fields are not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(fields, dict):
        raise BadInput(f"{flag}: {text!r}: give the fields as a mapping, e.g. {name}{{options: {{hidden: [64]}}}}")
    if "name" in fields:
        raise BadInput(f"{flag}: {text!r}: the name goes before the braces, not inside them")
    return {"name": name, **fields}


def _plan_from_args(args: argparse.Namespace) -> dict[str, Any]:
    from kdistill.config import load_raw, validate
    from kdistill.config_error import ConfigError
    from kdistill.config_overrides import apply_override
    from kdistill.tune.pair import scaled_student

    if not args.config:
        raise BadInput("CONFIG: give the experiment file (data, methods, training), or --resume DIR")
    raw = load_raw(args.config)
    for assignment in args.overrides:
        apply_override(raw, assignment)
    if args.epochs is not None:
        if args.epochs < 1:
            raise BadInput(f"--epochs: must be >= 1 (got {args.epochs})")
        apply_override(raw, f"training.epochs={args.epochs}")
    try:
        config = validate(raw)
    except ConfigError as error:
        raise BadInput(error.problems[0]) from error
    from kdistill.lm.detect import is_lm_data, lm_config_problem

    if is_lm_data(config.data.name):  # before the work directory is made (it was left behind, empty)
        raise BadInput(lm_config_problem(config.data.name))
    teachers = [parse_candidate(t, "--teachers") for t in args.teachers]
    if not teachers:
        teachers = [spec.model_dump(mode="json", exclude_defaults=True) for spec in config.teacher_specs()]
    if not teachers:
        raise BadInput("--teachers: the experiment has no teacher; give candidate teachers")
    students = [parse_candidate(s, "--students") for s in args.students]
    base_student = config.student.model_dump(mode="json", exclude_defaults=True)
    students += [scaled_student(base_student, w) for w in args.widths]
    if not students:
        students = [base_student]
    if args.gap_margin < 0:
        raise BadInput(f"--gap-margin: must be >= 0 points (got {args.gap_margin})")
    return {"base": raw, "teachers": teachers, "students": students, "scratch": args.scratch, "test": args.test,
            "margin": args.gap_margin / 100}


def run(args: argparse.Namespace, console: Console) -> int:
    from kdistill.engine.checkpoint import atomic_write_text
    from kdistill.run.threads import apply_threads, choose_threads
    from kdistill.tune.pair import PairPlan, run_pair

    apply_threads(choose_threads(args.threads, 1))
    if args.resume:
        if args.config or args.students or args.teachers or args.widths or args.overrides:
            raise BadInput("--resume takes the comparison's own plan; drop the config file and candidates")
        work_dir = Path(args.resume)
        if not (work_dir / PLAN_FILE).is_file():
            raise BadInput(f"--resume {work_dir}: not a pair work directory (no {PLAN_FILE})")
        plan = json.loads((work_dir / PLAN_FILE).read_text())
    else:
        plan = _plan_from_args(args)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        work_dir = Path(args.output_dir) if args.output_dir else Path("runs") / f"pairs-{stamp}"
        if work_dir.exists() and any(work_dir.iterdir()):
            raise BadInput(f"--output-dir: {work_dir} already exists and is not empty; continue it with "
                           f"`kdistill pair --resume {work_dir}`, or choose another directory")
        work_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(work_dir / PLAN_FILE, json.dumps(plan, indent=2))
    console.print(f"work directory: {work_dir}", highlight=False)
    outcome = run_pair(PairPlan(plan["base"], plan["teachers"], plan["students"], work_dir, plan["scratch"],
                                plan["test"], plan["margin"]), resume=bool(args.resume), progress=args.progress,
                       announce=lambda text: console.print(text, highlight=False))
    table = Table(title=f"students and teachers ({outcome.split} accuracy)",
                  caption="front: the student's best row is on the Pareto front of accuracy vs (parameters, latency)")
    for column in ("student", "teacher", "accuracy %", "teacher %", "params", "CPU ms / 64", "front"):
        table.add_column(column, justify="left" if column in ("student", "teacher") else "right")
    for row in outcome.rows:
        teacher = "-" if row.teacher_accuracy is None else f"{100 * row.teacher_accuracy:.2f}"
        table.add_row(row.student, row.teacher, f"{100 * row.accuracy:.2f}", teacher, f"{row.parameters:,}",
                      f"{row.latency_ms:.3f}", "yes" if row.front else "")
    console.print(table)
    for gap in outcome.gaps:
        console.print(gap.sentence(), highlight=False)
    if not outcome.gaps:
        console.print("no capacity gap: every student learned best from the largest teacher (within the margin)")
    for note in outcome.notes:
        console.print(f"note: {note}", highlight=False)
    console.print(f"table: {work_dir / 'pair.md'}; plot: {outcome.plot}", highlight=False)
    return 0
