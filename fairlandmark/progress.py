"""Progress for long computations: bars (permutations, bootstrap, privacy refits) and steps (reading a study).

The one place that builds a display, so every long step looks the same. The
statistics call :func:`progress_bar`, and the input checks :func:`progress_steps`,
with the caller's choice: ``False``/``None`` (silent), ``True`` (a transient
display on standard error), or a ``rich.progress.Progress`` to draw into.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from fairlandmark.exceptions import InputError

__all__ = ["progress_bar", "progress_steps", "check_progress", "no_step", "Step", "NoProgress", "MSG_PROGRESS"]

# Announces the step that starts now ("Reading preds.parquet"); the display shows it until the next one.
Step = Callable[[str], None]
MSG_PROGRESS = "progress: give True, False or a rich.progress.Progress to draw into, got {value}"


class NoProgress:
    """A stand-in for ``rich.progress.Progress`` that draws nothing."""

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def advance(self, *args: Any, **kwargs: Any) -> None:
        pass

    def update(self, *args: Any, **kwargs: Any) -> None:
        pass

    def remove_task(self, *args: Any, **kwargs: Any) -> None:
        pass


@contextmanager
def progress_bar(progress: object) -> Iterator[Any]:
    """Yield something with ``add_task``/``advance``: a live bar, the caller's bar, or :class:`NoProgress`.

    Examples
    --------
    >>> with progress_bar(False) as bar:
    ...     task = bar.add_task("work", total=3); bar.advance(task, 3)
    """
    check_progress(progress, ("add_task", "advance"))
    progress = _flag(progress)
    if progress is None or progress is False:
        yield NoProgress()
    elif progress is True:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        console = _live_console()
        if console is None:
            yield NoProgress()
            return
        # markup=False: descriptions may quote user data (a within-level name such as "[/]").
        bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                       TimeRemainingColumn(), console=console, transient=True)
        with bar:
            yield bar
    else:
        yield progress


@contextmanager
def progress_steps(progress: object) -> Iterator[Step]:
    """Yield ``step(description)``, which names the step that starts now: a transient line on standard error
    with a spinner, the step and the time since the first one (``True``), the caller's
    ``rich.progress.Progress``, or nothing (``False``/``None``).

    For work made of a few long steps of unknown length (reading and checking a million-image study): the
    line says what is being done, where a bar could only guess at how far along it is.

    Examples
    --------
    >>> with progress_steps(False) as step:
    ...     step("Reading preds.csv"); step("Checking ids")
    """
    check_progress(progress, ("add_task", "update", "remove_task"))
    progress = _flag(progress)
    if progress is None or progress is False:
        yield no_step
        return
    if progress is True:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        console = _live_console()
        if console is None:
            yield no_step
            return
        # markup=False: descriptions quote user data (a file name such as "[red]preds.csv").
        display: Any = Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False),
                                TimeElapsedColumn(), console=console, transient=True)
        with display:
            yield _StepTask(display).step
    else:
        task = _StepTask(progress)
        try:
            yield task.step
        finally:
            task.remove()  # the caller's display goes on: the steps' line leaves it when they are done


def no_step(description: str) -> None:
    """The step of silent work: names nothing."""


def _live_console() -> Any:
    """The standard-error console to draw a live display on, or None where none can be drawn: a log file or
    a pipe (a transient display leaves only an empty line there), or a notebook without ipywidgets (rich
    only warns that it cannot draw)."""
    from rich.console import Console

    console = Console(stderr=True)
    if console.is_terminal or (console.is_jupyter and importlib.util.find_spec("ipywidgets") is not None):
        return console
    return None


def _flag(progress: object) -> object:
    """numpy's booleans as Python's, so that ``progress is True`` holds for ``np.True_``."""
    return bool(progress) if isinstance(progress, np.bool_) else progress


def check_progress(progress: object, methods: tuple[str, ...] = ("add_task", "advance")) -> None:
    """InputError unless ``progress`` is True, False, None or a display with ``methods`` (a bar's, by default).

    Examples
    --------
    >>> check_progress(True)
    >>> check_progress("yes")
    Traceback (most recent call last):
    ...
    fairlandmark.exceptions.InputError: progress: give True, False or a rich.progress.Progress to draw into, got 'yes'

    Parameters
    ----------
    progress : object
        What the caller passed as ``progress``.
    methods : tuple of str
        The methods a display must have: a bar's (``add_task``, ``advance``) or the steps' (``add_task``,
        ``update``, ``remove_task``).
    """
    if progress is None or isinstance(progress, (bool, np.bool_)):
        return
    if not all(callable(getattr(progress, m, None)) for m in methods):
        shown = repr(progress) if isinstance(progress, (int, float, str)) and len(repr(progress)) <= 40 else None
        raise InputError(MSG_PROGRESS.format(value=shown or f"a {type(progress).__name__}"))


class _StepTask:
    """One task of ``display`` whose description is the current step."""

    def __init__(self, display: Any) -> None:
        self.display = display
        self.task: Any = None

    def step(self, description: str) -> None:
        if self.task is None:
            self.task = self.display.add_task(description, total=None)
        else:
            self.display.update(self.task, description=description)

    def remove(self) -> None:
        if self.task is not None:
            self.display.remove_task(self.task)
