"""`kdistill run`: one experiment's life cycle at the command line.

Config (the file, or the run's own on `--resume`), then the run directory, created before any work,
then threads and device, then the experiment. A run that fails before its first checkpoint removes
what it created, so the same command can simply be run again; one that has a checkpoint keeps it,
and says how to continue.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from kdistill.errors import EXIT_INTERRUPTED, BadInput, StorageFailure


def add_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    run = commands.add_parser("run", parents=[common], help="run an experiment (no file: the built-in digits demo)")
    run.add_argument("config", nargs="?", help="experiment YAML; omitted: the built-in demo")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config field, e.g. --set training.epochs=5 or methods[0].temperature=2 "
                          "(repeatable; with --resume only fields that do not change finished stages)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its directory")
    run.add_argument("--output-dir", help="run directory (must not exist yet, or be empty)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--device", help="auto (default), cpu, cuda or cuda:N; same as --set training.device=...")
    run.add_argument("--baseline", action="store_true",
                     help="also train the student from scratch (same as --set baseline=true); a baseline kept "
                          "from an earlier run with the same data, student, training and seed is reused")
    run.add_argument("--nproc", type=int, default=1, metavar="N",
                     help="train with N processes on this machine (DDP through torchrun; gloo on CPU, nccl on GPU)")
    run.add_argument("--threads", type=int, metavar="N",
                     help="CPU threads per process (default: KDISTILL_THREADS, else OMP_NUM_THREADS, else the "
                          "CPUs this process may use, at most 4, divided among --nproc processes)")


def launch_processes(args: argparse.Namespace, run_dir: Path, threads: int) -> int:
    """Re-run this command under torchrun (`kdistill.launch.relaunch`) with N processes, the run
    directory fixed up front."""
    from kdistill.launch import relaunch

    command = ["run", "--threads", str(threads)]
    if args.resume:
        command += ["--resume", args.resume] + [f"--set={o}" for o in args.overrides]
        command += ["--device", args.device] if args.device else []
    else:
        command += ([args.config] if args.config else []) + [f"--set={o}" for o in args.overrides]
        command += ["--device", args.device] if args.device else []
        command += ["--baseline"] if args.baseline else []
        command += ["--output-dir", str(run_dir)]
    if args.no_progress:
        command.append("--no-progress")
    return relaunch(args.nproc, command)


def command_run(args: argparse.Namespace, console: Console) -> int:
    return run_in_process_group(_run, args, console)


def run_in_process_group(body, args: argparse.Namespace, console: Console) -> int:
    """Run `body(args, console, world)` as this process's part of a torchrun launch (or alone).

    Only the main process prints; a failure on any process tears the group down without waiting
    for the others, so no rank hangs in a collective that will never come."""
    from kdistill.engine.distributed import exit_process, setup_from_env, shutdown

    world = setup_from_env()
    if world.distributed and not world.is_main:
        console = Console(quiet=True)
    try:
        code = body(args, console, world)
    except BaseException:
        if world.distributed:
            shutdown(wait=False)
        raise
    if world.distributed:
        exit_process(code)  # closes the process group; no interpreter teardown (see its docstring)
    return code


def _config(args: argparse.Namespace, world):
    """(config, run directory) from the command line: the run's own config on --resume."""
    from kdistill.config import load_config
    from kdistill.engine.distributed import broadcast_object
    from kdistill.run.directory import new_run_dir
    from kdistill.run.resume import load_resumed_config

    if args.nproc < 1:
        raise BadInput([f"--nproc: must be >= 1 (got {args.nproc})"])
    device = [f"training.device={args.device}"] if args.device else []
    if args.resume:
        if args.config or args.baseline:
            raise BadInput(["--resume takes the run's own config; drop the config file and --baseline "
                            "(--set is accepted for fields that do not change finished stages)"])
        run_dir = Path(args.resume)
        config = load_resumed_config(run_dir, [*args.overrides, *device])
        if args.device:
            config.set_device(args.device)
        return config, run_dir
    values = {"output_dir": args.output_dir} if args.output_dir else None
    baseline = ["baseline=true"] if args.baseline else []
    config = load_config(args.config, [*args.overrides, *device, *baseline], values)
    if args.device:
        config.set_device(args.device)
    # rank 0 picks (and checks) the directory; the other processes take its answer
    choice = new_run_dir(config) if world.is_main else None
    if world.distributed:
        choice = broadcast_object(choice)
    return config, choice


