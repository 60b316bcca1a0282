"""Keypoint families (e.g. wrist and fingers) for per-family MRE and mean DP."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from fairlandmark.exceptions import InputError

__all__ = ["parse_family", "family_index"]

MSG_FAMILY_FORMAT = "«families» {value!r}: expected NAME=SPEC such as wrist=1-18 or tip=3,7,11"
MSG_FAMILY_UNKNOWN = "«families» {name}: keypoint {kp!r} is not in the predictions; the keypoints are {known}"
MSG_FAMILY_TWICE = "«families»: keypoint {kp!r} is in both '{a}' and '{b}'; put each keypoint in one family"
MSG_FAMILY_NAME_TWICE = "«families» {name}: given twice; give each family once, with all its keypoints (e.g. {name}=1-5,9)"
MSG_FAMILY_RESERVED = "«families» {name}: 'all' is reserved for the whole set of keypoints; choose another name"


def parse_family(text: str) -> tuple[str, list[str]]:
    """Parse ``"wrist=1-18"`` or ``"tips=3,7,11"`` into ``(name, tokens)``.

    Ranges ``A-B`` expand to integers; other tokens stay as keypoint names.

    Examples
    --------
    >>> parse_family("wrist=1-3,7")
    ('wrist', ['1', '2', '3', '7'])
    """
    name, sep, spec = str(text).partition("=")
    name = name.strip()
    if not sep or not name or not spec.strip():
        raise InputError(MSG_FAMILY_FORMAT.format(value=text))
    if name == "all":
        raise InputError(MSG_FAMILY_RESERVED.format(name=name))
    tokens: list[str] = []
    for token in spec.split(","):
        token = token.strip()
        lo, dash, hi = token.partition("-")
        if dash and lo.isdecimal() and hi.isdecimal():
            if int(hi) < int(lo):
                raise InputError(MSG_FAMILY_FORMAT.format(value=text))
            tokens.extend(str(i) for i in range(int(lo), int(hi) + 1))
        elif token:
            tokens.append(token)
        else:
            raise InputError(MSG_FAMILY_FORMAT.format(value=text))
    return name, tokens


def family_index(families: dict[str, Any] | Iterable[tuple[str, Iterable[object]]],
                 keypoints: Sequence[object] | np.ndarray) -> dict[str, list[int]]:
    """Map family names to keypoint column indices.

    Parameters
    ----------
    families : dict of str -> list of str, or list of (name, tokens)
    keypoints : sequence
        Keypoint labels of the predictions.

    Returns
    -------
    dict of str -> list of int
    """
    items = families.items() if isinstance(families, dict) else families
    position = {str(k): i for i, k in enumerate(keypoints)}
    known = ", ".join(map(str, list(keypoints)[:10])) + (", ..." if len(keypoints) > 10 else "")
    owner: dict[str, str] = {}
    out: dict[str, list] = {}
    for name, tokens in items:
        if name in out:
            raise InputError(MSG_FAMILY_NAME_TWICE.format(name=name))
        idx = []
        for token in tokens:
            token = str(token)
            if token not in position:
                raise InputError(MSG_FAMILY_UNKNOWN.format(name=name, kp=token, known=known))
            if token in owner and owner[token] != name:
                raise InputError(MSG_FAMILY_TWICE.format(kp=token, a=owner[token], b=name))
            owner[token] = name
            idx.append(position[token])
        out[name] = sorted(set(idx))
    return out
