"""Atomic writes: a result file is either the old one or the complete new one."""

from __future__ import annotations

import json
import math
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable
from contextvars import ContextVar, Token
from typing import Any

import numpy as np

from fairlandmark.exceptions import InputError

__all__ = ["OutputSet", "current_outputs", "when_written", "missing_folders", "is_special_output", "STDOUT", "atomic_write_text", "atomic_write_bytes", "write_text_output", "json_safe", "dump_json", "check_outputs",
           "read_toml", "MSG_TOML", "MSG_NO_TOMLLIB"]

MSG_OUTPUT_IS_INPUT = "{option} {path}: that is the {role} this command reads; write the result to another path"
MSG_OUTPUT_TWICE = "{option} {path}: also given to {other}; give each output its own path"
MSG_OUTPUT_IS_FOLDER = "{option} {path}: is a folder; give a file path"
MSG_OUTPUT_IS_FILE = "{option} {path}: is a file; give a folder"
MSG_FOLDER_STDOUT = "{option} -: a folder cannot be standard output; give a folder path"
MSG_STDOUT_TWICE = ("{option} - and {other} - would both print to standard output; send one of them to a file")
MSG_OUTPUT_NO_FOLDER = ("{option} {path}: {folder} is a file, not a folder; check the path and its permissions")
MSG_OUTPUT_READ_ONLY = "{option} {path}: the file is read-only; make it writable or give another path"
MSG_OUTPUT_FOLDER_LOCKED = "{option} {path}: cannot write into {folder} (permission denied); give another path"
MSG_OUTPUT_NOT_WRITABLE = "{option} {path}: cannot be written (permission denied); give another path"
MSG_TOML = "{path}: not valid TOML ({error}); fix the syntax"
MSG_TOML_ENCODING = "{path}: not UTF-8 text; save the file as UTF-8 (TOML files must be UTF-8)"
MSG_NO_TOMLLIB = "{path}: reading TOML needs Python 3.11 or the tomli package (pip install tomli)"
MSG_FILE_MISSING = "{path}: file not found; check the path"
MSG_FILE_UNREADABLE = "{path}: cannot be read ({reason}); check the path and its permissions"


STDOUT = "-"  # an output path that means standard output, for every output of every command
# Paths that name a stream of this process rather than a file, written in place however they resolve.
_STREAM_PREFIXES = ("/dev/stdout", "/dev/stderr", "/dev/fd/", "/proc/self/fd/")

_ACTIVE: ContextVar[OutputSet | None] = ContextVar("fairlandmark_outputs", default=None)


def current_outputs() -> OutputSet | None:
    """The active :class:`OutputSet`, or None when writes go straight to their files."""
    return _ACTIVE.get()


def when_written(callback: Callable[[], None]) -> None:
    """Run ``callback`` (say, print "wrote PATH") once the outputs are in place.

    Inside an :class:`OutputSet` that is after its commit, and never if it is
    rolled back; outside one, at once (files are then written directly).
    """
    active = _ACTIVE.get()
    if active is None:
        callback()
    else:
        active.after_commit(callback)


def is_special_output(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is standard output, a stream, or an existing non-regular file (device, FIFO, socket).

    Such outputs are written in place (opened and written), never replaced by a rename: replacing
    ``/dev/null`` or a FIFO by a regular file would clobber it.
    """
    path = os.fspath(path)
    if path == STDOUT or path.startswith(_STREAM_PREFIXES):
        return True
    try:
        mode = os.stat(path).st_mode  # follows symbolic links
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def _write_in_place(path: str, data: bytes) -> None:
    if path == STDOUT:
        sys.stdout.flush()
        buffer = getattr(sys.stdout, "buffer", None)
        if buffer is None:  # a text-only stream (e.g. a test's StringIO)
            sys.stdout.write(data.decode("utf-8", "replace"))
        else:
            buffer.write(data)
            buffer.flush()
        return
    with open(path, "wb") as handle:  # a device, FIFO or stream: write to it, never replace it
        handle.write(data)


def missing_folders(path: str | os.PathLike[str]) -> list[str]:
    """Folders above ``path`` that do not exist yet, outermost first."""
    missing = []
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    while folder and not os.path.exists(folder):
        missing.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return missing[::-1]


def _stage(path: str, data: bytes, created: list[str] | None = None) -> str:
    """Write ``data`` to a temporary file beside ``path`` (fsynced); returns the temporary name.

    Missing folders are created and, when ``created`` is given, appended to it.
    """
    folder = os.path.dirname(os.path.abspath(path))
    new = missing_folders(path)
    os.makedirs(folder, exist_ok=True)
    if created is not None:
        created.extend(f for f in new if f not in created)
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
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):  # name the file the user asked for, not the temporary one
            raise OSError(exc.errno, exc.strerror, path) from None
        raise
    return tmp


def _target(path: str) -> str:
    """The file a rename must replace: through a symbolic link to its target, so the link survives."""
    return os.path.realpath(path) if os.path.islink(path) else path


class OutputSet:
    """All of a command's outputs, or none: files are staged beside their targets and renamed at the end.

    While an ``OutputSet`` is active (``with OutputSet():``), :func:`atomic_write_bytes` (and every writer
    built on it) stages its file instead of replacing the target; :meth:`commit` renames every staged file
    into place, writes the in-place outputs (standard output, devices, FIFOs), and :meth:`rollback` deletes
    the staged files. Leaving the ``with`` block normally commits; an exception (including Ctrl-C) rolls back.

    Examples
    --------
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> try:
    ...     with OutputSet():
    ...         atomic_write_text(os.path.join(folder, "a.json"), "{}")
    ...         raise KeyboardInterrupt
    ... except KeyboardInterrupt:
    ...     pass
    >>> os.listdir(folder)
    []
    """

    def __init__(self) -> None:
        self._staged: list[tuple[str, str]] = []  # (temporary file, file to replace)
        self._in_place: list[tuple[str, bytes]] = []
        self.created_folders: list[str] = []  # made for the outputs; removed again on rollback
        self._after_commit: list[Callable[[], None]] = []
        self._token: Token[OutputSet | None] | None = None

    def stage(self, path: str | os.PathLike[str], data: bytes) -> None:
        """Hold ``data`` for ``path`` until :meth:`commit`."""
        path = os.fspath(path)
        if is_special_output(path):
            self._in_place.append((path, data))
        else:
            self._staged.append((_stage(path, data, self.created_folders), _target(path)))

    def commit(self) -> None:
        """Rename every staged file into place, then write the in-place outputs."""
        staged, self._staged = self._staged, []
        for i, (tmp, path) in enumerate(staged):
            try:
                os.replace(tmp, path)
            except OSError as exc:
                for rest, _ in staged[i:]:
                    _unlink_quietly(rest)
                raise OSError(exc.errno, exc.strerror, path) from None
        in_place, self._in_place = self._in_place, []
        for path, data in in_place:
            _write_in_place(path, data)
        after, self._after_commit = self._after_commit, []
        for callback in after:
            callback()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the files staged so far are in place (dropped on rollback)."""
        self._after_commit.append(callback)

    def rollback(self) -> None:
        """Delete every staged file; nothing is written."""
        for tmp, _ in self._staged:
            _unlink_quietly(tmp)
        for folder in reversed(self.created_folders):
            try:
                os.rmdir(folder)  # only when still empty
            except OSError:
                pass
        self._staged, self._in_place, self.created_folders, self._after_commit = [], [], [], []

    def __enter__(self) -> OutputSet:
        self._token = _ACTIVE.set(self)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: object) -> None:
        if self._token is not None:
            _ACTIVE.reset(self._token)
            self._token = None
        if kind is None:
            self.commit()
        else:
            self.rollback()


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``.

    ``"-"`` is standard output; a device, FIFO or ``/dev/stdout`` is written in place, never replaced.
    Inside an active :class:`OutputSet` the write is held until the set commits. A missing folder is created.
    """
    path = os.fspath(path)
    active = _ACTIVE.get()
    if active is not None:
        active.stage(path, data)
        return
    if is_special_output(path):
        _write_in_place(path, data)
        return
    tmp = _stage(path, data)
    try:
        os.replace(tmp, _target(path))
    except BaseException as exc:
        _unlink_quietly(tmp)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, exc.strerror, path) from None
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_text_output(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically; ``"-"`` writes it to standard output."""
    atomic_write_text(path, text)


