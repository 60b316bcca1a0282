"""A study: validated predictions and metadata, radial errors and group codes, ready for the kernels.

:func:`prepare_study` is the one place where inputs are read, checked and
encoded; everything downstream (the audit, significance, privacy) takes the
:class:`Study` it returns.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fairlandmark.exceptions import FairlandmarkWarning, InputError
from fairlandmark.inputs.families import family_index
from fairlandmark.inputs.groups import GroupCoding, encode_groups
from fairlandmark.inputs.radial_error import WristWidth, parse_wrist_width, radial_errors
from fairlandmark.inputs.schema import Predictions, check_metadata, check_predictions

__all__ = ["Study", "prepare_study", "MSG_NO_ATTRIBUTES"]

MSG_NO_ATTRIBUTES = "attributes: give at least one attribute column of the metadata to audit"


@dataclass
class Study:
    """Everything the kernels need, validated and encoded.

    ``errors`` is (N, K) with one row per (run, image); NaN = missing prediction.
    """

    errors: np.ndarray
    unit: str
    runs: np.ndarray
    keypoints: np.ndarray
    row_run: np.ndarray
    row_image: np.ndarray
    coding: GroupCoding
    families: dict[str, list[int]]
    warnings: list[str] = field(default_factory=list)

    @property
    def n_runs(self) -> int:
        return len(self.runs)



def prepare_study(predictions: Predictions | pd.DataFrame | str | os.PathLike[str],
                  metadata: pd.DataFrame | str | os.PathLike[str], *,
                  attributes: Sequence[str] | None = None, spacing_mm: float | None = None,
                  wrist_width: WristWidth | str | tuple[object, object, float] | None = None,
                  bins: Mapping[str, Sequence[float]] | None = None,
                  families: dict[str, Any] | Iterable[tuple[str, Iterable[object]]] | None = None,
                  intersection: bool = True, metadata_source: str | None = None) -> Study:
    """Validate inputs and build a :class:`Study` (see :func:`audit`)."""
    # Input warnings (error_mm beside coordinates, unused metadata rows) become the result's warnings.
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always", FairlandmarkWarning)
        preds = predictions if isinstance(predictions, Predictions) else check_predictions(predictions)
        if isinstance(wrist_width, str):
            wrist_width = parse_wrist_width(wrist_width)
        elif wrist_width is not None and not isinstance(wrist_width, WristWidth):
            wrist_width = WristWidth(*wrist_width)
        errors, unit = radial_errors(preds, spacing_mm=spacing_mm, wrist_width=wrist_width)
        meta = check_metadata(metadata, image_ids=preds.row_image, attributes=attributes, source=metadata_source)
    caught = [str(w.message) for w in record if issubclass(w.category, FairlandmarkWarning)]
    attributes = list(meta.columns) if attributes is None else list(attributes)
    if not attributes:
        raise InputError(MSG_NO_ATTRIBUTES)
    src = metadata_source or (os.fspath(metadata) if isinstance(metadata, (str, os.PathLike)) else "metadata")
    coding = encode_groups(meta, preds.row_image, attributes=attributes, bins=bins, intersection=intersection,
                           source=str(src))
    fam = family_index(families or {}, preds.keypoints)
    return Study(errors=errors, unit=unit, runs=preds.runs, keypoints=preds.keypoints, row_run=preds.row_run,
                 row_image=preds.row_image, coding=coding, families=fam, warnings=caught)