def _start_line(config, threads: int, world) -> str:
    from kdistill.engine.device import resolve_device

    try:
        device = str(resolve_device(config.training.device))
    except ValueError as error:
        raise BadInput([f"training.device: {error}"]) from None
    processes = f", {world.world_size} processes" if world.distributed else ""
    return f"device: {device}, CPU threads per process: {threads}{processes}"


def _run(args: argparse.Namespace, console: Console, world) -> int:
    import os

    from kdistill.engine import TrainingInterrupted
    from kdistill.experiment import run_experiment
    from kdistill.run.directory import create_run_dir, remove_debris
    from kdistill.run.threads import apply_threads, choose_threads

    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if world.distributed else args.nproc
    threads = choose_threads(args.threads, local_processes)
    config, run_dir = _config(args, world)
    if args.nproc > 1 and not world.distributed:
        from kdistill.engine.device import check_processes_fit

        check_processes_fit(config.training.device, args.nproc)
        return launch_processes(args, run_dir, threads)
    created = create_run_dir(run_dir) if world.is_main and not args.resume else None
    try:
        threads = apply_threads(threads)
        console.print(f"run directory: {run_dir}", highlight=False)
        console.print(_start_line(config, threads, world), highlight=False)
        from kdistill.engine.device import deterministic_algorithms

        with deterministic_algorithms(config.training.deterministic):
            result = run_experiment(config, run_dir, resume=bool(args.resume), progress=not args.no_progress)
    except TrainingInterrupted as interrupted:
        kept = (f"a resumable checkpoint is at {interrupted.checkpoint}" if interrupted.checkpoint is not None else
                "finished stages are kept (the stage it stopped in starts again)")  # e.g. compression's recovery
        console.print(f"\ninterrupted; {kept}\ncontinue with: kdistill run --resume {run_dir}", highlight=False)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:  # outside a training loop (loading data, building a cache, profiling)
        if world.is_main and not args.resume and remove_debris(run_dir, created):
            console.print("\ninterrupted before the first checkpoint; nothing to resume (the run directory was "
                          "removed): run the same command again", highlight=False)
        else:
            console.print(f"\ninterrupted; finished stages are kept: continue with: kdistill run --resume {run_dir}",
                          highlight=False)
        return EXIT_INTERRUPTED
    except StorageFailure as error:
        if world.is_main and not args.resume and remove_debris(run_dir, created):
            raise
        raise StorageFailure(f"{error}; once there is room: kdistill run --resume {run_dir}") from error
    except BaseException:
        if world.is_main and not args.resume:
            remove_debris(run_dir, created)  # nothing to resume: the same command may simply run again
        raise
    print_result(console, config, result, run_dir)
    return 0


def print_result(console: Console, config, result, run_dir: Path) -> None:
    from kdistill.report import TABLE_HEADER, gap_sentence, table_rows
    from kdistill.report_sections import paired_sentence, read_json
    from kdistill.run.diagnostics import DIAGNOSTICS_FILE

    table = Table(title=f"{config.name}: test set")
    for column in TABLE_HEADER:
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in table_rows(result):
        table.add_row(*row)
    console.print(table)
    console.print(gap_sentence(result), highlight=False)
    diagnostics = read_json(run_dir / DIAGNOSTICS_FILE)
    paired = paired_sentence(diagnostics) if diagnostics else None
    if paired:
        console.print(paired, highlight=False)
    console.print(f"report: {run_dir / 'report.md'}", highlight=False)
