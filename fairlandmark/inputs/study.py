"""A study: validated predictions and metadata, radial errors and group codes, ready for the kernels.

:func:`prepare_study` is the one place where inputs are read, checked and
encoded; everything downstream (the audit, significance, privacy) takes the
:class:`Study` it returns.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from fairlandmark.exceptions import InputError
from fairlandmark.inputs.families import family_index
from fairlandmark.inputs.groups import GroupCoding, encode_groups
from fairlandmark.inputs.radial_error import WristWidth, parse_wrist_width, radial_errors, scaled_coordinates
from fairlandmark.inputs.schema import Predictions, check_metadata, check_predictions
from fairlandmark.progress import progress_steps

__all__ = ["Study", "prepare_study", "attribute_list", "MSG_NO_ATTRIBUTES"]

MSG_NO_ATTRIBUTES = "attributes: give at least one attribute column of the metadata to audit"
MSG_ATTRIBUTES_TYPE = "«attributes» {value!r}: give a column name or a list of column names"
# The steps after the predictions' own (see check_predictions), as the progress line names them.
MSG_STEP_ERRORS = "Computing the radial errors"
MSG_STEP_METADATA = "Reading {src} and matching its images"
MSG_STEP_GROUPS = "Encoding the groups"


def attribute_list(attributes: str | Iterable[str] | None) -> list[str] | None:
    """``attributes`` as a list of column names: one string is one attribute (never its characters).

    Examples
    --------
    >>> attribute_list("sex"), attribute_list(("sex", "age")), attribute_list(None)
    (['sex'], ['sex', 'age'], None)
    """
    if attributes is None:
        return None
    if isinstance(attributes, str):
        return [attributes]
    try:
        names = list(attributes)
    except TypeError:
        raise InputError(MSG_ATTRIBUTES_TYPE.format(value=attributes)) from None
    if not all(isinstance(n, str) for n in names):
        raise InputError(MSG_ATTRIBUTES_TYPE.format(value=attributes))
    return names


@dataclass
class Study:
    """Everything the kernels need, validated and encoded.

    ``errors`` is (N, K) with one row per (run, image); NaN = missing prediction
    or no ground truth. ``labelled`` is None when every point has ground truth,
    else an (N, K) bool mask, False where the point is unlabelled: such a point
    is left out of the keypoint's numerators and denominators (see
    :mod:`fairlandmark.stats.kernel`).
    """

    errors: np.ndarray
    unit: str
    runs: np.ndarray
    keypoints: np.ndarray
    row_run: np.ndarray
    row_image: np.ndarray
    coding: GroupCoding
    families: dict[str, list[int]]
    notes: list[str] = field(default_factory=list)  # for the user, options still marked («name»)
    pred_xy: np.ndarray | None = None  # (N, K, 2) in ``unit`` (mm with a scale); None with error_mm input
    true_xy: np.ndarray | None = None
    labelled: np.ndarray | None = None
    # An integer per image id, one to one, as Predictions.row_image_code: replace it with row_image, or set None.
    row_image_code: np.ndarray | None = None

    @property
    def n_runs(self) -> int:
        return len(self.runs)

    @cached_property
    def first_image_rows(self) -> np.ndarray:
        """Each image's first row, in input order (an image tested in several runs counts once).

        Found by hashing the ids' integer codes where the study has them (else the ids themselves), not by
        sorting, and once per study: the image count of the audit document and the anatomy's images both
        come from it.
        """
        codes = self.row_image_code
        keys = (np.asarray(self.row_image, dtype=object) if codes is None or len(codes) != len(self.row_image)
                else np.asarray(codes))
        return np.flatnonzero(~pd.Series(keys).duplicated().to_numpy())



def prepare_study(predictions: Predictions | pd.DataFrame | str | os.PathLike[str],
                  metadata: pd.DataFrame | str | os.PathLike[str], *,
                  attributes: str | Sequence[str] | None = None, spacing_mm: float | None = None,
                  wrist_width: WristWidth | str | tuple[object, object, float] | None = None,
                  bins: Mapping[str, Sequence[float]] | None = None,
                  families: dict[str, Any] | Iterable[tuple[str, Iterable[object]]] | None = None,
                  intersection: bool = True, metadata_source: str | None = None,
                  spacing_from_dicom: str | os.PathLike[str] | None = None, dicom_match: str = "stem",
                  encoding: str | None = None, keep_pred_xy: bool = True, progress: object = False) -> Study:
    """Validate inputs and build a :class:`Study` (see :func:`audit`).

    ``keep_pred_xy=False`` leaves out the predicted coordinates (``Study.pred_xy`` is None): only the
    clinical-measurement audit reads them, and at a million images x 37 keypoints they take 0.6 GB.
    ``progress=True`` names each step on standard error while it runs (a million images take seconds to
    read and check); a ``rich.progress.Progress`` is drawn into instead.
    """
    with progress_steps(progress) as step:
        names = attribute_list(attributes)
        # Notes of the input checks (error_mm beside coordinates, unused metadata rows) travel as data in the
        # Study; the facade or the command line shows each once, spelled for its reader.
        notes: list[str] = []
        preds = (predictions if isinstance(predictions, Predictions)
                 else check_predictions(predictions, encoding=encoding, notes=notes, step=step))
        if spacing_from_dicom is not None:
            from fairlandmark.inputs.dicom import with_dicom_spacing

            others = [n for n, v in (("«spacing_mm»", spacing_mm), ("«wrist_width»", wrist_width)) if v is not None]
            preds = with_dicom_spacing(preds, spacing_from_dicom, match=dicom_match, other_scales=others, notes=notes)
        if isinstance(wrist_width, str):
            wrist_width = parse_wrist_width(wrist_width)
        elif wrist_width is not None and not isinstance(wrist_width, WristWidth):
            wrist_width = WristWidth(*wrist_width)
        step(MSG_STEP_ERRORS)
        errors, unit = radial_errors(preds, spacing_mm=spacing_mm, wrist_width=wrist_width)
        # Predictions validated here are this function's own: their coordinates are scaled where they lie.
        pred_xy, true_xy = scaled_coordinates(preds, spacing_mm=spacing_mm, wrist_width=wrist_width,
                                              predicted=keep_pred_xy, in_place=not isinstance(predictions, Predictions))
        src = metadata_source or (os.fspath(metadata) if isinstance(metadata, (str, os.PathLike)) else "metadata")
        step(MSG_STEP_METADATA.format(src=os.path.basename(src)))
        meta = check_metadata(metadata, image_ids=preds.row_image, attributes=names, source=metadata_source,
                              encoding=encoding, notes=notes)
        chosen = list(meta.columns) if names is None else names
        if not chosen:
            raise InputError(MSG_NO_ATTRIBUTES)
        step(MSG_STEP_GROUPS)
        coding = encode_groups(meta, preds.row_image, attributes=chosen, bins=bins, intersection=intersection,
                               source=str(src))
        fam = family_index(families or {}, preds.keypoints)
        return Study(errors=errors, unit=unit, runs=preds.runs, keypoints=preds.keypoints, row_run=preds.row_run,
                     row_image=preds.row_image, coding=coding, families=fam, notes=notes, pred_xy=pred_xy,
                     true_xy=true_xy, labelled=preds.labelled, row_image_code=preds.row_image_code)
