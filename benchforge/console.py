"""Terminal output: progress bars and tables (rich), kept apart from the stage logic."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any


def stderr_console() -> Any:
    """A rich Console on stderr (logs and progress; stdout carries only results)."""
    from rich.console import Console

    return Console(stderr=True)


def stdout_console() -> Any:
    """A rich Console on stdout, never wrapping (tables stay copyable)."""
    import os
    import sys

    from rich.console import Console

    # Piped output (logs, CI) would otherwise wrap every table at 80 columns.
    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(width=160 if wide else None)


@contextmanager
def progress_bar(description: str, total: int,
                 enabled: bool = True) -> Iterator[Callable[[], None]]:
    """Yield an ``advance()`` callable driving a done/total bar with rate and ETA."""
    if not enabled or total == 0:
        yield lambda: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    class RateColumn(TextColumn):
        def render(self, task: Any) -> Any:
            from rich.text import Text

            speed = task.finished_speed or task.speed
            return Text(f"{speed:.1f}/s" if speed else "-/s")

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TaskProgressColumn(), RateColumn(""), TimeElapsedColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(), console=stderr_console(),
                  transient=False) as progress:
        task_id = progress.add_task(description, total=total)
        yield lambda: progress.advance(task_id)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a titled table of ``rows`` under ``columns`` on stdout."""
    from rich.markup import escape
    from rich.table import Table

    # Values are data, never markup: "[non-OSI: ...]" or a path with brackets must show as is.
    table = Table(title=escape(title))
    for column in columns:
        table.add_column(escape(column))
    for row in rows:
        table.add_row(*(escape(str(v)) for v in row))
    stdout_console().print(table)
