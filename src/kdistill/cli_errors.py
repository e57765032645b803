"""How the `kdistill` command ends when something goes wrong: one line a user can act on, and an
exit code a script can test (`kdistill.errors`): 2 bad input, 3 the file system said no, 1 anything
unexpected, 130 interrupted. The traceback is for `--debug` (or KDISTILL_DEBUG=1) only: a user
who gave a bad path needs the path named, not forty lines of PyTorch internals.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

from kdistill.errors import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_STORAGE, BadInput, StorageFailure, first_line

# what the file system says when it refuses a write (or a read of a file it will not open to us)
STORAGE_ERRNOS = {"ENOSPC": "no space left on device", "EROFS": "read-only file system",
                  "EACCES": "permission denied", "EPERM": "operation not permitted",
                  "EDQUOT": "disk quota exceeded", "EFBIG": "file size limit exceeded"}
FULL = ("ENOSPC", "EDQUOT", "EFBIG")
# what it says of a path the user gave that is not what the command needs (a file given as an output folder)
PATH_ERRNOS = {"ENOTDIR": "a part of it is a file, not a directory", "EISDIR": "it is a directory, not a file",
               "ENOENT": "no such file or directory", "EEXIST": "it exists already"}


@contextlib.contextmanager
def signals_as_interrupt(*names: str) -> Iterator[None]:
    """The named signals raise KeyboardInterrupt, as Ctrl-C does (main thread only; signals this
    platform lacks are skipped); the previous handlers come back afterwards."""
    numbers = [getattr(signal, name) for name in names if hasattr(signal, name)]
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = {number: signal.signal(number, handler) for number in numbers}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def sigterm_as_interrupt() -> contextlib.AbstractContextManager:
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does, so it ends with exit 130, the "continue
    with" line and the same clean-up (Python's default is to die at once: exit 143, nothing said).
    Batch schedulers, `timeout` and container runtimes stop jobs with SIGTERM. Inside a training
    loop the engine turns both into a stop after the current step (`kdistill.engine.interrupt`)."""
    return signals_as_interrupt("SIGTERM")


def debug_wanted(flag: bool) -> bool:
    return flag or os.environ.get("KDISTILL_DEBUG", "") not in ("", "0")


def say(line: str) -> None:
    """One message line on stderr, prefixed with the rank under torchrun so ranks can be told apart."""
    rank = os.environ.get("RANK")
    prefix = "kdistill" if rank in (None, "0") else f"kdistill (rank {rank})"
    print(f"{prefix}: {line}", file=sys.stderr, flush=True)


def errno_name(error: OSError) -> str | None:
    import errno

    return errno.errorcode.get(error.errno or 0)


def _storage_errno(error: OSError) -> str | None:
    name = errno_name(error)
    return name if name in STORAGE_ERRNOS else None


def report(error: BaseException) -> int:
    """Print `error` as a user should see it; the exit code."""
    from kdistill.registry import RegistryError

    if isinstance(error, BadInput):
        for line in error.problems:
            say(line)
        return EXIT_BAD_INPUT
    if isinstance(error, RegistryError):  # a name that is neither registered nor importable
        say(str(error))
        return EXIT_BAD_INPUT
    if isinstance(error, StorageFailure):
        say(first_line(error) if str(error).strip() else "the file system refused a write")
        return EXIT_STORAGE
    if isinstance(error, OSError) and _storage_errno(error):
        what = error.filename or "a file"
        name = _storage_errno(error)
        fix = "free space, then run again" if name in FULL else "choose a writable --output-dir or fix the permissions"
        say(f"{STORAGE_ERRNOS[name]}: cannot write {what}; {fix}")
        return EXIT_STORAGE
    path_errno = errno_name(error) if isinstance(error, OSError) else None
    if path_errno in PATH_ERRNOS and error.filename:
        say(f"{error.filename}: {PATH_ERRNOS[path_errno]}; give another path (an output directory must be a "
            "directory or not exist yet)")
        return EXIT_BAD_INPUT
    say(f"{type(error).__name__}: {first_line(error)}")
    say("run with --debug to see where it was raised")
    return EXIT_FAILURE


def guarded(command: Callable[[], int], debug: bool) -> int:
    """Run a command; an exception becomes its one-line message and exit code (re-raised with debug)."""
    if debug_wanted(debug):
        return command()
    try:
        return command()
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as error:  # noqa: BLE001 - the whole point: no traceback for the user
        return report(error)
