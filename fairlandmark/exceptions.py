"""Exceptions raised on bad input.

Every check that rejects user input raises :class:`InputError` with a single
line saying which file, which row or column, and what to do. The CLI turns it
into that one line on stderr and exit code 2, with no traceback.
"""

from __future__ import annotations

__all__ = ["InputError", "FairlandmarkWarning"]


class InputError(ValueError):
    """Bad input: a file, column, row or option the user must fix."""


class FairlandmarkWarning(UserWarning):
    """Something the user should know about, that does not stop the audit."""
