"""`python -m kdistill.launch TORCHRUN_ARGS`: torchrun, ending the way every kdistill command ends.

`kdistill run --nproc N` re-runs itself under torchrun. When the workers stop on bad input (exit
2), each has already said why in one line; torchrun's agent would then add an error log line, a
Python traceback and a failure table, and exit 1, so a script could no longer tell bad input from
a crash. Here the agent's logging is quieted and its ChildFailedError becomes the first failed
worker's own exit code, without a traceback (a worker killed by a signal: 128 + the signal).
"""

from __future__ import annotations

import logging
import sys

from kdistill.errors import EXIT_FAILURE


def main(argv: list[str] | None = None) -> int:
    from torch.distributed import run
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        run.main(argv)
    except ChildFailedError as failure:
        _, first = failure.get_first_failure()
        if first.exitcode > 0:
            return first.exitcode
        return 128 - first.exitcode if first.exitcode < 0 else EXIT_FAILURE
    return 0


if __name__ == "__main__":
    sys.exit(main())
