"""Progress reporting for long jobs (a no-op sink, rich progress bars with rate + ETA) and the CLIs' table console."""
from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


def print_error(message: str) -> None:
    """'error: MESSAGE' on stderr; the message is printed as is (a '[cost]' in it is text, not markup)."""
    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def print_warning(message: str) -> None:
    """'warning: MESSAGE' on stderr (the message is text, not markup)."""
    Console(stderr=True).print(f"[bold yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def table_console() -> Console:
    """A stdout console for result tables: the terminal's width, or 220 columns in logs and pipes (no cut names)."""
    return Console(width=None if sys.stdout.isatty() else 220)

__all__ = ["ProgressSink", "NullProgress", "rich_progress"]


class ProgressSink(Protocol):
    """Receives phase starts and advances; grading code reports through this."""

    def phase(self, name: str, total: int) -> None:
        """Start a phase with total units of work."""

    def advance(self, name: str, n: int = 1) -> None:
        """Record n more units done in a phase."""


class NullProgress:
    """A sink that ignores everything."""

    def phase(self, name: str, total: int) -> None:
        """Ignore."""

    def advance(self, name: str, n: int = 1) -> None:
        """Ignore."""


def rate_text(speed: float | None) -> str:
    """Human-readable rate, e.g. '12.3k/s'."""
    if not speed:
        return "- /s"
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if speed >= scale:
            return f"{speed / scale:.1f}{unit}/s"
    return f"{speed:.1f}/s"


class RateColumn(ProgressColumn):
    """Items per second."""

    def render(self, task: Any) -> Text:
        """Render the task's speed."""
        return Text(rate_text(task.speed), style="cyan")


class _RichSink:
    """A sink drawing one rich progress bar per phase."""

    def __init__(self, progress: Progress) -> None:
        """Wrap a started rich Progress."""
        self._progress = progress
        self._tasks: dict[str, Any] = {}

    def phase(self, name: str, total: int) -> None:
        """Add (or reset) the bar for a phase."""
        if name in self._tasks:
            self._progress.reset(self._tasks[name], total=total)
        else:
            self._tasks[name] = self._progress.add_task(name, total=total)

    def advance(self, name: str, n: int = 1) -> None:
        """Advance a phase's bar."""
        if name in self._tasks:
            self._progress.advance(self._tasks[name], n)


@contextmanager
def rich_progress(enabled: bool = True, console: Console | None = None) -> Iterator[ProgressSink]:
    """A ProgressSink drawing rich bars (count, %, rate, elapsed, ETA) on stderr; NullProgress if disabled."""
    if not enabled:
        yield NullProgress()
        return
    progress = Progress(
        TextColumn("[bold]{task.description:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
    )
    with progress:
        yield _RichSink(progress)
