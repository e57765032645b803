"""`kdistill eval`: what a model or checkpoint scores on a data set, without training.

The first thing to run on one's own teacher, before distilling from it: its top-1 (and top-5)
accuracy and loss on a split, and the deployment columns of the run report (parameters, size, CPU
latency), measured exactly as `kdistill run` measures them (`Distiller.evaluate`, `profile_row`).

    kdistill eval resnet56 --checkpoint teacher.th --data image-folder --data-root cifar10.tar.gz
    kdistill eval mymodels:teacher --checkpoint teacher.pt --data mnist --data-root data/mnist --normalize none
    kdistill eval --run runs/digits-demo-20260101-120000        # every student.pt of a run, with its config

A checkpoint is scored with the inputs a loaded teacher gets by default in a run (`none`: no
normalisation) unless `--normalize` says otherwise; when the data set's statistics score clearly
better, the command says so, since that is what `normalize: dataset` in the experiment file needs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from torch import nn

from kdistill.cli_errors import say
from kdistill.errors import BadInput

SPLITS = ("test", "val", "train")
HINT_GAP = 0.05  # the other normalisation this much better: say so


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval", help="accuracy, loss, size and CPU latency of a model or checkpoint on a data set (no training)")
    parser.add_argument("model", nargs="?", help="registered model name or package.module:factory")
    parser.add_argument("--checkpoint", help="weights to load (a state dict or a checkpoint holding one)")
    parser.add_argument("--options", default="{}", help="model options as YAML, e.g. '{hidden: [64]}'")
    parser.add_argument("--data", default="digits", help="data set name or package.module:function (default digits)")
    parser.add_argument("--data-root", help="the data set's files (data.root)")
    parser.add_argument("--data-options", default="{}", help="data set options as YAML (data.options)")
    parser.add_argument("--split", choices=SPLITS, default="test",
                        help="test (default); val: the data set's own, else the 10 %% a run holds out by default")
    parser.add_argument("--normalize", choices=("dataset", "none"),
                        help="inputs as a run would give them: the data set's mean/std, or none; default: none "
                             "with --checkpoint (a loaded teacher's default), dataset without")
    parser.add_argument("--run", metavar="RUN_DIR", help="score every student.pt of a run, with the run's config")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=512, help="evaluation batch size")
    parser.add_argument("--json", action="store_true", help="print the results as JSON lines instead of a table")
    return parser


def _yaml_mapping(text: str, flag: str) -> dict[str, Any]:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise BadInput(f"{flag}: not valid YAML ({str(error).splitlines()[0]}); e.g. '{{key: 1}}'") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadInput(f"{flag}: must be a mapping of names to values, e.g. '{{key: 1}}' (got {text!r})")
    return value


def _data(name: str, root: str | None, options: dict[str, Any], val_fraction: float, limit: int | None = None,
          seed: int = 0) -> tuple[Any, Any, Any]:
    """The bundle and (train, val) exactly as a run loads them (`run.data.load_data`)."""
    from kdistill.config import ConfigError, DataSpec
    from kdistill.run.data import load_data

    try:
        spec = DataSpec.model_validate({"name": name, "root": root, "options": options, "val_fraction": val_fraction,
                                        "train_limit": limit})
    except ValidationError as error:
        flags = {"root": "--data-root", "name": "--data", "options": "--data-options"}
        raise BadInput([f"{flags.get(str(e['loc'][0]), '--data')}: {e['msg'].removeprefix('Value error, ')}"
                        for e in error.errors()]) from None
    from kdistill.data import DATASETS
    from kdistill.registry import RegistryError

    try:
        DATASETS.get(name)
    except RegistryError as error:
        raise BadInput(f"--data: {error}") from None
    try:
        return load_data(SimpleNamespace(data=spec, seed=seed))  # type: ignore[arg-type]
    except ConfigError as error:
        raise BadInput([p.replace("data.root", "--data-root").replace("data.options", "--data-options")
                        .replace("data.name", "--data") for p in error.problems]) from None


def _split(bundle: Any, train: Any, val: Any, split: str) -> Any:
    data = {"test": bundle.test, "val": val, "train": train}[split]
    if data is None:
        raise BadInput(f"--split {split}: the data set has no {split} split")
    return data


def score(model: nn.Module, data: Any, norm: Any, bundle: Any, device: str = "auto",
          batch_size: int = 512) -> dict[str, float]:
    """top-1 / top-5 accuracy and loss as `Distiller.evaluate` gives them, and the report's columns."""
    from kdistill.engine import Distiller
    from kdistill.evaluate import count_parameters, cpu_latency_ms, size_on_disk_bytes
    from kdistill.run.profiling import sample_batch

    evaluator = Distiller(None, model, progress=True, device=device, eval_batch_size=batch_size,  # a terminal only
                          student_normalization=norm)
    metrics = dict(evaluator.evaluate(data))
    metrics["parameters"] = count_parameters(model)
    metrics["size_bytes"] = size_on_disk_bytes(model)
    metrics["latency_ms"] = cpu_latency_ms(model, sample_batch(bundle.test, 64, norm.cpu()))
    metrics["samples"] = len(data)
    return metrics


