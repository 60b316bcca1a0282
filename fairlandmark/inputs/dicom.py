"""Pixel spacing (mm per pixel) from DICOM headers.

Medical images keep their scale in the header. :func:`read_dicom_spacing`
reads it with pydicom (the ``[dicom]`` extra), headers only
(``stop_before_pixels``), and :func:`with_dicom_spacing` puts it on validated
predictions. Rules (see docs/formats.md):

* ``PixelSpacing`` (0028,0030) first: the spacing in the patient, as
  ``[row spacing, column spacing]``, i.e. ``[y, x]``.
* Else ``ImagerPixelSpacing`` (0018,1164), at the detector plane, with a
  warning: for projection radiographs the object is magnified, so it is
  divided by ``EstimatedRadiographicMagnificationFactor`` (0018,1114) where
  present.
* Row and column spacing may differ (anisotropic pixels): x and y are scaled
  separately before the radial error.
* A file without a usable spacing is an error naming the file.

Images are matched to ``image_id`` by file stem (``001.dcm`` -> ``001``, the
default) or by ``SOPInstanceUID`` (``match="uid"``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fairlandmark.exceptions import InputError, note

if TYPE_CHECKING:
    from fairlandmark.inputs.schema import Predictions

__all__ = ["read_dicom_spacing", "with_dicom_spacing", "spacing_columns", "DICOM_MATCH"]

DICOM_MATCH = ("stem", "uid")
DICOM_EXTENSIONS = (".dcm", ".dicom", "")

MSG_NO_PYDICOM = "«spacing_from_dicom» needs pydicom: pip install 'fairlandmark[dicom]'"
MSG_NO_DIR = "«spacing_from_dicom» {path}: not a folder; give the folder holding the DICOM files"
MSG_MATCH = "«dicom_match» {value!r}: must be one of stem, uid"
MSG_UNREADABLE = "{path}: cannot be read as DICOM ({detail}); remove it from the folder or fix it"
MSG_NO_SPACING = ("{path}: has neither PixelSpacing nor ImagerPixelSpacing, so its mm per pixel is unknown; "
                  "add one, or give spacing another way («spacing_mm», a spacing_mm column)")
MSG_BAD_SPACING = ("{path}: {attribute} is {value!r}; it must be two positive numbers [row spacing, column spacing] "
                   "in mm")
MSG_BAD_MAGNIFICATION = ("{path}: EstimatedRadiographicMagnificationFactor is {value!r}; it must be a positive "
                         "number")
MSG_NO_UID = "{path}: has no SOPInstanceUID, so «dicom_match» uid cannot match it; use «dicom_match» stem"
MSG_DUP_KEY = "{a} and {b}: both match image_id {key!r} (by {match}); keep one file per image"
MSG_NOT_FOUND = ("«spacing_from_dicom» {folder}: {n} image(s) have no DICOM file matched by {match} "
                 "(e.g. {examples}); add the files or check «dicom_match»")
MSG_IMAGER = ("{n} DICOM file(s) have no PixelSpacing (e.g. {path}); their spacing is ImagerPixelSpacing, "
              "the detector plane{corrected}")
MSG_IMAGER_CORRECTED = ", divided by EstimatedRadiographicMagnificationFactor where present ({m} file(s))"
MSG_IMAGER_UNCORRECTED = "; without EstimatedRadiographicMagnificationFactor it overstates mm for magnified anatomy"
MSG_OTHER_SCALE = ("«spacing_from_dicom»: {src} already has a pixel-to-mm scale ({found}); give only one scale")

_TAGS = ["PixelSpacing", "ImagerPixelSpacing", "EstimatedRadiographicMagnificationFactor", "SOPInstanceUID"]


def _pair(value: Any, path: str, attribute: str) -> list[float]:
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        raise InputError(MSG_BAD_SPACING.format(path=path, attribute=attribute, value=str(value))) from None
    if len(numbers) != 2 or not all(np.isfinite(v) and v > 0 for v in numbers):
        raise InputError(MSG_BAD_SPACING.format(path=path, attribute=attribute, value=str(value)))
    return numbers  # [row (y), column (x)]


def _candidates(folder: str, match: str, wanted: set[str] | None) -> list[str]:
    """DICOM files to read: every file (uid), or only those whose stem is a wanted id (stem)."""
    paths = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in DICOM_EXTENSIONS or name.startswith("."):
                continue
            if match == "stem" and wanted is not None and stem not in wanted:
                continue
            paths.append(os.path.join(root, name))
    return paths


def read_dicom_spacing(folder: str | os.PathLike, *, match: str = "stem",
                       image_ids: Iterable[str] | None = None, notes: list[str] | None = None) -> pd.DataFrame:
    """mm per pixel along x and y of each DICOM file in a folder (searched recursively).

    Parameters
    ----------
    folder : str or path-like
        Folder of DICOM files (``.dcm``, ``.dicom`` or no extension).
    match : {"stem", "uid"}, default "stem"
        Key of each file: its name without extension, or its ``SOPInstanceUID``.
    image_ids : iterable of str, optional
        Ids that must be found (an error lists those that are not). With
        ``match="stem"`` only their files are read.
    notes : list of str, optional
        Where to append notes for the user (spacing taken from
        ImagerPixelSpacing); without it they are warnings.

    Returns
    -------
    pandas.DataFrame
        ``image_id, spacing_x_mm, spacing_y_mm, attribute, path``; ``attribute``
        says which header gave the spacing (``PixelSpacing`` or
        ``ImagerPixelSpacing``).

    Raises
    ------
    InputError
        For an unreadable file, a missing or unusable spacing, two files with
        one key, or a wanted id with no file.

    Examples
    --------
    >>> import os, tempfile                                       # doctest: +SKIP
    >>> read_dicom_spacing("scans/", image_ids=["001"])           # doctest: +SKIP
      image_id  spacing_x_mm  spacing_y_mm     attribute          path
    0      001           0.1           0.1  PixelSpacing  scans/001.dcm
    """
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:
        raise InputError(MSG_NO_PYDICOM) from None
    if match not in DICOM_MATCH:
        raise InputError(MSG_MATCH.format(value=match))
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise InputError(MSG_NO_DIR.format(path=folder))
    wanted = None if image_ids is None else set(map(str, image_ids))
    rows, imager, corrected = [], [], 0
    seen: dict[str, str] = {}
    for path in _candidates(folder, match, wanted):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_TAGS)
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            raise InputError(MSG_UNREADABLE.format(path=path, detail=str(exc).splitlines()[0] if str(exc) else
                                                   type(exc).__name__)) from None
        if match == "uid":
            uid = ds.get("SOPInstanceUID")
            if not uid:
                raise InputError(MSG_NO_UID.format(path=path))
            key = str(uid)
            if wanted is not None and key not in wanted:
                continue
        else:
            key = os.path.splitext(os.path.basename(path))[0]
        if key in seen:
            raise InputError(MSG_DUP_KEY.format(a=seen[key], b=path, key=key, match=match))
        seen[key] = path
        if ds.get("PixelSpacing") is not None:
            row_mm, col_mm = _pair(ds.PixelSpacing, path, "PixelSpacing")
            attribute = "PixelSpacing"
        elif ds.get("ImagerPixelSpacing") is not None:
            row_mm, col_mm = _pair(ds.ImagerPixelSpacing, path, "ImagerPixelSpacing")
            attribute = "ImagerPixelSpacing"
            imager.append(path)
            factor = ds.get("EstimatedRadiographicMagnificationFactor")
            if factor is not None and str(factor).strip() != "":
                try:
                    m = float(factor)
                except (TypeError, ValueError):
                    m = float("nan")
                if not (np.isfinite(m) and m > 0):
                    raise InputError(MSG_BAD_MAGNIFICATION.format(path=path, value=str(factor)))
                row_mm, col_mm = row_mm / m, col_mm / m  # detector plane -> object plane
                corrected += 1
        else:
            raise InputError(MSG_NO_SPACING.format(path=path))
        rows.append((key, col_mm, row_mm, attribute, path))
    if wanted is not None:
        absent = sorted(wanted - set(seen))
        if absent:
            raise InputError(MSG_NOT_FOUND.format(folder=folder, n=len(absent), match=match,
                                                  examples=", ".join(map(repr, absent[:3]))))
    if imager:
        tail = MSG_IMAGER_CORRECTED.format(m=corrected) if corrected else MSG_IMAGER_UNCORRECTED
        note(MSG_IMAGER.format(n=len(imager), path=imager[0], corrected=tail), notes)
    return pd.DataFrame(rows, columns=["image_id", "spacing_x_mm", "spacing_y_mm", "attribute", "path"])


def spacing_columns(image_ids: Iterable[str], table: pd.DataFrame) -> dict[str, np.ndarray]:
    """Spacing columns for rows with the given image ids, from :func:`read_dicom_spacing`'s table.

    Returns ``{"spacing_mm": ...}`` when every matched image has square
    pixels, else ``{"spacing_x_mm": ..., "spacing_y_mm": ...}``: columns for
    the long format.
    """
    index = table.set_index("image_id")
    where = index.index.get_indexer(pd.Index(np.asarray(image_ids, dtype=object).astype(str)))
    sx = index["spacing_x_mm"].to_numpy(dtype=float)[where]
    sy = index["spacing_y_mm"].to_numpy(dtype=float)[where]
    if np.array_equal(sx, sy):
        return {"spacing_mm": sx}
    return {"spacing_x_mm": sx, "spacing_y_mm": sy}


def with_dicom_spacing(preds: Predictions, folder: str | os.PathLike, *, match: str = "stem",
                       other_scales: Sequence[str] = (), notes: list[str] | None = None) -> Predictions:
    """Validated predictions with per-row x/y spacing from DICOM headers.

    Parameters
    ----------
    preds : fairlandmark.inputs.schema.Predictions
    folder : str or path-like
        See :func:`read_dicom_spacing`.
    match : {"stem", "uid"}
    other_scales : sequence of str
        Names of other scales the caller was given (``--spacing-mm``, ...);
        any, or a spacing column in the predictions, is an error.
    notes : list of str, optional
        See :func:`read_dicom_spacing`.

    Returns
    -------
    Predictions
        A copy with ``spacing_xy`` of shape (N, K, 2), (x, y) mm per pixel.
    """
    found = list(other_scales)
    if preds.spacing is not None:
        found.append("a spacing_mm column")
    if getattr(preds, "spacing_xy", None) is not None:
        found.append("spacing_x_mm/spacing_y_mm columns")
    if preds.error is not None:
        found.append("an error_mm column")
    if found:
        raise InputError(MSG_OTHER_SCALE.format(src=preds.source, found=" and ".join(found)))
    images = pd.unique(np.asarray(preds.row_image, dtype=object))
    table = read_dicom_spacing(folder, match=match, image_ids=images, notes=notes)
    index = pd.Index(table["image_id"])
    where = index.get_indexer(pd.Index(np.asarray(preds.row_image, dtype=object).astype(str)))
    xy = table[["spacing_x_mm", "spacing_y_mm"]].to_numpy(dtype=float)[where]  # (N, 2)
    k = len(preds.keypoints)
    return dataclasses.replace(preds, spacing_xy=np.repeat(xy[:, None, :], k, axis=1))
