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


def relaunch(processes: int, cli_arguments: list[str]) -> int:
    """`kdistill CLI_ARGUMENTS` in `processes` processes under torchrun (through this module), in a
    session of its own so that a terminal's Ctrl-C reaches the calling command alone, which passes
    one stop on (`wait_passing_stops`); the exit code is the first failed worker's."""
    import subprocess

    command = [sys.executable, "-m", "kdistill.launch", "--standalone", f"--nproc_per_node={processes}",
               "-m", "kdistill.cli", *cli_arguments]
    return wait_passing_stops(subprocess.Popen(command, start_new_session=True))


def wait_passing_stops(launcher: Any) -> int:
    """Wait for torchrun, passing a stop on: the first Ctrl-C or SIGTERM becomes one SIGTERM to its
    agent, which sends it to every worker (each stops after its step, keeps a checkpoint and says how
    to resume); the exit code is the launcher's, once every worker has ended. A second stop kills the
    launcher's whole process group. Killing the agent outright (what `subprocess.call` does on an
    interrupt) left the workers training on, unseen, after the command had returned."""
    stops = 0
    while True:
        try:
            return launcher.wait()
        except KeyboardInterrupt:  # SIGTERM too: the CLI runs under `cli_errors.sigterm_as_interrupt`
            stops += 1
            if stops == 1:
                launcher.send_signal(signal.SIGTERM)
            else:
                os.killpg(launcher.pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    _quiet_agent_imports()
    from torch.distributed import run
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

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