def json_safe(value: Any) -> Any:
    """JSON-ready copy: NaN and inf become None, numpy scalars become Python ones."""
    kind = type(value)  # the common exact types first: an audit's document has tens of thousands of values
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.integer):
        return int(value)
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
    """Refuse, before any work, outputs that would overwrite an input, each other, or cannot be written.

    Parameters
    ----------
    outputs : iterable of (option, path, is_folder)
        ``path`` None is skipped; ``"-"`` is standard output (at most one output may take it; never a folder).
    inputs : iterable of (role, path)
        Files the command reads; None is skipped.

    Raises
    ------
    InputError
        One line naming the option and the path: an input, a path given twice, a folder where a file
        belongs (or the reverse), a folder that does not exist, or a file or folder that cannot be written.

    Notes
    -----
    A missing output folder is created when the outputs are written (the command says so); here it is
    only checked that it can be: the nearest existing folder above it is a folder and takes new entries.
    """
    read = {os.path.realpath(os.fspath(path)): role for role, path in inputs if path not in (None, STDOUT)}
    seen: dict[str, str] = {}
    to_stdout: str | None = None
    for option, path, is_folder in outputs:
        if path is None:
            continue
        path = os.fspath(path)
        if path == STDOUT:
            if is_folder:
                raise InputError(MSG_FOLDER_STDOUT.format(option=option))
            if to_stdout is not None:
                raise InputError(MSG_STDOUT_TWICE.format(option=option, other=to_stdout))
            to_stdout = option
            continue
        real = os.path.realpath(path)
        if real in read:
            raise InputError(MSG_OUTPUT_IS_INPUT.format(option=option, path=path, role=read[real]))
        if real in seen and not is_special_output(path):
            raise InputError(MSG_OUTPUT_TWICE.format(option=option, path=path, other=seen[real]))
        seen[real] = option
        if is_folder and os.path.isfile(real):
            raise InputError(MSG_OUTPUT_IS_FILE.format(option=option, path=path))
        if not is_folder and os.path.isdir(real):
            raise InputError(MSG_OUTPUT_IS_FOLDER.format(option=option, path=path))
        _check_writable(option, path, real, is_folder)


def _check_writable(option: str, path: str, real: str, is_folder: bool) -> None:
    """The output can be written: its folder exists and takes new files, an existing file is writable."""
    if is_special_output(path):
        if not os.access(real, os.W_OK):
            raise InputError(MSG_OUTPUT_NOT_WRITABLE.format(option=option, path=path))
        return
    parent = os.path.dirname(real) or "."
    while not os.path.exists(parent):  # created on writing: the nearest existing folder must take it
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise InputError(MSG_OUTPUT_NO_FOLDER.format(option=option, path=path, folder=parent))
    if is_folder and os.path.isdir(real):
        parent = real  # files are written inside it
    elif os.path.exists(real) and not os.access(real, os.W_OK):
        raise InputError(MSG_OUTPUT_READ_ONLY.format(option=option, path=path))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(MSG_OUTPUT_FOLDER_LOCKED.format(option=option, path=path, folder=parent))


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
