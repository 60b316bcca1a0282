"""Radial errors, in mm where a scale is known, else in pixels.

The paper's landmark error is the Euclidean distance between predicted and
true point. A pixel-to-mm scale comes from one of: a ``spacing_mm`` column,
``spacing_x_mm``/``spacing_y_mm`` columns (anisotropic pixels: x and y are
scaled separately before the distance), a global ``spacing_mm`` value, or the
wrist width (the distance between two
ground-truth keypoints taken as a known length, as for the Digital Hand Atlas).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fairlandmark.exceptions import InputError
from fairlandmark.inputs.columnar import pooled_empty

if TYPE_CHECKING:
    from fairlandmark.inputs.schema import Predictions

__all__ = ["WristWidth", "parse_wrist_width", "radial_errors", "scaled_coordinates", "check_finite_errors"]

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
MSG_NOT_FINITE = ("{src}: image '{image}' (run {run}), keypoint {kp}: the radial error is infinite (coordinates "
                  "or scale too large to subtract or multiply); check that row's coordinates and scale")
MSG_SUM_OVERFLOW = ("{src}: image '{image}' (run {run}), keypoint {kp}: error {value:g} is too large to average "
                    "(the sum overflows); check that row's coordinates and scale")
MSG_WRIST_UNLABELLED = (
    "{src}: image '{image}' has no ground truth for «wrist_width» keypoint {a} or {b}; "
    "label both in every image or use another scale"
)
MSG_BAD_SPACING = "«spacing_mm» {value}: must be a positive number of mm per pixel"
_BLOCK_ROWS = 4096  # rows of coordinates per distance step (temporaries of about 1 MB at K = 37)
_CHECK_BLOCK_ERRORS = 8 * _BLOCK_ROWS  # errors per step of check_finite_errors


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
    if not (np.isfinite(mm) and mm > 0):
        raise InputError(MSG_WRIST_FORMAT.format(value=text))
    a, b = (int(p) if p.lstrip("-").isdecimal() else p for p in parts[:2])
    return WristWidth(a, b, mm)


def _keypoint_index(keypoints: Sequence[object] | np.ndarray, label: object, src: str) -> int:
    matches = [i for i, k in enumerate(keypoints) if str(k) == str(label)]
    if not matches:
        known = ", ".join(map(str, keypoints[:10])) + (", ..." if len(keypoints) > 10 else "")
        raise InputError(MSG_WRIST_KEYPOINT.format(kp=label, src=src, known=known))
    return matches[0]


def check_finite_errors(errors: np.ndarray, preds: Predictions) -> np.ndarray:
    """InputError naming the first (image, keypoint) whose error is infinite, or when the errors overflow a sum.

    Coordinates near the float limit (±1e308) pass as numbers, but their difference or its scaling to mm
    is infinite; the audit would then report a null MRE without a word.
    """
    # In blocks of rows (no copy of a million images' errors for the NaN-free sum); the first bad entry in
    # row order is the first of the first block that has one. The block sums round a little differently from
    # one sum: the same decision except for errors within rounding of the float limit (about 1e303 mm).
    total = 0.0
    rows_per_block = max(1, _CHECK_BLOCK_ERRORS // max(1, errors.shape[1]))
    with np.errstate(over="ignore"):
        for lo in range(0, len(errors), rows_per_block):
            block = errors[lo:lo + rows_per_block]
            bad = np.isinf(block)
            if bad.any():
                row, kp = (int(i[0]) for i in np.nonzero(bad))
                row += lo
                raise InputError(MSG_NOT_FINITE.format(src=preds.source, image=preds.row_image[row],
                                                       run=preds.runs[preds.row_run[row]], kp=preds.keypoints[kp]))
            total += float(np.nansum(block, dtype=np.float64))
        # A bootstrap resample counts an image up to once per row: its sums stay below total * rows.
        resampled = total * max(1, errors.shape[0])
    if not np.isfinite(resampled):
        big_row, big_kp = (int(i) for i in np.unravel_index(int(np.nanargmax(errors)), errors.shape))
        row, kp = big_row, big_kp
        raise InputError(MSG_SUM_OVERFLOW.format(src=preds.source, image=preds.row_image[row],
                                                 run=preds.runs[preds.row_run[row]], kp=preds.keypoints[kp],
                                                 value=float(errors[row, kp])))
    return errors


def radial_errors(preds: Predictions, *, spacing_mm: float | None = None,
                  wrist_width: WristWidth | None = None) -> tuple[np.ndarray, str]:
    """Radial error per (row, keypoint) and its unit; InputError when an error is not finite."""
    with np.errstate(over="ignore", invalid="ignore"):
        errors, unit = _radial_errors(preds, spacing_mm=spacing_mm, wrist_width=wrist_width)
        return check_finite_errors(errors, preds), unit


def _radial_errors(preds: Predictions, *, spacing_mm: float | None = None,
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
            ("spacing_x_mm/spacing_y_mm columns", preds.spacing_xy is not None),
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
    if spacing_mm is not None and not (np.isfinite(spacing_mm) and spacing_mm > 0):
        raise InputError(MSG_BAD_SPACING.format(value=spacing_mm))
    # x and y apart, in blocks of rows whose temporaries stay in cache (a million images: no 300 MB
    # temporaries); elementwise, so the same numbers. NaN where the prediction is missing.
    pred, true = preds.pred, preds.true
    distance = pooled_empty(pred.shape[:2])  # the study's error matrix: pages the pool already has
    for lo in range(0, len(distance), _BLOCK_ROWS):
        rows = slice(lo, lo + _BLOCK_ROWS)
        np.hypot(pred[rows, :, 0] - true[rows, :, 0], pred[rows, :, 1] - true[rows, :, 1], out=distance[rows])
    if spacing_mm is not None:
        distance *= float(spacing_mm)
        return distance, "mm"
    if preds.spacing is not None:
        distance *= preds.spacing
        return distance, "mm"
    if preds.spacing_xy is not None:
        sx, sy = preds.spacing_xy[..., 0], preds.spacing_xy[..., 1]
        # Square pixels take the same path as spacing_mm, so both give the same numbers bit for bit.
        dx = preds.pred[..., 0] - preds.true[..., 0]
        dy = preds.pred[..., 1] - preds.true[..., 1]
        return np.where(sx == sy, distance * sx, np.hypot(dx * sx, dy * sy)), "mm"
    if wrist_width is not None:
        ia = _keypoint_index(preds.keypoints, wrist_width.a, src)
        ib = _keypoint_index(preds.keypoints, wrist_width.b, src)
        span = preds.true[:, ia, :] - preds.true[:, ib, :]
        width_px = np.hypot(span[:, 0], span[:, 1])
        unlabelled = np.isnan(width_px)
        if unlabelled.any():
            i = int(np.flatnonzero(unlabelled)[0])
            raise InputError(
                MSG_WRIST_UNLABELLED.format(src=src, image=preds.row_image[i], a=wrist_width.a, b=wrist_width.b)
            )
        huge = np.isinf(width_px)
        if huge.any():
            i = int(np.flatnonzero(huge)[0])
            raise InputError(MSG_NOT_FINITE.format(src=src, image=preds.row_image[i], run=preds.runs[preds.row_run[i]],
                                                   kp=f"{wrist_width.a}-{wrist_width.b} (the wrist width)"))
        zero = ~(width_px > 0)
        if zero.any():
            i = int(np.flatnonzero(zero)[0])
            raise InputError(
                MSG_WRIST_ZERO.format(src=src, image=preds.row_image[i], a=wrist_width.a, b=wrist_width.b)
            )
        distance *= (wrist_width.mm / width_px)[:, None]
        return distance, "mm"
    return distance, "px"


def scaled_coordinates(preds: Predictions, *, spacing_mm: float | None = None,
                       wrist_width: WristWidth | None = None, predicted: bool = True,
                       in_place: bool = False) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Predicted and true coordinates in the unit of :func:`radial_errors`.

    Call after :func:`radial_errors` has validated the scale options. The
    coordinates are multiplied by the same mm-per-pixel scale as the errors
    (per image and keypoint), so distances between keypoints are in mm when
    a scale is known, else in pixels.

    With ``predicted=False`` only the true coordinates are scaled (pred is
    None): all that the anatomy of an audit without measurements needs.

    With ``in_place=True`` the predictions' own coordinate arrays are scaled
    and returned, not copies: for a caller that made ``preds`` itself and
    reads its coordinates no more (at a million images a fresh copy of the
    ground truth is 0.6 GB of first-touched memory). The same numbers.

    Returns
    -------
    pred, true : ndarray, shape (N, K, 2), or (None, None)
        None when the predictions carry only ``error_mm``.
    """
    if preds.pred is None or preds.true is None or preds.error is not None:
        return None, None
    factor: float | np.ndarray
    if spacing_mm is not None:  # one number: the same products as a full array of it, without that array
        factor = float(spacing_mm)
    elif preds.spacing is not None:
        factor = preds.spacing[..., None]
    elif wrist_width is not None:
        ia = _keypoint_index(preds.keypoints, wrist_width.a, preds.source)
        ib = _keypoint_index(preds.keypoints, wrist_width.b, preds.source)
        span = preds.true[:, ia, :] - preds.true[:, ib, :]
        factor = (wrist_width.mm / np.hypot(span[:, 0], span[:, 1]))[:, None, None]
    else:  # pixels: no scale
        if in_place:
            return preds.pred if predicted else None, preds.true
        return preds.pred.copy() if predicted else None, preds.true.copy()
    if in_place:
        if predicted:
            np.multiply(preds.pred, factor, out=preds.pred)
        return preds.pred if predicted else None, np.multiply(preds.true, factor, out=preds.true)
    return preds.pred * factor if predicted else None, preds.true * factor
