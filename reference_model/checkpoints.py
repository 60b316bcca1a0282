"""One loader for training checkpoints: every file that cannot be loaded is one InputError line.

``torch.load(..., weights_only=True)`` refuses pickled Python objects (good), but says so in several
lines of advice, and a truncated, corrupt or foreign file raises whatever its parser raises
(``UnpicklingError``, ``RuntimeError`` from the zip reader, ``EOFError``, ``KeyError`` on a missing
entry). :func:`load_checkpoint` turns all of them into one line naming the file and the cause.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from reference_model.errors import InputError

__all__ = ["load_checkpoint", "checkpoint_fits", "MSG_CHECKPOINT_MISFIT", "MSG_CHECKPOINT", "MSG_CHECKPOINT_MISSING", "MSG_CHECKPOINT_FOREIGN"]

MSG_CHECKPOINT_MISSING = "checkpoint {path}: not found; train a model first or check the path"
MSG_CHECKPOINT = ("checkpoint {path}: cannot be loaded ({reason}); give a best.pt or last.pt written by "
                  "fairlandmark-train")
MSG_CHECKPOINT_FOREIGN = ("checkpoint {path}: not a reference-model checkpoint (no {key!r} entry); give a best.pt "
                          "or last.pt written by fairlandmark-train")
MSG_CHECKPOINT_MISFIT = ("checkpoint {path}: its contents do not fit this model ({reason}); give a checkpoint "
                         "of the same architecture written by fairlandmark-train")
REASON_UNSAFE = "it holds Python objects other than tensors, which are not loaded for safety"
REASON_CORRUPT = "the file is truncated or corrupt"
REASON_FOREIGN = "not a PyTorch checkpoint file"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, pickle.UnpicklingError):
        text = str(exc).lower()
        if "unsupported global" in text:  # a pickled class or function: refused, never run
            return REASON_UNSAFE
        if "invalid load key" in text or "unsupported operand" in text:
            return REASON_FOREIGN
        return REASON_UNSAFE if "global" in text else REASON_CORRUPT
    if isinstance(exc, (EOFError, zipfile.BadZipFile)):
        return REASON_CORRUPT
    if isinstance(exc, RuntimeError) and any(w in str(exc) for w in ("PytorchStreamReader", "zip archive",
                                                                     "central directory", "failed finding")):
        return REASON_CORRUPT
    if isinstance(exc, (KeyError, ValueError, UnicodeDecodeError, TypeError)):
        return REASON_FOREIGN
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:120]}" if first else type(exc).__name__


ARCHITECTURE_KEYS = ("encoder", "encoder_depth", "decoder_channels", "image_size")


@contextmanager
def checkpoint_fits(path: str | Path) -> Iterator[None]:
    """Turn the errors of rebuilding a model from a loaded checkpoint (missing or misshapen tensors, unknown
    config keys) into one InputError line naming the file."""
    try:
        yield
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, InputError):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        reason = f"{type(exc).__name__}: {first[:120]}" if first else type(exc).__name__
        raise InputError(MSG_CHECKPOINT_MISFIT.format(path=path, reason=reason)) from None


def load_checkpoint(path: str | Path, *, required: Iterable[str] = ("config",),
                    config_keys: Iterable[str] = ARCHITECTURE_KEYS) -> dict[str, Any]:
    """Load a checkpoint saved by training (tensors and plain values only) onto the CPU.

    Parameters
    ----------
    path : str or Path
        The ``.pt`` file.
    required : iterable of str
        Entries the caller reads; a file without one of them is refused as foreign.
    config_keys : iterable of str
        Entries of ``state["config"]`` the caller reads (default: the architecture).

    Returns
    -------
    dict

    Raises
    ------
    InputError
        Missing, unreadable, truncated, corrupt, foreign or unsafe (pickled objects) file: one line.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(MSG_CHECKPOINT_MISSING.format(path=path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's advice about pickle protocols: the line below says it all
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file; each becomes one line
        raise InputError(MSG_CHECKPOINT.format(path=path, reason=_reason(exc))) from None
    if not isinstance(state, dict):
        raise InputError(MSG_CHECKPOINT_FOREIGN.format(path=path, key=next(iter(required), "config")))
    for key in required:
        if key not in state:
            raise InputError(MSG_CHECKPOINT_FOREIGN.format(path=path, key=key))
    if "config" in state:
        if not isinstance(state["config"], dict):
            raise InputError(MSG_CHECKPOINT_FOREIGN.format(path=path, key="config"))
        for key in config_keys:
            if key not in state["config"]:
                raise InputError(MSG_CHECKPOINT_FOREIGN.format(path=path, key=f"config.{key}"))
    return state
