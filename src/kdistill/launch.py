"""`python -m kdistill.launch TORCHRUN_ARGS`: torchrun, ending the way every kdistill command ends.

`kdistill run --nproc N` re-runs itself under torchrun. When the workers stop on bad input (exit
2), each has already said why in one line; torchrun's agent would then add an error log line, a
Python traceback and a failure table, and exit 1, so a script could no longer tell bad input from
a crash. Here the agent's logging is quieted and its ChildFailedError becomes the first failed
worker's own exit code, without a traceback (a worker killed by a signal, or the launcher
stopped by one: 128 + the signal).
"""

from __future__ import annotations

import logging
import os
import sys

from kdistill.errors import EXIT_FAILURE


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
    except SignalException as stop:  # Ctrl-C / SIGTERM reached the agent: the workers said what was kept
        return 128 + int(stop.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
