"""Exceptions raised on bad input, and how messages name the options a caller typed.

Every check that rejects user input raises :class:`InputError` with a single
line saying which file, which row or column, and what to do. The CLI turns it
into that one line on stderr and exit code 2, with no traceback.

A message that names an option is written once, marking the option by its API
name in guillemets (``«spacing_mm»``, or :func:`option`). ``str(error)`` spells it as a Python caller typed
it (``families``); the command line spells the same message with its flags
(``--family``) through :meth:`InputError.spelled`.

Examples
--------
>>> err = InputError("«spacing_mm» -1: must be a positive number of mm per pixel")
>>> str(err)
'spacing_mm -1: must be a positive number of mm per pixel'
>>> err.spelled({"spacing_mm": "--spacing-mm"})
'--spacing-mm -1: must be a positive number of mm per pixel'
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping

__all__ = ["InputError", "FairlandmarkWarning", "option", "spell_options", "OPTION_NAMES", "note"]

# Options that messages may name; only these marks are spelled, so user text that happens to contain
# guillemets is left as it is.
OPTION_NAMES = frozenset({
    "attributes", "bins", "families", "spacing_mm", "wrist_width", "thresholds_mm", "min_group_size",
    "permutations", "bootstrap", "baseline_repeats", "within", "n_splits", "runs", "pred_paths",
    "predicted_only", "max_dp", "baseline", "significance", "privacy", "seed", "alpha", "ci", "correction",
    "encoding", "spacing_from_dicom", "dicom_match", "category", "instance", "image_key", "metadata_from_coco",
})
_OPTION = re.compile("«([a-z_]+)»")


def option(api_name: str) -> str:
    """Mark an option inside a message; it is spelled for the reader when the message is shown."""
    return f"«{api_name}»"


def spell_options(text: str, spellings: Mapping[str, str] | None = None) -> str:
    """Replace option marks by their spelling in ``spellings`` (default: the API name itself)."""
    spellings = spellings or {}
    def spell(match: re.Match[str]) -> str:
        name = match.group(1)
        return spellings.get(name, name) if name in OPTION_NAMES else match.group(0)

    return _OPTION.sub(spell, text)


class InputError(ValueError):
    """Bad input: a file, column, row or option the user must fix."""

    def __str__(self) -> str:
        return spell_options(super().__str__())

    def spelled(self, spellings: Mapping[str, str]) -> str:
        """The message with options spelled as in ``spellings`` (e.g. command-line flags)."""
        return spell_options(super().__str__(), spellings)



class FairlandmarkWarning(UserWarning):
    """Something the user should know about, that does not stop the audit."""

    def __str__(self) -> str:
        return spell_options(super().__str__())

    def spelled(self, spellings: Mapping[str, str]) -> str:
        """The message with options spelled as in ``spellings`` (e.g. command-line flags)."""
        return spell_options(super().__str__(), spellings)


def note(message: str, notes: list[str] | None, *, stacklevel: int = 2) -> None:
    """Tell the user something that does not stop the work, once.

    A check called inside a larger job (``prepare_study``) appends the message,
    options still marked, to that job's ``notes``; the job's result carries it
    and the facade or the command line shows it once, spelled for its reader.
    Called on its own (``notes=None``), the check warns with
    :class:`FairlandmarkWarning` instead.

    Examples
    --------
    >>> collected: list[str] = []
    >>> note("«spacing_mm» ignored", collected)
    >>> collected
    ['«spacing_mm» ignored']
    """
    if notes is None:
        warnings.warn(FairlandmarkWarning(message), stacklevel=stacklevel + 1)
    else:
        notes.append(message)
