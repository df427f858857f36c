"""Progress reporting for long jobs (a no-op sink, rich progress bars with rate + ETA), the CLIs' table console and errors."""
from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from rich.console import Console
from rich.markup import escape
from rich import get_console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
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


def option_given(ctx: Any, name: str) -> bool:
    """Whether a command's option `name` was given (not left at its default); by the source's name, the same whether
    Typer uses Click's ParameterSource or its own copy of it."""
    return getattr(ctx.get_parameter_source(name), "name", None) != "DEFAULT"


def table_console() -> Console:
    """A stdout console for result tables: the terminal's width, or 220 columns in logs and pipes (no cut names)."""
    return Console(width=None if sys.stdout.isatty() else 220)

__all__ = ["LoggedProgress", "ProgressSink", "NullProgress", "rich_progress"]

LOG_EVERY_SECONDS = 30.0  # how often a progress bar written to a log (not a terminal) prints a line


class LoggedProgress(Progress):
    """A rich Progress that, where its console is not a terminal (a Slurm log, `> file`), prints each task as one
    plain line when it starts, every LOG_EVERY_SECONDS, and when it stops, instead of a live bar that is drawn only
    at the end."""

    def __init__(self, *columns: str | ProgressColumn, every: float | None = None, **options: Any) -> None:
        """The columns and options of rich's Progress; `every`: seconds between a logged task's lines."""
        console = options.get("console") or get_console()
        self.logged = not console.is_terminal
        options = {"speed_estimate_period": 120.0, **options}  # rate and ETA over 2 min: blocks land in bursts
        super().__init__(*columns, **{**options, "disable": options.get("disable", False) or self.logged})
        self._every = LOG_EVERY_SECONDS if every is None else every
        self._last_line: dict[TaskID, float] = {}
        self._last_completed: dict[TaskID, float] = {}

    def update(self, task_id: TaskID, **changes: Any) -> None:
        """rich's update, then a line in a log if one is due."""
        super().update(task_id, **changes)
        self._log(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        """rich's advance, then a line in a log if one is due."""
        super().advance(task_id, advance)
        self._log(task_id)

    def stop(self) -> None:
        """Stop; in a log, a last line for each task that has moved since its last line."""
        super().stop()
        if self.logged:
            for task in self.tasks:
                if task.completed != self._last_completed.get(task.id, 0):
                    self._print(task.id)

    def _log(self, task_id: TaskID) -> None:
        """Print the task's line if the console is a log and this is its first update or its last line is `every`
        seconds old (so each phase shows up in the log when it starts, in order)."""
        if not self.logged:
            return
        last = self._last_line.get(task_id)
        if last is None or time.monotonic() - last >= self._every:
            self._print(task_id)

    def _print(self, task_id: TaskID) -> None:
        """The task's columns (all but the bar) as one plain line."""
        self._last_line[task_id] = time.monotonic()
        task = self._tasks[task_id]
        self._last_completed[task_id] = task.completed
        parts = [column(task) if isinstance(column, ProgressColumn) else column.format(task=task)
                 for column in self.columns if not isinstance(column, BarColumn)]
        line = Text(" ").join(part if isinstance(part, Text) else Text.from_markup(str(part)) for part in parts)
        self.console.print(line, highlight=False, soft_wrap=True)


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
    progress = LoggedProgress(
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
