"""Atomic writes: a result file is either the old one or the complete new one."""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

__all__ = ["atomic_write_text", "atomic_write_bytes", "json_safe", "dump_json"]


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
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
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
