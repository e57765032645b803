"""The errors a user can act on, and the exit code each means at the command line.

Anything raised as one of these is printed by the CLI as its message alone (no traceback; `--debug`
adds it), so the message must name what is wrong (the field, file or layer) and how to fix it.
Python code that calls kdistill gets ordinary exceptions: `BadInput` is a `ValueError`,
`StorageFailure` an `OSError`.
"""

from __future__ import annotations

EXIT_FAILURE = 1  # an unexpected error: one line, `--debug` for the traceback
EXIT_BAD_INPUT = 2  # a config, file, command line or model that cannot be used as given
EXIT_STORAGE = 3  # the file system refused: cannot create, read-only, disk full
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGTERM: a resumable checkpoint was kept


def first_line(error: BaseException, *, with_type: bool = False) -> str:
    """An exception's first message line, cut to 300 characters, for one-line reports that quote a
    user's code (a data function, a model factory, a forward pass) without its traceback.
    `with_type` prefixes the exception's class, for messages that do not already name it."""
    lines = str(error).strip().splitlines()
    line = lines[0] if lines else ""
    line = line if len(line) <= 300 else line[:297] + "..."
    if with_type:
        return f"{type(error).__name__}: {line}" if line else type(error).__name__
    return line or "(no message)"


class BadInput(ValueError):
    """Input that cannot be used as given (exit 2). `problems` are one-line `what: fix` messages."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class UnreadableFile(BadInput):
    """A file that is not what it claims to be (truncated checkpoint, bad gzip, binary YAML...)."""

    def __init__(self, path: object, what: str) -> None:
        self.path = path
        super().__init__(f"{path}: {what}")


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite: the weights are lost, so the run stops before it
    writes them as a checkpoint (the last one kept is the last finite epoch's)."""


class StorageFailure(OSError):
    """Writing failed (disk full, read-only, permission): says what was being written and what is
    intact, e.g. 'no space left on device while writing the checkpoint; the last good checkpoint
    (epoch 3) is intact'."""
