"""Progress for people on long commands (fuzz, lint of large ELFs, lint per injection).

A rich progress bar on stderr, only when stderr is a terminal and the caller
is not writing a machine format: stdout stays exactly what it was, and logs,
pipes and ``--json`` see nothing.  The library code reports progress through
a plain callback (``advance`` / ``update(done, total)``); only the CLI makes
the bar.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: update(done, total): the work done so far out of the (possibly growing) total
Update = Callable[[int, int], None]


def wanted(*, machine_output: bool = False) -> bool:
    """Whether to show progress: stderr is a terminal that can draw one (not
    ``TERM=dumb``) and the output is for people."""
    return (not machine_output and sys.stderr.isatty()
            and os.environ.get("TERM", "").lower() not in ("dumb", "unknown"))


@contextmanager
def progress(label: str, total: int, *, show: bool) -> Iterator[Update]:
    """A transient bar labelled ``label``; yields ``update(done, total)``.

    With ``show`` false it yields a function that does nothing, so callers
    need no second code path.
    """
    if not show:
        yield lambda _done, _total: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(TextColumn(f"[bold]{label}[/bold]"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True), transient=True)
    task = bar.add_task(label, total=total)

    def update(done: int, new_total: int) -> None:
        bar.update(task, completed=done, total=new_total)

    with bar:
        yield update
