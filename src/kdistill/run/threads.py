"""How many CPU threads a run's PyTorch may use: `--threads N`, else KDISTILL_THREADS, else
OMP_NUM_THREADS, else a default that does not oversubscribe.

OpenMP's default is one thread per logical CPU of the machine, whether or not the CPUs are free or
even granted to this process. On a busy shared machine the threads then wait on each other at every
parallel region: runs measured 35 to 185 times slower than with one thread. The default is
therefore the CPUs this process may run on (`os.sched_getaffinity`, which honours taskset and
container CPU sets), capped at 4 (small models gain little beyond that), divided among the
processes of a `--nproc` run so they do not compete for the same cores.
"""

from __future__ import annotations

import contextlib
import os

from kdistill.errors import BadInput

DEFAULT_CAP = 4


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _positive(text: str | None, source: str) -> int | None:
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise BadInput(f"{source}: must be a whole number of threads >= 1 (got {text!r}); e.g. 2")
    return value


def choose_threads(requested: int | None, processes: int = 1) -> int:
    """Threads per process: the request (`--threads`, per process), else the environment, else the default."""
    if requested is not None:
        return _positive(str(requested), "--threads") or 1
    for variable in ("KDISTILL_THREADS", "OMP_NUM_THREADS"):
        value = _positive(os.environ.get(variable), variable)
        if value is not None:
            return value
    return max(1, min(available_cpus(), DEFAULT_CAP) // max(1, processes))


def apply_threads(threads: int) -> int:
    """Set PyTorch's intra-op and inter-op threads; the inter-op count can only be set before any
    parallel work has started in this process, so a refusal there is ignored."""
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(threads)
    return torch.get_num_threads()
