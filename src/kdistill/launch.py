"""`python -m kdistill.launch TORCHRUN_ARGS`: torchrun, ending the way every kdistill command ends.

`kdistill run --nproc N` re-runs itself under torchrun. When the workers stop on bad input (exit
2), each has already said why in one line; torchrun's agent would then add an error log line, a
Python traceback and a failure table, and exit 1, so a script could no longer tell bad input from
a crash. Here the agent's logging is quieted and its ChildFailedError becomes the first failed
worker's own exit code, without a traceback (a worker killed by a signal: 128 + the signal). A
Ctrl-C or SIGTERM to the agent, which passes it to the workers (they stop after a step and keep a
checkpoint), ends with 130 as a single-process run does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from typing import Any

from kdistill.errors import EXIT_FAILURE, EXIT_INTERRUPTED


def _quiet_agent_imports() -> None:
    """Import torchrun with its agent's loggers at CRITICAL: they read LOGLEVEL once, at import (the
    variable is restored afterwards, so the workers' environment is the user's)."""
    before = os.environ.get("LOGLEVEL")
    os.environ["LOGLEVEL"] = "CRITICAL"
    try:
        import torch.distributed.run  # noqa: F401
    finally:
        if before is None:
            os.environ.pop("LOGLEVEL", None)
        else:
            os.environ["LOGLEVEL"] = before
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)


SHUTDOWN_SECONDS = "300"  # torchrun's grace for a stopped worker's last step and checkpoint (its default: 30 s)
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")  # what torchrun's agent treats as a stop


def relaunch(processes: int, cli_arguments: list[str]) -> int:
    """`kdistill CLI_ARGUMENTS` in `processes` processes under torchrun (through this module), in a
    session of its own so that a terminal's Ctrl-C reaches the calling command alone, which passes
    one stop on (`wait_passing_stops`); the exit code is the first failed worker's."""
    import subprocess

    command = [sys.executable, "-m", "kdistill.launch", "--standalone", f"--nproc_per_node={processes}",
               "-m", "kdistill.cli", *cli_arguments]
    environment = {"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": SHUTDOWN_SECONDS, **os.environ}  # the user's value wins
    return wait_passing_stops(subprocess.Popen(command, start_new_session=True, env=environment))


def wait_passing_stops(launcher: Any) -> int:
    """Wait for torchrun, passing a stop on: the first Ctrl-C, SIGTERM or hang-up becomes one SIGTERM
    to its agent, which sends it to every worker (each stops after its step, keeps a checkpoint and
    says how to resume; torchrun kills a worker still running after TORCH_ELASTIC_SHUTDOWN_TIMEOUT
    seconds, 300 here); the exit code is the launcher's, once every worker has ended. A second stop
    kills the workers and the agent at once (no checkpoint of the step under way). Killing the agent
    alone (what `subprocess.call` does on an interrupt) left the workers, each in a session of its
    own, training on unseen after the command had returned."""
    stops = 0
    with _hangup_as_interrupt():  # the agent is in another session: a closed terminal reaches this process only
        while True:
            try:
                return launcher.wait()
            except KeyboardInterrupt:  # SIGTERM too: the CLI runs under `cli_errors.sigterm_as_interrupt`
                stops += 1
                if stops == 1:
                    launcher.send_signal(signal.SIGTERM)  # a no-op once the launcher has ended
                else:
                    kill_tree(launcher.pid)
                    launcher.wait()
                    print("kdistill: stopped at once, the step under way is lost; --resume continues from the "
                          "last checkpoint", file=sys.stderr, flush=True)
                    return EXIT_INTERRUPTED


def kill_tree(pid: int) -> None:
    """SIGKILL to `pid` and every process below it, each worker's process group included (torchrun
    starts each worker in a session of its own, so the agent's group does not hold them)."""
    below = descendants(pid)
    for child in below:
        with contextlib.suppress(OSError):  # gone already, or a group that is not its own
            os.killpg(os.getpgid(child), signal.SIGKILL)
    for process in [*below, pid]:
        with contextlib.suppress(OSError):
            os.kill(process, signal.SIGKILL)


def descendants(pid: int) -> list[int]:
    """Every live process below `pid`, read from /proc (Linux; elsewhere none are found)."""
    from pathlib import Path

    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _hangup_as_interrupt() -> contextlib.AbstractContextManager:
    from kdistill.cli_errors import signals_as_interrupt

    return signals_as_interrupt("SIGHUP")


def _stop_once() -> None:
    """torchrun's agent raises SignalException on every stop signal, and a second one (systemd and
    SLURM's scancel signal every process of a job, and the calling command passes one on too) aborts
    its shutdown of the workers half-way. Here the first stop raises, and the agent then ignores
    further ones (the calling command's second stop kills with SIGKILL, which cannot be ignored)."""
    from torch.distributed.elastic.multiprocessing import api

    raise_stop = getattr(api, "_terminate_process_handler", None)
    if raise_stop is None:  # another torch: its own handling stands
        return

    def stop_once(signum, frame):
        for name in STOP_SIGNALS:
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), signal.SIG_IGN)
        raise_stop(signum, frame)

    api._terminate_process_handler = stop_once  # read when the agent starts its workers


def main(argv: list[str] | None = None) -> int:
    _quiet_agent_imports()
    from torch.distributed import run
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    _stop_once()
    try:
        run.main(argv)
    except ChildFailedError as failure:
        _, first = failure.get_first_failure()
        if first.exitcode > 0:
            return first.exitcode
        return 128 - first.exitcode if first.exitcode < 0 else EXIT_FAILURE
    except SignalException as stop:  # the agent sent the stop to the workers: each kept a checkpoint
        if stop.sigval in (signal.SIGINT, signal.SIGTERM):
            return EXIT_INTERRUPTED
        return 128 + int(stop.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
