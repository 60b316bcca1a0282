"""Atomic writes: a result file is either the old one or the complete new one."""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from fairlandmark.exceptions import InputError

__all__ = ["atomic_write_text", "atomic_write_bytes", "json_safe", "dump_json", "check_outputs"]

MSG_OUTPUT_IS_INPUT = "{option} {path}: that is the {role} this command reads; write the result to another path"
MSG_OUTPUT_TWICE = "{option} {path}: also given to {other}; give each output its own path"
MSG_OUTPUT_IS_FOLDER = "{option} {path}: is a folder; give a file path"
MSG_OUTPUT_IS_FILE = "{option} {path}: is a file; give a folder"


def atomic_write_bytes(path, data):
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


def atomic_write_text(path, text):
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(value):
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


def dump_json(doc, path=None, *, indent=2):
    """JSON text of a json-safe ``doc``; written atomically to ``path`` if given."""
    text = json.dumps(doc, indent=indent, allow_nan=False)
    if path is not None:
        atomic_write_text(path, text + "\n")
    return text


def check_outputs(outputs, inputs=()):
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
    seen = {}
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
