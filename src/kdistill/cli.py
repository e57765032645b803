"""The `kdistill` command: `run`, `methods`, `layers`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdistill", description="Knowledge distillation for PyTorch models.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run an experiment (no file: the built-in digits demo)")
    run.add_argument("config", nargs="?", help="experiment YAML; omitted: the built-in demo")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config field, e.g. --set training.epochs=5 (repeatable)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its directory")
    run.add_argument("--output-dir", help="run directory (must not exist yet)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--device", help="auto (default), cpu, cuda or cuda:N; same as --set training.device=...")
    run.add_argument("--baseline", action="store_true",
                     help="also train the student from scratch (same as --set baseline=true); a baseline kept "
                          "from an earlier run with the same data, student, training and seed is reused")
    run.add_argument("--nproc", type=int, default=1, metavar="N",
                     help="train with N processes on this machine (DDP through torchrun; gloo on CPU, nccl on GPU)")

    commands.add_parser("methods", help="list distillation methods, their options and references")

    layers = commands.add_parser("layers", help="list a model's module paths and output shapes")
    layers.add_argument("model", help="registered model name, package.module:factory, or a checkpoint file "
                        "(then the modules that own weights are listed, with their parameter shapes)")
    layers.add_argument("--input-shape", default="3,32,32", help="shape of one sample, e.g. 3,32,32")
    layers.add_argument("--num-classes", type=int, default=10)
    layers.add_argument("--options", default="{}", help="model options as YAML, e.g. '{hidden: [64]}'")
    layers.add_argument("--checkpoint", help="weights to load first (optional)")
    return parser


def _fail_config(console: Console, problems: list[str]) -> int:
    console.print("[bold red]kdistill: invalid configuration[/]", highlight=False)
    for line in problems:
        console.print(f"  {line}", highlight=False, markup=False)
    return EXIT_CONFIG


def launch_processes(args: argparse.Namespace, run_dir: Path) -> int:
    """Re-run this command under torchrun with N processes, the run directory fixed up front."""
    import subprocess

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
               "-m", "kdistill.cli", "run"]
    if args.resume:
        command += ["--resume", args.resume]
    else:
        command += ([args.config] if args.config else []) + [f"--set={o}" for o in args.overrides]
        command += ["--device", args.device] if args.device else []
        command += ["--baseline"] if args.baseline else []
        command += ["--output-dir", str(run_dir)]
    if args.no_progress:
        command.append("--no-progress")
    return subprocess.call(command)


def command_run(args: argparse.Namespace, console: Console) -> int:
    from kdistill.engine.distributed import exit_process, setup_from_env, shutdown

    world = setup_from_env()
    if world.distributed and not world.is_main:
        console = Console(quiet=True)
    try:
        code = _run(args, console, world)
    except BaseException:
        if world.distributed:
            shutdown(wait=False)
        raise
    if world.distributed:
        exit_process(code)  # closes the process group; no interpreter teardown (see its docstring)
    return code


def _run(args: argparse.Namespace, console: Console, world) -> int:
    from kdistill.config import ConfigError, load_config
    from kdistill.engine import TrainingInterrupted
    from kdistill.engine.distributed import broadcast_object
    from kdistill.experiment import new_run_dir, run_experiment

    try:
        if args.nproc < 1:
            raise ConfigError([f"--nproc: must be >= 1 (got {args.nproc})"])
        if args.resume:
            run_dir = Path(args.resume)
            if not (run_dir / "config.yaml").is_file():
                raise ConfigError([f"--resume {run_dir}: not a run directory (no config.yaml)"])
            if args.config or args.overrides or args.baseline:
                raise ConfigError(["--resume takes the run's own config; drop the config file, --set and --baseline"])
            config = load_config(run_dir / "config.yaml")
        else:
            values = {"output_dir": args.output_dir} if args.output_dir else None
            device = [f"training.device={args.device}"] if args.device else []
            baseline = ["baseline=true"] if args.baseline else []
            config = load_config(args.config, [*args.overrides, *device, *baseline], values)
            # rank 0 picks (and checks) the directory; the other processes take its answer
            choice = new_run_dir(config) if world.is_main else None
            if world.distributed:
                choice = broadcast_object(choice)
            run_dir = choice
        if args.nproc > 1 and not world.distributed:
            return launch_processes(args, run_dir)
        console.print(f"run directory: {run_dir}", highlight=False)
        result = run_experiment(config, run_dir, resume=bool(args.resume), progress=not args.no_progress)
    except ConfigError as error:
        return _fail_config(console, error.problems)
    except TrainingInterrupted as interrupted:
        console.print(f"\ninterrupted; a resumable checkpoint is at {interrupted.checkpoint}\n"
                      f"continue with: kdistill run --resume {run_dir}", highlight=False)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:  # outside a training loop (loading data, building a cache, profiling)
        console.print("\ninterrupted; finished stages are kept: continue with: kdistill run --resume "
                      f"{run_dir if 'run_dir' in locals() else 'RUN_DIR'}", highlight=False)
        return EXIT_INTERRUPTED
    from kdistill.report import TABLE_HEADER, gap_sentence, table_rows

    table = Table(title=f"{config.name}: test set")
    for column in TABLE_HEADER:
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in table_rows(result):
        table.add_row(*row)
    console.print(table)
    console.print(gap_sentence(result), highlight=False)
    console.print(f"report: {run_dir / 'report.md'}", highlight=False)
    return 0


def command_methods(console: Console) -> int:
    from kdistill.methods import METHODS, method_options

    table = Table(title="distillation methods (config: methods: [{name: ..., key: value}])", show_lines=True,
                  caption="every method also takes start_epoch / end_epoch: the epochs [start, end) it is active")
    for column in ("name", "what it does", "options (defaults)", "reference"):
        table.add_column(column)
    seen = set()
    for _name, cls in METHODS.items():
        if cls in seen:
            continue
        seen.add(cls)
        aliases = [n for n, c in METHODS.items() if c is cls and n != cls.name]
        label = cls.name + (f"\n(also: {', '.join(aliases)})" if aliases else "")
        options = ", ".join(f"{k}={v}" for k, v in method_options(cls).items())
        table.add_row(label, cls.summary, options, cls.reference)
    console.print(table)
    return 0


def command_layers(args: argparse.Namespace, console: Console) -> int:
    import torch
    import yaml

    from kdistill.models import build_model, load_weights
    from kdistill.registry import RegistryError
    from kdistill.taps import describe_layers

    if Path(args.model).is_file():
        return _checkpoint_layers(Path(args.model), console)
    try:
        shape = tuple(int(s) for s in args.input_shape.split(","))
        model = build_model(args.model, args.num_classes, shape, yaml.safe_load(args.options) or {})
        if args.checkpoint:
            load_weights(model, args.checkpoint)
    except (RegistryError, ValueError, TypeError, FileNotFoundError) as error:
        return _fail_config(console, [str(error)])
    table = Table(title=f"{args.model}: tappable module paths for input {shape}")
    for column in ("path", "module", "output shape"):
        table.add_column(column)
    for path, kind, out in describe_layers(model, torch.zeros(2, *shape)):
        table.add_row(path, kind, out)
    console.print(table)
    return 0


def _checkpoint_layers(path: Path, console: Console) -> int:
    """A checkpoint has no forward pass to run: list the modules that own its tensors."""
    from kdistill.models import read_weights

    try:
        state = read_weights(path)
    except (ValueError, FileNotFoundError) as error:
        return _fail_config(console, [str(error)])
    modules: dict[str, list[str]] = {}
    for key, tensor in state.items():
        module, _, name = key.rpartition(".")
        modules.setdefault(module, []).append(f"{name} {tuple(tensor.shape)}")
    table = Table(title=f"{path.name}: modules with weights (give the architecture for output shapes)")
    table.add_column("path")
    table.add_column("tensors")
    for module, tensors in modules.items():
        table.add_row(module or "(root)", ", ".join(tensors))
    console.print(table)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console()
    if args.command == "run":
        return command_run(args, console)
    if args.command == "methods":
        return command_methods(console)
    return command_layers(args, console)


if __name__ == "__main__":
    sys.exit(main())
