"""landmarker outputs to original-image points, spacing and an audit.

landmarker (a PyTorch toolkit for anatomical landmark detection) predicts on
images that were padded to the network's aspect ratio and resized to ``dim``,
and keeps beside each batch what is needed to go back:

* landmarks of shape ``(N, C, 2)`` in **(y, x)** order, in pixels of the
  resized, padded image;
* ``dim``: the network's image size ``(H, W)``;
* ``dim_orig``: each original image's size ``(H, W)``, shape ``(N, 2)``;
* ``padding``: the padding added on *each* side of the original image,
  ``(pad_y, pad_x)`` in original pixels, shape ``(N, 2)``;
* ``pixel_spacing``: mm per pixel ``(row, column)`` = ``(y, x)``, shape
  ``(N, 2)``.

A point ``p`` (resized, padded) is at ``p * (dim_orig + 2 * padding) / dim -
padding`` in the original image, and at that times ``pixel_spacing`` in mm;
landmarker's own ``point_error`` is the Euclidean distance of those mm
points, and its ``sdr`` the share (in %) of distances ``<= radius`` over all
images and landmarks. :func:`to_original` applies the same mapping and
returns (x, y) points in original pixels with (x, y) spacing, which
:func:`fairlandmark.audit_arrays` audits; :func:`audit_landmarker` does both.

Nothing here imports torch: tensors are turned into numpy arrays through
their own ``detach().cpu().numpy()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fairlandmark.exceptions import InputError

if TYPE_CHECKING:
    from fairlandmark.audit import AuditResult

__all__ = ["OriginalPoints", "to_original", "audit_landmarker"]

MSG_SHAPE = "{name}: expected shape (N, C, 2) in (y, x) order, got {shape}"
MSG_MATCH = "{name}: shape {shape} does not match pred_landmarks {expected}"
MSG_PER_IMAGE = "{name}: expected 2 values (y, x) or shape ({n}, 2), got shape {shape}"
MSG_DIM_PAIR = "dim and dim_orig: give both (the network's size and each original size) or neither"
MSG_DIM = "dim: expected the network's image size (H, W), got {value!r}"
MSG_POSITIVE = "{name}: every value must be > 0, found {value!r}"
MSG_NEGATIVE_PAD = "padding: every value must be >= 0, found {value!r}"


@dataclass(frozen=True)
class OriginalPoints:
    """Points in original-image pixels, (x, y) order, with their mm per pixel.

    Attributes
    ----------
    pred, true : ndarray, shape (N, C, 2)
        (x, y) in pixels of the original image; NaN kept as given.
    spacing_xy : ndarray, shape (N, 2) or None
        mm per pixel along x and y; None when no ``pixel_spacing`` was given.
    """

    pred: np.ndarray
    true: np.ndarray
    spacing_xy: np.ndarray | None


def _numpy(value: Any) -> np.ndarray:
    """A float numpy array from numpy data or a torch tensor (without importing torch)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=float)


def _per_image(value: Any, name: str, n: int) -> np.ndarray:
    arr = _numpy(value)
    if arr.ndim == 0:
        arr = np.full(2, float(arr))
    if arr.shape == (2,):
        arr = np.broadcast_to(arr, (n, 2))
    if arr.shape != (n, 2):
        raise InputError(MSG_PER_IMAGE.format(name=name, n=n, shape=arr.shape))
    return arr