def evaluate_model_spec(args: argparse.Namespace) -> list[dict[str, Any]]:
    """`kdistill eval MODEL ...`: one row (and a hint when the other normalisation is much better)."""
    from kdistill.data.transforms import Normalize
    from kdistill.models import ModelFactoryError, build_model, load_weights
    from kdistill.registry import RegistryError

    options = _yaml_mapping(args.options, "--options")
    val_fraction = 0.1 if args.split == "val" else 0.0
    bundle, train, val = _data(args.data, args.data_root, _yaml_mapping(args.data_options, "--data-options"),
                               val_fraction)
    data = _split(bundle, train, val, args.split)
    try:
        model = build_model(args.model, bundle.num_classes, bundle.input_shape, options,
                            getattr(bundle, "model_defaults", None))
    except RegistryError as error:
        raise BadInput(f"MODEL: {error}") from None
    except ModelFactoryError as error:
        raise BadInput(f"MODEL: {error}") from error
    except (TypeError, ValueError) as error:
        raise BadInput(f"--options: {error}") from error
    if args.checkpoint is not None:
        if Path(args.checkpoint).is_dir():
            run = " (a run directory: score its stages with --run, without MODEL)" if (
                Path(args.checkpoint) / "config.yaml").is_file() else ""
            raise BadInput(f"--checkpoint: {args.checkpoint} is a directory, not a weights file{run}")
        if not Path(args.checkpoint).is_file():
            raise BadInput(f"--checkpoint: file does not exist: {args.checkpoint}")
        try:
            load_weights(model, args.checkpoint)
        except ValueError as error:
            from kdistill.run.build import checkpoint_class_hint

            hint = checkpoint_class_hint(model, Path(args.checkpoint), bundle.num_classes,
                                         "evaluate it on the data set it was trained on")
            raise BadInput(f"--checkpoint: {error}{hint}") from error
    chosen = args.normalize or ("none" if args.checkpoint else "dataset")
    stats = bundle.mean is not None and bundle.std is not None
    norms = {"dataset": Normalize(bundle.mean, bundle.std) if stats else Normalize(None, None),
             "none": Normalize(None, None)}
    row = {"model": args.model, "split": args.split, "normalize": chosen,
           **score(model, data, norms[chosen], bundle, args.device, args.batch_size)}
    if args.normalize is None and stats:
        other = "dataset" if chosen == "none" else "none"
        alternative = score(model, data, norms[other], bundle, args.device, args.batch_size)["acc"]
        if alternative - row["acc"] >= HINT_GAP:
            row["hint"] = (f"with --normalize {other} it scores {alternative:.2%}: the model was likely trained that "
                           f"way; in an experiment file give it normalize: {other}")
    return [row]


def _stage_spec(config: Any, stage: Path, run_dir: Path) -> tuple[Any, str]:
    """The spec a stage's model was built from, and the role shown."""
    name = stage.relative_to(run_dir).as_posix()
    specs = config.teacher_specs()
    if name == "teacher" and specs:
        return specs[0], name
    if name.startswith("teacher-") and name[8:].isdigit() and int(name[8:]) <= len(specs):
        return specs[int(name[8:]) - 1], name
    leaf = stage.name
    if leaf.startswith("assistant-") and leaf[10:].isdigit() and int(leaf[10:]) <= len(config.strategy.assistants):
        return config.strategy.assistants[int(leaf[10:]) - 1], name
    return config.student, name


