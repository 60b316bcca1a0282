"""Progress bars for long computations (permutations, bootstrap, privacy refits).

The one place that builds a bar, so every long step looks the same. The
statistics call :func:`progress_bar` with the caller's choice: ``False``/``None``
(silent), ``True`` (a transient bar on standard error), or a
``rich.progress.Progress`` to draw into.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["progress_bar", "NoProgress"]


class NoProgress:
    """A stand-in for ``rich.progress.Progress`` that draws nothing."""

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def advance(self, *args: Any, **kwargs: Any) -> None:
        pass

    def update(self, *args: Any, **kwargs: Any) -> None:
        pass


@contextmanager
def progress_bar(progress: object) -> Iterator[Any]:
    """Yield something with ``add_task``/``advance``: a live bar, the caller's bar, or :class:`NoProgress`.

    Examples
    --------
    >>> with progress_bar(False) as bar:
    ...     task = bar.add_task("work", total=3); bar.advance(task, 3)
    """
    if progress is None or progress is False:
        yield NoProgress()
    elif progress is True:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        # markup=False: descriptions may quote user data (a within-level name such as "[/]").
        bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                       TimeRemainingColumn(),
                       console=Console(stderr=True), transient=True)
        with bar:
            yield bar
    else:
        yield progress