def to_original(pred_landmarks: Any, true_landmarks: Any, *, dim: Any = None, dim_orig: Any = None,
                padding: Any = None, pixel_spacing: Any = None) -> OriginalPoints:
    """Map landmarker's (y, x) points on resized, padded images to original (x, y) pixels.

    Parameters
    ----------
    pred_landmarks, true_landmarks : array or tensor, shape (N, C, 2)
        (y, x) points as landmarker returns them; NaN = missing.
    dim : (int, int), optional
        Network image size (H, W). With ``dim_orig``, points are mapped back
        from the resized, padded image; without both, they are taken as
        original pixels already.
    dim_orig : array or tensor, shape (N, 2) or (2,), optional
        Original image size (H, W).
    padding : array or tensor, shape (N, 2) or (2,), optional
        Padding on each side, (y, x), in original pixels; default none.
    pixel_spacing : array, tensor or float, shape (N, 2) or (2,), optional
        mm per pixel, (row, column) = (y, x), as landmarker and DICOM
        ``PixelSpacing`` give it.

    Returns
    -------
    OriginalPoints

    Examples
    --------
    A 1000 x 800 (H x W) radiograph padded by 100 px left and right to a
    square and resized to 256 x 256: the network's centre (128, 128) is the
    original (x, y) = (400, 500).

    >>> pts = to_original([[[128.0, 128.0]]], [[[128.0, 128.0]]], dim=(256, 256), dim_orig=[1000, 800],
    ...                   padding=[0, 100], pixel_spacing=[0.1, 0.2])
    >>> pts.pred.tolist(), pts.spacing_xy.tolist()
    ([[[400.0, 500.0]]], [[0.2, 0.1]])
    """
    pred, true = _numpy(pred_landmarks), _numpy(true_landmarks)
    if pred.ndim != 3 or pred.shape[2] != 2:
        raise InputError(MSG_SHAPE.format(name="pred_landmarks", shape=pred.shape))
    if true.shape != pred.shape:
        raise InputError(MSG_MATCH.format(name="true_landmarks", shape=true.shape, expected=pred.shape))
    n = pred.shape[0]
    if (dim is None) != (dim_orig is None):
        raise InputError(MSG_DIM_PAIR)
    if dim is not None:
        size = _numpy(dim).ravel()
        if size.shape != (2,) or not (size > 0).all():
            raise InputError(MSG_DIM.format(value=dim))
        orig = _per_image(dim_orig, "dim_orig", n)
        if not (orig > 0).all():
            raise InputError(MSG_POSITIVE.format(name="dim_orig", value=orig[~(orig > 0)][0]))
        pad = np.zeros((n, 2)) if padding is None else _per_image(padding, "padding", n)
        if not (pad >= 0).all():
            raise InputError(MSG_NEGATIVE_PAD.format(value=pad[~(pad >= 0)][0]))
        scale = ((orig + 2.0 * pad) / size)[:, None, :]  # (N, 1, 2), (y, x)
        pred = pred * scale - pad[:, None, :]
        true = true * scale - pad[:, None, :]
    spacing = None
    if pixel_spacing is not None:
        spacing = _per_image(pixel_spacing, "pixel_spacing", n)
        if not (spacing > 0).all():
            raise InputError(MSG_POSITIVE.format(name="pixel_spacing", value=spacing[~(spacing > 0)][0]))
        spacing = np.ascontiguousarray(spacing[:, ::-1])
    return OriginalPoints(pred=np.ascontiguousarray(pred[..., ::-1]), true=np.ascontiguousarray(true[..., ::-1]),
                          spacing_xy=spacing)


def audit_landmarker(pred_landmarks: Any, true_landmarks: Any, groups: Mapping[str, Any], *, dim: Any = None,
                     dim_orig: Any = None, padding: Any = None, pixel_spacing: Any = None,
                     **options: Any) -> AuditResult:
    """Audit landmarker's outputs: map them back (see :func:`to_original`), then :func:`fairlandmark.audit_arrays`.

    Parameters
    ----------
    pred_landmarks, true_landmarks, dim, dim_orig, padding, pixel_spacing
        As landmarker returns them; see :func:`to_original`.
    groups : dict of str -> array-like, shape (N,)
        One sensitive attribute per entry.
    **options
        Keyword options of :func:`fairlandmark.audit_arrays` (``thresholds_mm``,
        ``keypoints``, ``image_ids``, ``runs``, ``significance``, ...).

    Returns
    -------
    fairlandmark.AuditResult
        Errors in mm when ``pixel_spacing`` is given, else in original pixels.

    Examples
    --------
    >>> import numpy as np
    >>> true = np.full((4, 1, 2), 128.0); pred = true.copy(); pred[1, 0, 0] += 7.68  # y: 30 px = 3 mm
    >>> res = audit_landmarker(pred, true, {"sex": ["F", "F", "M", "M"]}, dim=(256, 256),
    ...                        dim_orig=[1000, 800], padding=[0, 100], pixel_spacing=[0.1, 0.1],
    ...                        significance=False, min_group_size=1)
    >>> float(res.per_keypoint["dp"].iloc[0])
    0.5
    """
    from fairlandmark.audit import audit_arrays

    pts = to_original(pred_landmarks, true_landmarks, dim=dim, dim_orig=dim_orig, padding=padding,
                      pixel_spacing=pixel_spacing)
    return audit_arrays(pts.pred, pts.true, groups, spacing_mm=pts.spacing_xy, **options)