def evaluate_run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """`kdistill eval --run RUN_DIR`: every finished stage of a run on its own data split."""
    from kdistill.config import load_config
    from kdistill.models import load_weights
    from kdistill.run.build import build_participant
    from kdistill.run.normalization import normalization_choice
    from kdistill.strategies.stages import FINAL_WEIGHTS

    run_dir = Path(args.run)
    if not (run_dir / "config.yaml").is_file():
        raise BadInput(f"--run {run_dir}: not a run directory (no config.yaml)")
    from kdistill.lm.detect import is_lm_run, lm_run_problem

    if is_lm_run(run_dir):
        raise BadInput(f"--run {lm_run_problem(run_dir, 'kdistill eval')}")
    try:
        config = load_config(run_dir / "config.yaml")
        bundle, train, val = _data(config.data.name, config.data.root, config.data.options,
                                   config.data.val_fraction, config.data.train_limit, config.seed)
    except BadInput as error:  # a run's config keeps its paths as written: relative to where it was started
        if not any("does not exist" in problem for problem in error.problems):
            raise
        raise BadInput([*error.problems, f"--run {run_dir}: its config.yaml keeps the paths the run was given; a "
                        "relative one is read from the directory the run was started in: run eval from there"]) \
            from None
    data = _split(bundle, train, val, args.split)
    stages = sorted(p.parent for p in run_dir.rglob(FINAL_WEIGHTS))
    if not stages:
        raise BadInput(f"--run {run_dir}: no finished stage (no {FINAL_WEIGHTS}); nothing to evaluate yet")
    unfinished = sorted({p.parent.parent.relative_to(run_dir).as_posix() for p in run_dir.rglob("checkpoints/last.pt")
                         if not (p.parent.parent / FINAL_WEIGHTS).exists()})
    if unfinished:  # scored are the finished stages only: say which are missing from the table
        say(f"--run {run_dir}: stages {', '.join(unfinished)} have not finished and are not scored; "
            f"`kdistill run --resume {run_dir}` finishes them")
    student_norm, student_text = normalization_choice(config.student, bundle)
    rows = []
    for stage in stages:
        spec, role = _stage_spec(config, stage, run_dir)
        model = build_participant(spec, bundle, role, None, getattr(spec, "num_classes", None))
        load_weights(model, stage / FINAL_WEIGHTS)
        teacher = spec is not config.student and spec not in config.strategy.assistants
        norm, described = normalization_choice(spec, bundle) if teacher else (student_norm, student_text)
        rows.append({"model": role, "split": args.split, "normalize": described.split(",")[0].split(" (")[0],
                     **score(model, data, norm, bundle, args.device, args.batch_size)})
    return rows


def run(args: argparse.Namespace, console: Console) -> int:
    """Score and print; bad input raises `BadInput` (the CLI prints it, exit 2)."""
    if args.batch_size < 1:
        raise BadInput(f"--batch-size: must be >= 1 (got {args.batch_size})")
    if args.run and args.model:
        raise BadInput("--run takes the run's own models and config; drop MODEL (and its options)")
    if not args.run and not args.model:
        raise BadInput("MODEL: give a model (a registered name or package.module:factory), or --run RUN_DIR")
    rows = evaluate_run(args) if args.run else evaluate_model_spec(args)
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    table = Table(title=f"{args.split} split", caption="inputs: the normalisation; CPU ms / 64: latency of a "
                  "batch of 64 on the CPU")
    columns = ["model", "inputs", "top-1 %", "top-5 %", "loss", "samples", "params", "size", "CPU ms / 64"]
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right")
    from kdistill.report import human_bytes

    for row in rows:
        top5 = f"{row['acc_top5'] * 100:.2f}" if "acc_top5" in row else "-"
        table.add_row(row["model"], row["normalize"], f"{row['acc'] * 100:.2f}", top5,
                      f"{row['loss']:.4f}", str(row["samples"]), f"{row['parameters']:,}",
                      human_bytes(row["size_bytes"]), f"{row['latency_ms']:.3f}")
    console.print(table)
    for row in rows:
        if "hint" in row:
            console.print(f"note: {row['hint']}", highlight=False)
    return 0
