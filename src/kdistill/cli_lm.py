"""`kdistill lm CONFIG`: distil a causal language model token by token (see `kdistill.lm.experiment`).

    kdistill lm examples/lm_gpt2_tiny.yaml
    kdistill lm examples/lm_gpt2_tiny.yaml --set methods[0].name=reverse_kl --set baseline=false
    kdistill lm --resume runs/lm-gpt2-tiny-20260101-120000   # after Ctrl-C: continue where it stopped
    kdistill lm examples/lm_gpt2_tiny.yaml --nproc 2          # DDP: 2 processes (gloo on CPU)

The config is an ordinary kdistill experiment file; the command prints held-out perplexity,
parameters and tokens per second of the teacher, the scratch student (with `baseline: true`) and
the distilled student, and writes them to `results.json` in the run directory. `--resume RUN_DIR`
continues an interrupted run from its own `config.yaml` (finished stages loaded, the interrupted
one from its checkpoint); `--set` is then accepted for the fields `kdistill run --resume`
accepts (device, loader workers), which cannot change what a finished stage computed, and for the
settings of stages not started yet (`student.*`, `methods`, `baseline`, `training.*`: see
`kdistill.lm.resume`). `--nproc N`
re-runs the command under torchrun, as `kdistill run --nproc` does: the run directory is fixed
first, rank 0 alone writes files and prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("lm", help="distil a causal language model token by token (held-out perplexity)")
    parser.add_argument("config", nargs="?",
                        help="experiment YAML (data: kdistill.lm:text_corpus, models: kdistill.lm:causal_lm)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set training.epochs=1 (repeatable)")
    parser.add_argument("--output-dir", help="run directory (must not exist yet, or be empty)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its directory")
    parser.add_argument("--nproc", type=int, default=1, metavar="N",
                        help="train with N processes on this machine (DDP through torchrun; gloo on CPU)")
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads per process (default: torch's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def run(args: argparse.Namespace, console: Console) -> int:
    from kdistill.cli_run import run_in_process_group
    from kdistill.errors import BadInput

    if args.nproc < 1:
        raise BadInput(f"--nproc: must be >= 1 (got {args.nproc})")
    return run_in_process_group(_run, args, console)


def _run(args: argparse.Namespace, console: Console, world: Any) -> int:
    import torch

    from kdistill.engine import TrainingInterrupted
    from kdistill.errors import EXIT_INTERRUPTED, BadInput
    from kdistill.lm.experiment import LMExperiment

    config, run_dir, created = _config(args, world)
    if args.nproc > 1 and not world.distributed:
        from kdistill.engine.device import check_processes_fit

        try:
            check_processes_fit(config.training.device, args.nproc)
        except BadInput:
            _remove_debris(args, world, run_dir, created)
            raise
        return _launch(args, run_dir)
    if args.threads:
        torch.set_num_threads(args.threads)
    console.print(f"run directory: {run_dir}", highlight=False)
    try:
        from kdistill.engine.device import deterministic_algorithms

        with deterministic_algorithms(config.training.deterministic):
            rows = LMExperiment(config, run_dir, progress=not args.no_progress, resume=bool(args.resume)).run()
    except (TrainingInterrupted, KeyboardInterrupt):
        if _remove_debris(args, world, run_dir, created):
            console.print("\ninterrupted before the first checkpoint; nothing to resume (the run directory was "
                          "removed): run the same command again", highlight=False)
        else:
            console.print(f"\ninterrupted; continue with: kdistill lm --resume {run_dir}", highlight=False)
        return EXIT_INTERRUPTED
    except BaseException:
        _remove_debris(args, world, run_dir, created)  # nothing to resume: the same command may simply run again
        raise
    table = Table(title=f"{config.name}: held-out perplexity (lower is better)")
    for column in ("model", "perplexity", "parameters", "train tokens/s", "eval tokens/s"):
        table.add_column(column)
    for row in rows:
        speed = row["train_tokens_per_s"]
        table.add_row(row["model"], f"{row['perplexity']:.2f}", f"{row['parameters']:,}",
                      "-" if speed is None else f"{speed:,.0f}", f"{row['eval_tokens_per_s']:,.0f}")
    console.print(table)
    return 0


def _remove_debris(args: argparse.Namespace, world: Any, run_dir: Path, created: Path | None) -> bool:
    """A fresh run that failed before its first checkpoint leaves nothing behind (as `kdistill run`)."""
    from kdistill.run.directory import remove_debris

    return world.is_main and not args.resume and remove_debris(run_dir, created)


def _config(args: argparse.Namespace, world: Any) -> tuple[Any, Path, Path | None]:
    """(config, run directory, the topmost directory this call created): the run's own config on
    --resume, else the file's, in a new directory that rank 0 picks and creates (the other
    processes take its answer)."""
    from kdistill.collectives import broadcast_object
    from kdistill.config import ConfigError, load_config
    from kdistill.errors import BadInput
    from kdistill.lm.detect import is_lm_data, not_text_corpus_problem
    from kdistill.lm.resume import load_lm_resumed_config
    from kdistill.run.directory import create_run_dir, new_run_dir

    if args.resume:
        if args.config or args.output_dir:
            raise BadInput("--resume takes the run's own config and directory; drop the config file and --output-dir")
        run_dir = Path(args.resume)
        return load_lm_resumed_config(run_dir, args.overrides), run_dir, None
    if not args.config:
        raise BadInput("kdistill lm: give an experiment YAML, or --resume RUN_DIR to continue a run")
    values = {"output_dir": args.output_dir} if args.output_dir else None
    config = load_config(args.config, args.overrides, values)
    if ":" not in config.data.name and not is_lm_data(config.data.name):  # a built-in classification data set
        raise BadInput(not_text_corpus_problem(config.data.name))
    run_dir, created = None, None
    if world.is_main:
        try:
            run_dir = new_run_dir(config)
        except ConfigError as error:  # its hint names `kdistill run --resume`; this run resumes with `kdistill lm`
            raise ConfigError([p.replace("kdistill run --resume", "kdistill lm --resume") for p in error.problems]) \
                from None
        created = create_run_dir(run_dir)
    return config, Path(str(broadcast_object(str(run_dir) if run_dir is not None else None))), created


def _launch(args: argparse.Namespace, run_dir: Path) -> int:
    """This command again under torchrun (`kdistill.launch.relaunch`), with N processes and the run
    directory fixed."""
    from kdistill.launch import relaunch

    command = ["lm"]
    if args.resume:
        command += ["--resume", args.resume]
    else:
        command += [args.config, "--output-dir", str(run_dir)]
    command += [f"--set={o}" for o in args.overrides]
    command += ["--threads", str(args.threads)] if args.threads else []
    command += ["--no-progress"] if args.no_progress else []
    return relaunch(args.nproc, command)
