"""Progress bars for long work (epochs, cache building, evaluation), or nothing when they are off.

A bar opened while another is on screen (the validation inside an epoch) adds its task to the bar
already live: one display, and rich 13 (which the requirements allow) refuses a second live one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

_LIVE: list[Any] = []  # the bar on screen, if any


@contextlib.contextmanager
def progress_bar(enabled: bool) -> Iterator[Any]:
    """A rich Progress (transient: it leaves the terminal clean), the one already live, or None when off
    or when the output is not a terminal (FORCE_COLOR=1 forces one)."""
    if not enabled:
        yield None
        return
    if _LIVE:
        yield _LIVE[-1]
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console()
    if not (console.is_terminal or console.is_jupyter):  # a log file: a bar would only leave blank lines
        yield None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        _LIVE.append(bar)
        try:
            yield bar
        finally:
            _LIVE.pop()


@contextlib.contextmanager
def bar_task(bar: Any, description: str, total: int | None, completed: int = 0) -> Iterator[Any]:
    """A task on `bar` (None: bars are off); yields its `advance()`. The task leaves the bar when the
    work ends, also on an error or an interrupt, so an outer bar (a sweep's, a notebook's) is not
    left showing a dead epoch."""
    if bar is None:
        yield lambda: None
        return
    task = bar.add_task(description, total=total, completed=completed)
    try:
        yield lambda: bar.advance(task)
    finally:
        bar.remove_task(task)


@contextlib.contextmanager
def progress_task(enabled: bool, description: str, total: int | None) -> Iterator[Any]:
    """A task on the live (or a new) bar; yields its `advance()` (a no-op when bars are off)."""
    with progress_bar(enabled) as bar, bar_task(bar, description, total) as advance:
        yield advance


def length_of(iterable: Any) -> int | None:
    """The number of items, or None for an iterable that cannot say (a loader over a stream)."""
    try:
        return len(iterable)
    except TypeError:
        return None
