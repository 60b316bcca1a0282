"""Atomic writes: a result file is either the old one or the complete new one."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterable
from typing import Any

import numpy as np

from fairlandmark.exceptions import InputError

__all__ = ["atomic_write_text", "atomic_write_bytes", "write_text_output", "json_safe", "dump_json", "check_outputs",
           "read_toml", "MSG_TOML", "MSG_NO_TOMLLIB"]

MSG_OUTPUT_IS_INPUT = "{option} {path}: that is the {role} this command reads; write the result to another path"
MSG_OUTPUT_TWICE = "{option} {path}: also given to {other}; give each output its own path"
MSG_OUTPUT_IS_FOLDER = "{option} {path}: is a folder; give a file path"
MSG_OUTPUT_IS_FILE = "{option} {path}: is a file; give a folder"
MSG_TOML = "{path}: not valid TOML ({error}); fix the syntax"
MSG_TOML_ENCODING = "{path}: not UTF-8 text; save the file as UTF-8 (TOML files must be UTF-8)"
MSG_NO_TOMLLIB = "{path}: reading TOML needs Python 3.11 or the tomli package (pip install tomli)"
MSG_FILE_MISSING = "{path}: file not found; check the path"
MSG_FILE_UNREADABLE = "{path}: cannot be read ({reason}); check the path and its permissions"


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    except OSError as exc:
        # Name the file the user asked for, not the temporary one.
        raise OSError(exc.errno, exc.strerror, path) from None
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are ordinary files
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):  # name the file the user asked for, not the temporary one
            raise OSError(exc.errno, exc.strerror, path) from None
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_text_output(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically; ``"-"`` writes it to standard output."""
    if os.fspath(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    atomic_write_text(path, text)


def json_safe(value: Any) -> Any:
    """JSON-ready copy: NaN and inf become None, numpy scalars become Python ones."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if np.isfinite(v) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def dump_json(doc: Any, path: str | os.PathLike[str] | None = None, *, indent: int | None = 2) -> str:
    """JSON text of a json-safe ``doc``; written atomically to ``path`` if given."""
    text = json.dumps(doc, indent=indent, allow_nan=False)
    if path is not None:
        atomic_write_text(path, text + "\n")
    return text


def check_outputs(outputs: Iterable[tuple[str, str | os.PathLike[str] | None, bool]],
                  inputs: Iterable[tuple[str, str | os.PathLike[str] | None]] = ()) -> None:
    """Refuse, before any work, outputs that would overwrite an input, each other, or the wrong kind of path.

    Parameters
    ----------
    outputs : iterable of (option, path, is_folder)
        ``path`` None or ``"-"`` (standard output) is skipped.
    inputs : iterable of (role, path)
        Files the command reads; None is skipped.

    Raises
    ------
    InputError
        One line naming the option and the path.
    """
    read = {os.path.realpath(os.fspath(path)): role for role, path in inputs if path not in (None, "-")}
    seen: dict[str, str] = {}
    for option, path, is_folder in outputs:
        if path is None or path == "-":
            continue
        real = os.path.realpath(os.fspath(path))
        if real in read:
            raise InputError(MSG_OUTPUT_IS_INPUT.format(option=option, path=path, role=read[real]))
        if real in seen:
            raise InputError(MSG_OUTPUT_TWICE.format(option=option, path=path, other=seen[real]))
        seen[real] = option
        if is_folder and os.path.isfile(real):
            raise InputError(MSG_OUTPUT_IS_FILE.format(option=option, path=path))
        if not is_folder and os.path.isdir(real):
            raise InputError(MSG_OUTPUT_IS_FOLDER.format(option=option, path=path))


def read_toml(path: str | os.PathLike[str], *, missing: str = MSG_FILE_MISSING) -> dict:
    """Parse a TOML file; every failure is one :class:`InputError` line naming the file.

    ``missing`` is the message for a file that does not exist (``{path}`` is filled in).
    """
    path = os.fspath(path)
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise InputError(MSG_NO_TOMLLIB.format(path=path)) from None
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise InputError(missing.format(path=path)) from None
    except UnicodeDecodeError:
        raise InputError(MSG_TOML_ENCODING.format(path=path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(MSG_TOML.format(path=path, error=str(exc).splitlines()[0])) from None
    except IsADirectoryError:
        raise InputError(MSG_FILE_UNREADABLE.format(path=path, reason="it is a folder")) from None
    except OSError as exc:
        raise InputError(MSG_FILE_UNREADABLE.format(path=path, reason=exc.strerror or exc)) from None
