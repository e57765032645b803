"""Progress bars for long work (epochs, cache building), or nothing when they are off."""

from __future__ import annotations

import contextlib


def progress_bar(enabled: bool) -> contextlib.AbstractContextManager:
    """A rich Progress (transient: it leaves the terminal clean) or a null context yielding None."""
    if not enabled:
        return contextlib.nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    transient=True)
