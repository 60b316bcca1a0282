"""The one exception type that the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations

__all__ = ["InputError", "TrainingDivergedError"]


class InputError(ValueError):
    """Bad user input (a file, a column, a flag): the message says what to do."""


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite."""
