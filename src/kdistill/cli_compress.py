"""`kdistill compress PLAN.yaml`: a trained model (or a student distilled first) through prune ->
recover -> quantize -> export, printing the per-stage table and writing the artefacts.

    kdistill compress plan.yaml
    kdistill compress plan.yaml --set compress.prune.ratios=[0.3,0.5] --out runs/small-mlp

The plan names the model (`model: {name, options, checkpoint, normalize}`), its data (`data:` as
in an experiment file), an optional `teacher:` for the distil stage, and the `compress:` section
(kdistill.compress.spec). The output folder gets `compress.md` (the table), `compress.json`,
`model.safetensors`, `model.onnx` and, when kept, `model-int8.onnx`.

Every choice (accuracy budget, latency / FLOPs target) reads the validation split `data:` gives
(`data.val_fraction` of the training set, as in `kdistill run`, or the data set's own); the test
split is only reported.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from rich.console import Console

from kdistill.errors import BadInput


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "compress", help="prune (recovered by distillation), quantize and export a trained model, with a table "
                         "of accuracy, size, FLOPs and latency after each stage")
    parser.add_argument("plan", help="the compression plan (YAML): model, data, teacher (for distil), compress")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a plan field, e.g. compress.prune.ratios=[0.3,0.5] (repeatable)")
    parser.add_argument("--out", help="output folder (default: the plan's output_dir, else runs/<name>-<time>)")
    parser.add_argument("--json", action="store_true", help="print the stage rows as JSON instead of a table")
    return parser


def load_plan(path: str, overrides: list[str]) -> Any:
    from kdistill.compress.plan import validate_plan
    from kdistill.config_files import read_config_file
    from kdistill.config_overrides import apply_override

    raw = read_config_file(path, run_hints=False)
    for assignment in overrides:
        apply_override(raw, assignment)
    return validate_plan(raw)


def build(spec: Any, bundle: Any, field: str) -> Any:
    """The model of `spec` (a ModelSpec) with its weights; problems named by `field`."""
    from kdistill.models import ModelFactoryError, build_model, load_weights
    from kdistill.registry import RegistryError

    try:
        model = build_model(spec.name, bundle.num_classes, bundle.input_shape, spec.options,
                            getattr(bundle, "model_defaults", None))
    except (RegistryError, ModelFactoryError) as error:
        raise BadInput(f"{field}.name: {error}") from None
    except (TypeError, ValueError) as error:
        raise BadInput(f"{field}.options: {error}") from None
    if spec.checkpoint is not None:
        try:
            load_weights(model, spec.checkpoint)
        except ValueError as error:
            raise BadInput(f"{field}.checkpoint: {str(error).splitlines()[0]}") from None
    return model


def output_dir(plan: Any, flag: str | None) -> Path:
    chosen = Path(flag) if flag else plan.output_dir
    if chosen is None:
        chosen = Path("runs") / f"{plan.name}-{datetime.now():%Y%m%d-%H%M%S}"
    if chosen.exists() and any(chosen.iterdir()):
        raise BadInput(f"--out: {chosen} exists and is not empty; choose another folder (nothing is overwritten)")
    return chosen


def run(args: argparse.Namespace, console: Console) -> int:
    from kdistill.compress.pipeline import CompressionPipeline
    from kdistill.compress.table import stage_table
    from kdistill.run.data import load_data
    from kdistill.run.normalization import normalization_for

    plan = load_plan(args.plan, args.overrides)
    out = output_dir(plan, args.out)
    bundle, train, val = load_data(SimpleNamespace(data=plan.data, seed=plan.seed))
    if val is None:
        raise BadInput("data.val_fraction: compress makes its choices (accuracy budget, targets) on a validation "
                       "split and reports the test split; set it above 0 (e.g. 0.1) or give the data set a val split")
    model = build(plan.model, bundle, "model")
    teacher = build(plan.teacher, bundle, "teacher") if "distil" in plan.compress.stages else None
    norm = normalization_for(plan.model, bundle)
    teacher_norm = normalization_for(plan.teacher, bundle) if teacher is not None else None
    pipeline = CompressionPipeline(plan.compress, model, train, bundle.test, norm, out, teacher, plan.seed,
                                   teacher_norm, val=val)
    result = pipeline.run()
    table = stage_table(result.rows)
    (out / "compress.md").write_text(f"# {plan.name}\n\n{table}\n\nFiles: {json.dumps(result.files)}\n")
    if args.json:
        for row in result.as_json()["rows"]:
            print(json.dumps(row))
        return 0
    console.print(table, highlight=False, markup=False, soft_wrap=True)
    console.print(f"written to {out}: " + ", ".join(Path(p).name for p in result.files.values()), highlight=False)
    return 0
