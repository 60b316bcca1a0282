"""Radial errors, in mm where a scale is known, else in pixels.

The paper's landmark error is the Euclidean distance between predicted and
true point. A pixel-to-mm scale comes from one of: a ``spacing_mm`` column, a
global ``spacing_mm`` value, or the wrist width (the distance between two
ground-truth keypoints taken as a known length, as for the Digital Hand Atlas).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fairlandmark.exceptions import InputError

if TYPE_CHECKING:
    from fairlandmark.inputs.schema import Predictions

__all__ = ["WristWidth", "parse_wrist_width", "radial_errors"]

MSG_TWO_SCALES = "{src}: give only one pixel-to-mm scale, found {found}; drop all but one"
MSG_ERROR_WITH_SCALE = (
    "{src}: the 'error_mm' column is already in mm, so {found} cannot apply; drop it, or drop error_mm and give coordinates"
)
MSG_WRIST_FORMAT = "«wrist_width» {value!r}: expected A,B,MM such as 1,5,50 (two keypoints and their distance in mm)"
MSG_WRIST_KEYPOINT = "«wrist_width»: keypoint {kp!r} is not in {src}; the keypoints are {known}"
MSG_WRIST_ZERO = (
    "{src}: image '{image}' has keypoints {a} and {b} at the same place, so the wrist width is 0; "
    "check its ground truth or use «spacing_mm»"
)
MSG_BAD_SPACING = "«spacing_mm» {value}: must be a positive number of mm per pixel"


@dataclass(frozen=True)
class WristWidth:
    """Scale each image so that true keypoints ``a`` and ``b`` are ``mm`` apart."""

    a: object
    b: object
    mm: float


def parse_wrist_width(text: str) -> WristWidth:
    """Parse ``"A,B,MM"`` (e.g. ``"1,5,50"``) into a :class:`WristWidth`.

    Examples
    --------
    >>> parse_wrist_width("1,5,50")
    WristWidth(a=1, b=5, mm=50.0)
    """
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 3:
        raise InputError(MSG_WRIST_FORMAT.format(value=text))
    try:
        mm = float(parts[2])
    except ValueError:
        raise InputError(MSG_WRIST_FORMAT.format(value=text)) from None
    if not mm > 0:
        raise InputError(MSG_WRIST_FORMAT.format(value=text))
    a, b = (int(p) if p.lstrip("-").isdigit() else p for p in parts[:2])
    return WristWidth(a, b, mm)


def _keypoint_index(keypoints: Sequence[object] | np.ndarray, label: object, src: str) -> int:
    matches = [i for i, k in enumerate(keypoints) if str(k) == str(label)]
    if not matches:
        known = ", ".join(map(str, keypoints[:10])) + (", ..." if len(keypoints) > 10 else "")
        raise InputError(MSG_WRIST_KEYPOINT.format(kp=label, src=src, known=known))
    return matches[0]


def radial_errors(preds: Predictions, *, spacing_mm: float | None = None,
                  wrist_width: WristWidth | None = None) -> tuple[np.ndarray, str]:
    """Radial error per (row, keypoint) and its unit.

    Parameters
    ----------
    preds : fairlandmark.inputs.schema.Predictions
        Validated predictions.
    spacing_mm : float, optional
        mm per pixel for every image.
    wrist_width : WristWidth, optional
        Per-image scale ``mm / |true_a - true_b|``.

    Returns
    -------
    errors : ndarray, shape (N, K)
        Euclidean errors; NaN marks a missing prediction.
    unit : {"mm", "px"}
        ``"px"`` when no scale was given.
    """
    src = preds.source
    scales = [
        name
        for name, given in (
            ("a spacing_mm column", preds.spacing is not None),
            ("«spacing_mm»", spacing_mm is not None),
            ("«wrist_width»", wrist_width is not None),
        )
        if given
    ]
    if preds.error is not None:
        if scales:
            raise InputError(MSG_ERROR_WITH_SCALE.format(src=src, found=scales[0]))
        return preds.error.copy(), "mm"
    if len(scales) > 1:
        raise InputError(MSG_TWO_SCALES.format(src=src, found=" and ".join(scales)))

    assert preds.pred is not None and preds.true is not None  # no error_mm column: coordinates were checked
    # x and y apart: two (N, K) temporaries instead of one (N, K, 2); the same numbers.
    distance = np.hypot(preds.pred[..., 0] - preds.true[..., 0],
                        preds.pred[..., 1] - preds.true[..., 1])  # NaN where the prediction is missing
    if spacing_mm is not None:
        if not (np.isfinite(spacing_mm) and spacing_mm > 0):
            raise InputError(MSG_BAD_SPACING.format(value=spacing_mm))
        return distance * float(spacing_mm), "mm"
    if preds.spacing is not None:
        return distance * preds.spacing, "mm"
    if wrist_width is not None:
        ia = _keypoint_index(preds.keypoints, wrist_width.a, src)
        ib = _keypoint_index(preds.keypoints, wrist_width.b, src)
        span = preds.true[:, ia, :] - preds.true[:, ib, :]
        width_px = np.hypot(span[:, 0], span[:, 1])
        zero = ~(width_px > 0)
        if zero.any():
            i = int(np.flatnonzero(zero)[0])
            raise InputError(
                MSG_WRIST_ZERO.format(src=src, image=preds.row_image[i], a=wrist_width.a, b=wrist_width.b)
            )
        return distance * (wrist_width.mm / width_px)[:, None], "mm"
    return distance, "px"
