"""The `kdistill` command: `run`, `methods`, `layers`, and the optional commands (eval, compress, tune,
pair, report, compare, lm), each in its own module, listed where its module exists.

Every command runs under `cli_errors.guarded`: a failure is one line and an exit code (2 bad input,
3 storage, 1 unexpected, 130 interrupted); `--debug` or KDISTILL_DEBUG=1 shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from kdistill.cli_errors import guarded, say, sigterm_as_interrupt
from kdistill.cli_run import command_run
from kdistill.cli_run import launch_processes as launch_processes
from kdistill.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, BadInput, first_line

EXIT_CONFIG = EXIT_BAD_INPUT  # the former name


# command -> module in kdistill exposing add_parser(subparsers) and run(args, console) -> exit code
OPTIONAL_COMMANDS = {"eval": "cli_eval", "compress": "cli_compress", "tune": "cli_tune", "pair": "cli_pair",
                     "report": "cli_report", "compare": "cli_compare", "lm": "cli_lm"}


def _optional_command(name: str):
    """A command module that may not be installed (yet): None when absent."""
    if importlib.util.find_spec(f"kdistill.{name}") is None:
        return None
    return importlib.import_module(f"kdistill.{name}")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an error (also KDISTILL_DEBUG=1)")
    parser = argparse.ArgumentParser(prog="kdistill", description="Knowledge distillation for PyTorch models.")
    parser.add_argument("--debug", action="store_true", default=False,
                        help="show the full traceback of an error (also KDISTILL_DEBUG=1)")
    commands = parser.add_subparsers(dest="command", required=True)
    from kdistill.cli_run import add_parser as add_run

    add_run(commands, common)
    methods = commands.add_parser("methods", parents=[common],
                                  help="list distillation methods, their options and references")
    methods.add_argument("name", nargs="?", default=None,
                         help="one method: every option with its default, the paper, and how it works")

    layers = commands.add_parser("layers", parents=[common], help="list a model's module paths and output shapes")
    layers.add_argument("model", help="registered model name, package.module:factory, a checkpoint file "
                        "(then the modules that own weights are listed, with their parameter shapes), or a "
                        "Hugging Face model directory or config.json (a text model: token ids in)")
    layers.add_argument("--input-shape", default=None,
                        help="shape of one sample, e.g. 3,32,32 (the default); for a text model the number of "
                        "tokens, e.g. 32 (default 16)")
    layers.add_argument("--num-classes", type=int, default=10)
    layers.add_argument("--options", default="{}", help="model options as YAML, e.g. '{hidden: [64]}'")
    layers.add_argument("--checkpoint", help="weights to load first (optional)")
    for module in OPTIONAL_COMMANDS.values():
        found = _optional_command(module)
        if found is not None:
            found.add_parser(commands)
    return parser


def command_method(name: str, console: Console) -> int:
    """One method in full: the table cuts options off on a narrow terminal, and has no room for the why."""
    import inspect

    from kdistill.methods import METHODS, method_options
    from kdistill.registry import RegistryError

    try:
        cls = METHODS.get(name)
    except RegistryError as error:
        raise BadInput(str(error.args[0] if error.args else error)) from None
    aliases = [n for n, c in METHODS.items() if c is cls and n != cls.name]
    console.print(f"[bold]{cls.name}[/bold]" + (f" (also: {', '.join(aliases)})" if aliases else ""))
    console.print(cls.summary, highlight=False)
    console.print(f"reference: {cls.reference}", highlight=False)
    console.print("options (defaults); every method also takes start_epoch / end_epoch:", highlight=False)
    for key, value in method_options(cls).items():
        console.print(f"  {key}: {value}", highlight=False, soft_wrap=True)
    doc = inspect.getdoc(cls)
    if doc:
        console.print("\n" + doc, highlight=False, soft_wrap=True)
    console.print(f"\nthe full notes (exact loss, departures from the paper's code): python -m pydoc {cls.__module__}",
                  highlight=False, soft_wrap=True)
    return 0


def command_methods(console: Console, name: str | None = None) -> int:
    if name is not None:
        return command_method(name, console)
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
    from kdistill.text.layers import command_text_layers, is_text_model, print_text_layers, text_config, tokens_of

    if is_text_model(args.model):
        return command_text_layers(args, console)
    if Path(args.model).is_file():
        return _checkpoint_layers(Path(args.model), console)
    if Path(args.model).is_dir():  # a Hugging Face model folder is one with config.json (is_text_model above)
        raise BadInput(f"{args.model}: a folder without config.json, so not a Hugging Face model folder; give a "
                       "model folder, a checkpoint file or a model name (kdistill layers --help)")
    if "/" in args.model or args.model.endswith((".pt", ".pth", ".th", ".safetensors")):
        raise BadInput(f"{args.model}: no such file or folder; give a model folder, a checkpoint file or a model name")
    input_shape = args.input_shape or "3,32,32"
    try:
        shape = tuple(int(s) for s in input_shape.split(","))
    except ValueError:
        raise BadInput(f"--input-shape: {input_shape!r} is not a list of whole numbers; e.g. 3,32,32") from None
    try:
        options = yaml.safe_load(args.options) or {}
    except yaml.YAMLError as error:
        raise BadInput(f"--options: not valid YAML ({str(error).splitlines()[0]}); e.g. '{{hidden: [64]}}'") from None
    if not isinstance(options, dict):
        raise BadInput(f"--options: must be a mapping of option names to values, e.g. '{{hidden: [64]}}' "
                       f"(got {args.options!r})")
    try:
        model = build_model(args.model, args.num_classes, shape, options)
        if args.checkpoint:
            load_weights(model, args.checkpoint)
    except (RegistryError, ValueError, TypeError, FileNotFoundError) as error:
        raise BadInput(str(error).splitlines() or [type(error).__name__]) from None
    if text_config(model) is not None:  # a Hugging Face model built by name: token ids in
        return print_text_layers(model, args.model, tokens_of(args.input_shape), console)
    table = Table(title=f"{args.model}: tappable module paths for input {shape}")
    for column in ("path", "module", "output shape"):
        table.add_column(column)
    try:
        layers = describe_layers(model, torch.zeros(2, *shape))
    except RuntimeError as error:  # the forward pass refused the input: the shape is what to fix
        raise BadInput(f"--input-shape {input_shape}: {args.model} cannot run on one sample of shape {shape} "
                       f"({first_line(error)}); give the shape one sample has, e.g. 3,32,32 for CIFAR images "
                       "or 1,28,28 for MNIST") from None
    for path, kind, out in layers:
        table.add_row(path, kind, out)
    console.print(table)
    return 0


def _checkpoint_layers(path: Path, console: Console) -> int:
    """A checkpoint has no forward pass to run: list the modules that own its tensors."""
    from kdistill.models import read_weights

    try:
        state = read_weights(path)
    except (ValueError, FileNotFoundError) as error:
        raise BadInput(str(error).splitlines() or [type(error).__name__]) from None
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


def _dispatch(args: argparse.Namespace, console: Console) -> int:
    if args.command == "run":
        return command_run(args, console)
    if args.command == "methods":
        return command_methods(console, args.name)
    if args.command == "layers":
        return command_layers(args, console)
    return _optional_command(OPTIONAL_COMMANDS[args.command]).run(args, console)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console()
    try:
        with sigterm_as_interrupt():
            return guarded(lambda: _dispatch(args, console), getattr(args, "debug", False))
    except KeyboardInterrupt:
        say("interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
