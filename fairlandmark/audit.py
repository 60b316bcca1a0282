"""The audit: from validated inputs to per-keypoint fairness numbers.

:func:`audit` (DataFrames or files) and :func:`audit_arrays` (numpy arrays)
both prepare a :class:`Study` and hand it to :func:`run_audit`, which sums the
study's values per run and cell once for the observed numbers (in row blocks,
:func:`fairlandmark.stats.kernel.label_sums`) and, optionally, calls the
significance layer. :class:`AuditResult` is a thin, cached facade that turns
the arrays into tidy DataFrames and the versioned JSON document.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from fairlandmark.version import __version__
from fairlandmark.exceptions import FairlandmarkWarning, InputError, spell_options
from fairlandmark.files import dump_json, json_safe
from fairlandmark.formatting import threshold_key
from fairlandmark.progress import progress_steps
from fairlandmark.stats.kernel import (mean_std_over_runs, aggregate, label_sums, labelled_from_sums,
                                       mre_from_sums, parity_gap, sdr_from_sums, single_threaded_blas,
                                       without_thin_groups)
from fairlandmark.inputs.groups import GroupCoding
from fairlandmark.inputs.radial_error import WristWidth
from fairlandmark.inputs.schema import Predictions
from fairlandmark.inputs.study import Study, prepare_study
from fairlandmark.stats.intervals import reported_pair
from fairlandmark.stats.kernel import ValueLayout

if TYPE_CHECKING:
    from fairlandmark.stats.adjusted import AdjustedResult, Covariates
    from fairlandmark.stats.curves import CurveResult
    from fairlandmark.stats.measurements import MeasurementAudit
    from fairlandmark.stats.privacy import PrivacyResult
    from fairlandmark.stats.significance import ImageStrata, SignificanceOptions, SignificanceResult

__all__ = ["audit", "audit_arrays", "AuditResult", "Study", "SCHEMA_VERSION", "prepare_study", "run_audit", "emit_notes"]
# Study and prepare_study live in fairlandmark.inputs.study; re-exported here as part of the facade.

SCHEMA_VERSION = "1.0"

MSG_THRESHOLDS = "thresholds_mm: give one or more positive numbers, got {value!r}"
MSG_THRESHOLD_TWICE = ("thresholds_mm: {a:g} and {b!r} are both named {key!r} in the outputs; "
                       "give each threshold once")
MSG_MIN_GROUP = "min_group_size: must be an integer >= 1, got {value!r}"
MSG_ARRAY_SHAPE = "{name}: expected an array of shape (N, K, 2), got shape {shape}"
MSG_ARRAY_BOOL = "{name}: holds True/False values, not coordinates; give numbers in pixels"
MSG_ARRAY_MATCH = "{name}: shape {shape} does not match predictions {expected}"
MSG_COORD_ORDER = "coord_order: must be 'xy' or 'yx' (landmarker and row-major arrays), got {value!r}"
MSG_SPACING_SHAPE = ("spacing_mm: expected a number, shape (N,) or shape (N, 2) (per-axis, in coord_order), "
                     "got shape {shape} for N = {n}")
MSG_GROUP_LENGTH = "groups[{name!r}]: {n} values for {n_images} images; give one value per image"
MSG_SMALL_GROUP = (
    "attribute '{attribute}': group '{group}' has {n} image(s) in run {run}, below «min_group_size»={min}; "
    "it is reported but left out of DP"
)
MSG_SMALL_GROUPS = (
    "attribute '{attribute}': {k} group(s) fall below «min_group_size»={min} in {cases} (group, run) case(s), "
    "e.g. group '{group}' has {n} image(s) in run {run}; they are reported but left out of DP where small"
)
MSG_BIN_HINT = (
    "attribute '{attribute}' looks numeric ({n} values, {k} of them in small groups): bin it into a few ranges, "
    "e.g. bins={{'{attribute}': [{cut}]}} in Python or --bin {attribute}={cut} on the command line"
)
MSG_SMALL_STRATA = (
    "runs share images in overlapping sets (e.g. cross-validation repeats): labels are permuted and resampled "
    "only between images seen in the same runs, {s} such strata with a median of {m:g} image(s), so the "
    "significance tests have little room to move and little power; audit runs with disjoint test images "
    "(hold-outs), or fewer repeats"
)
SMALL_STRATUM = 10  # median images per stratum below which the permutation test is noted as weak
# The point estimates' steps, as the progress line names them (reading and checking: inputs.schema, inputs.study).
MSG_STEP_SUMS = "Summing hits and errors per group ({n_rows:,} rows)"  # short: the line fits 80 columns
MSG_STEP_CURVES = "Computing the error curves"
MSG_MISSING_PRED = "{n} missing prediction(s) ({share:.1%}) count as misses at every threshold and are left out of MRE"
MSG_THIN_KEYPOINT = (
    "attribute '{attribute}': {n} (group, keypoint) pair(s) have fewer than «min_group_size»={min} images with ground "
    "truth (e.g. group '{group}', keypoint {kp}: {n_lab} in run {run}); they are reported but left out of that "
    "keypoint's DP"
)
MSG_UNLABELLED = ("{n} (image, keypoint) point(s) ({share:.1%}) have no ground truth (empty true_x/true_y, COCO v=0); "
                  "they are left out of that keypoint's SDR and MRE, never counted as misses")


# Rows per step of the per-keypoint sums (temporaries of a few MB at K = 37).
_SUM_BLOCK_ROWS = 1 << 12


def _check_options(thresholds_mm: float | Sequence[float], min_group_size: int) -> list[float]:
    try:
        thresholds = [float(t) for t in np.atleast_1d(thresholds_mm)]
    except (TypeError, ValueError):
        raise InputError(MSG_THRESHOLDS.format(value=thresholds_mm)) from None
    if not thresholds or not all(np.isfinite(t) and t > 0 for t in thresholds):
        raise InputError(MSG_THRESHOLDS.format(value=thresholds_mm))
    keys = [f"{t:g}" for t in thresholds]  # how outputs name a threshold (sdr_2, "2" in the JSON)
    for i, key in enumerate(keys):
        if key in keys[:i]:
            raise InputError(MSG_THRESHOLD_TWICE.format(a=thresholds[keys.index(key)], b=thresholds[i], key=key))
    if isinstance(min_group_size, bool) or not isinstance(min_group_size, (int, np.integer)) or min_group_size < 1:
        raise InputError(MSG_MIN_GROUP.format(value=min_group_size))
    return thresholds


@dataclass
class Observed:
    """Observed per-run arrays for one attribute (G groups, K keypoints, T thresholds)."""

    sdr: np.ndarray  # (T, R, G, K)
    mre: np.ndarray  # (R, G, K)
    n_images: np.ndarray  # (R, G)
    n_missing: np.ndarray  # (R, G, K)
    n_labelled: np.ndarray  # (R, G, K) images with ground truth for the keypoint
    valid: np.ndarray  # (R, G)
    dp: np.ndarray  # (R, K) primary threshold
    mre_gap: np.ndarray  # (R, K)
    sdr_dp: np.ndarray | None = None  # (R, G, K) primary SDR with NaN where a group is out of a keypoint's DP


def observe(layout: ValueLayout, coding: GroupCoding, attribute: str, min_group_size: int,
            cell_sums: tuple[np.ndarray, np.ndarray]) -> Observed:
    """Observed metrics of one attribute from the cells' ``(sums, counts)`` (one assignment; see
    :func:`fairlandmark.stats.kernel.label_sums`), the same for every attribute.
    """
    sums, counts = cell_sums
    gsums, gcounts = aggregate(sums[0], counts[0], coding.aggregation(attribute))
    sdr = np.stack([sdr_from_sums(gsums, gcounts, layout, t) for t in range(len(layout.thresholds))])
    mre = mre_from_sums(gsums, layout)
    valid = gcounts >= min_group_size
    # With unlabelled points a group also needs min_group_size labelled images of a keypoint for its DP.
    sdr_dp = without_thin_groups(sdr[0], gsums, layout, min_group_size)
    dp, _, _ = parity_gap(sdr_dp, valid)
    gap, _, _ = parity_gap(without_thin_groups(mre, gsums, layout, min_group_size), valid)
    n_labelled = np.broadcast_to(labelled_from_sums(gsums, gcounts, layout), gsums[..., layout.present].shape)
    n_missing = n_labelled - gsums[..., layout.present]
    return Observed(sdr=sdr, mre=mre, n_images=gcounts, n_missing=n_missing, n_labelled=n_labelled, valid=valid,
                    dp=dp, mre_gap=gap, sdr_dp=sdr_dp)


def _numeric(labels: list[str]) -> np.ndarray | None:
    try:
        return np.array([float(x) for x in labels])
    except (TypeError, ValueError):
        return None


def small_group_notes(study: Study, observed: dict[str, Observed], min_group_size: int) -> list[str]:
    """Warnings for groups too small to take part in DP: one line per attribute, and a hint to bin numbers.

    A single small (group, run) case is named in full; several are counted in
    one line, so an unbinned numeric attribute (one group per value) does not
    flood the output. A base attribute whose group labels are all numbers and
    that has several small groups gets a hint to bin it, with the median as
    an example cut.
    """
    notes = []
    for a, obs in observed.items():
        runs, groups = np.nonzero(~obs.valid)
        if len(runs) == 0:
            continue
        labels = study.coding.groups[a]
        r, g = runs[0], groups[0]
        fields = dict(attribute=a, group=labels[g], n=int(obs.n_images[r, g]), run=study.runs[r], min=min_group_size)
        if len(runs) == 1:
            notes.append(MSG_SMALL_GROUP.format(**fields))
        else:
            notes.append(MSG_SMALL_GROUPS.format(k=len(set(groups.tolist())), cases=len(runs), **fields))
        values = _numeric(labels) if a in study.coding.base_codes else None
        n_small = len(set(groups.tolist()))
        if values is not None and n_small >= 2:
            notes.append(MSG_BIN_HINT.format(attribute=a, n=len(labels), k=n_small, cut=f"{np.median(values):g}"))
    return notes


def small_strata_notes(strata: ImageStrata) -> list[str]:
    """A note when runs share images so unevenly that the strata of exchangeable images are small.

    Examples
    --------
    >>> import numpy as np
    >>> from fairlandmark.stats.significance import image_strata
    >>> small_strata_notes(image_strata([np.array(["a", "b"]), np.array(["c", "d"])]))  # disjoint hold-outs
    []
    >>> len(small_strata_notes(image_strata([np.array(["a", "b", "c"]), np.array(["b", "c", "d"])])))
    1
    """
    if strata.by_run or len(strata.sizes) < 2:
        return []
    median = float(np.median(strata.sizes))
    return [MSG_SMALL_STRATA.format(s=len(strata.sizes), m=median)] if median < SMALL_STRATUM else []


def run_audit(study: Study, *, thresholds_mm: float | Sequence[float] = (2.0,), min_group_size: int = 10,
              significance: SignificanceOptions | Mapping[str, Any] | bool | None = True,
              privacy: bool | Mapping[str, Any] | None = None, adjust: Covariates | None = None,
              measurements: Any = None, curves: bool | Mapping[str, Any] = True,
              emit_warnings: bool = True, progress: object = False) -> AuditResult:
    """Compute an :class:`AuditResult` for a prepared :class:`Study`.

    ``adjust`` is a :class:`fairlandmark.stats.adjusted.Covariates` (from
    :func:`fairlandmark.stats.adjusted.check_covariates`): adjusted gaps land in
    ``AuditResult.adjusted``, the per-keypoint table and the JSON.
    ``measurements`` (a preset name, TOML path or definitions, see
    :mod:`fairlandmark.inputs.measurements`) adds the clinical-measurement
    audit; ``curves`` (True, False or a dict with ``phi``) the error curves
    and, with significance, their curve-gap test.
    The notes for the user (the study's input notes and the audit's own) are
    ``AuditResult.warnings``; with ``emit_warnings`` (default) each is also
    issued once as a :class:`fairlandmark.exceptions.FairlandmarkWarning`. The
    command line turns that off and prints them itself. ``progress=True`` names the steps without a bar of
    their own (the group sums, the error curves without significance) on standard error while they run.
    """
    if measurements is not None:
        from fairlandmark.inputs.measurements import load_measurements

        measurements = load_measurements(measurements)  # bad definitions fail before any work
    thresholds = _check_options(thresholds_mm, min_group_size)
    # The cells' sums, once for all attributes, built in row blocks (no value matrix of the whole study).
    with progress_steps(progress) as step:  # closed before the significance bars start: one display at a time
        step(MSG_STEP_SUMS.format(n_rows=study.errors.shape[0]))
        with single_threaded_blas():  # small products: a second BLAS thread only spins against the first
            sums, counts, layout = label_sums(study.errors, thresholds, study.row_run, study.n_runs,
                                              study.coding.cell, study.coding.n_cells, labelled=study.labelled)
        observed = {a: observe(layout, study.coding, a, min_group_size, (sums, counts))
                    for a in study.coding.attributes}

    notes = list(study.notes) + small_group_notes(study, observed, min_group_size)
    for a, obs in observed.items():
        thin = obs.valid[..., None] & (obs.n_labelled < min_group_size)
        if thin.any():
            r, g, k = (int(i[0]) for i in np.nonzero(thin))
            notes.append(MSG_THIN_KEYPOINT.format(attribute=a, n=int(thin.any(axis=0).sum()), min=min_group_size,
                                                  group=study.coding.groups[a][g], kp=study.keypoints[k],
                                                  n_lab=int(obs.n_labelled[r, g, k]), run=study.runs[r]))
    n_unlabelled = 0 if study.labelled is None else int((~study.labelled).sum())
    n_missing = int(np.isnan(study.errors).sum()) - n_unlabelled
    if n_missing:
        notes.append(MSG_MISSING_PRED.format(n=n_missing, share=n_missing / (study.errors.size - n_unlabelled)))
    if n_unlabelled:
        notes.append(MSG_UNLABELLED.format(n=n_unlabelled, share=n_unlabelled / study.errors.size))

    sig = None
    if significance is not None and significance is not False:
        from fairlandmark.stats.significance import run_significance

        curve_test = None
        if curves:
            from fairlandmark.stats.curves import error_curves

            def curve_test(options: Any, drawn: np.ndarray | None, queue: Any, stop: Any) -> Any:
                # The error-curve test on the DP test's permutations, computed alongside the bootstrap.
                return error_curves(study, primary=thresholds[0], min_group_size=min_group_size,
                                    valid={a: o.valid for a, o in observed.items()}, significance=options,
                                    shared_permutations=drawn, stop=stop, queue=queue,
                                    **({} if curves is True else dict(curves)))

        sig = run_significance(study, thresholds=thresholds, min_group_size=min_group_size, observed=observed,
                               options=significance, alongside=curve_test)
        notes += small_strata_notes(sig.strata)
    result = AuditResult(study=study, thresholds=thresholds, min_group_size=min_group_size, observed=observed,
                         significance=sig, notes=notes)
    if adjust is not None:
        _add_adjusted(result, adjust, significance)
    if curves and sig is not None:
        result.curves = sig.alongside
    elif curves:
        from fairlandmark.stats.curves import error_curves

        with progress_steps(progress) as step:
            step(MSG_STEP_CURVES)
            result.curves = error_curves(study, primary=thresholds[0], min_group_size=min_group_size,
                                         valid={a: o.valid for a, o in observed.items()},
                                         **({} if curves is True else dict(curves)))
    if measurements is not None:
        from fairlandmark.stats.measurements import audit_measurements

        result.measurements = audit_measurements(study, measurements, min_group_size=min_group_size,
                                                 significance=sig.options if sig is not None else None)
    if privacy:
        from fairlandmark.stats.privacy import audit_privacy

        result.add_privacy(audit_privacy(study, emit_warnings=False, **({} if privacy is True else dict(privacy))))
    if emit_warnings:
        emit_notes(result.notes, stacklevel=3)  # at run_audit's caller
    return result


def emit_notes(notes: Iterable[str], *, stacklevel: int = 2) -> None:
    """Issue each note once as a :class:`FairlandmarkWarning`, ``stacklevel`` counted from the caller."""
    for text in notes:
        warnings.warn(FairlandmarkWarning(text), stacklevel=stacklevel + 1)


def _add_adjusted(result: AuditResult, covariates: Covariates,
                  significance: SignificanceOptions | Mapping[str, Any] | bool | None) -> None:
    """Fit the covariate-adjusted models; same alpha and correction as the permutation tests."""
    from fairlandmark.stats.adjusted import adjusted_disparities
    from fairlandmark.stats.significance import SignificanceOptions

    options = result.significance.options if result.significance is not None else None
    if options is None and significance not in (None, False):
        options = SignificanceOptions.coerce(significance)
    alpha = options.alpha if options is not None else 0.05
    correction = options.correction if options is not None else "bh"
    ci = options.ci if options is not None else 0.95
    pairs = {a: result._pair(a)[:2] for a in result.attributes}
    valid = {a: result.observed[a].valid for a in result.attributes}
    result.adjusted = adjusted_disparities(result.study, covariates, threshold=result.thresholds[0], alpha=alpha,
                                           correction=correction, ci=ci, valid=valid, pairs=pairs)
    result.notes.extend(result.adjusted.warnings)


def audit(predictions: Predictions | pd.DataFrame | str | os.PathLike[str],
          metadata: pd.DataFrame | str | os.PathLike[str], *, attributes: str | Sequence[str] | None = None,
          thresholds_mm: float | Sequence[float] = (2.0,), spacing_mm: float | None = None,
          wrist_width: WristWidth | str | tuple[object, object, float] | None = None,
          bins: Mapping[str, Sequence[float]] | None = None,
          families: dict[str, Any] | Iterable[tuple[str, Iterable[object]]] | None = None,
          min_group_size: int = 10, intersection: bool = True,
          significance: SignificanceOptions | Mapping[str, Any] | bool | None = True,
          privacy: bool | Mapping[str, Any] | None = None, adjust: Sequence[str] | None = None,
          measurements: Any = None, curves: bool | Mapping[str, Any] = True,
          spacing_from_dicom: str | os.PathLike[str] | None = None, dicom_match: str = "stem",
          encoding: str | None = None, emit_warnings: bool = True, progress: bool = False) -> AuditResult:
    """Audit landmark predictions for per-keypoint demographic parity.

    Parameters
    ----------
    predictions : pandas.DataFrame or path
        Long format: ``image_id, keypoint, pred_x, pred_y, true_x, true_y``
        (pixels), optional ``run``, ``spacing_mm``, or ``error_mm`` instead of
        coordinates. Empty ``pred_x``/``pred_y`` is a missing prediction.
    metadata : pandas.DataFrame or path
        ``image_id`` plus one column per sensitive attribute.
    attributes : list of str, optional
        Attribute columns to audit; default all metadata columns.
    thresholds_mm : sequence of float, default (2.0,)
        SDR thresholds, inclusive; the first is the primary one for DP.
    spacing_mm : float, optional
        mm per pixel for all images.
    wrist_width : str or (a, b, mm), optional
        Per-image scale from two true keypoints a known distance apart,
        e.g. ``"1,5,50"`` for the Digital Hand Atlas.
    bins : dict of str -> list of float, optional
        Cut points for numeric attributes, e.g. ``{"age": [14]}``.
    families : dict of str -> list, optional
        Keypoint families, e.g. ``{"wrist": range(1, 19)}``.
    min_group_size : int, default 10
        Groups with fewer images in a run are left out of DP there.
    intersection : bool, default True
        Also audit the combination of two or more attributes.
    significance : bool, dict or SignificanceOptions, default True
        Permutation tests, bootstrap intervals, the randomized baseline and
        multiple-testing control (see :mod:`fairlandmark.stats.significance`),
        on by default as on the command line (10,000 permutations, 2,000
        bootstrap resamples, 1,000 baseline repeats). ``False`` (or ``None``)
        is the fast switch: point estimates only, as ``--no-significance``.
    privacy : bool or dict, optional
        Opt-in attribute inference from the per-keypoint errors for each
        audited attribute; a dict passes options to
        :func:`fairlandmark.stats.privacy.audit_privacy` (``within``, ``n_splits``,
        ``n_permutations``, ``seed``, ...). Results land in
        ``AuditResult.privacy`` and the JSON's ``privacy`` block.
    adjust : list of str, optional
        Metadata columns (numeric or categorical; ``"site:cat"`` forces
        categorical) to adjust the gaps for: per (attribute, keypoint), GEE
        models of the error and of the hit with images as clusters (see
        :mod:`fairlandmark.stats.adjusted`). Results land in
        ``AuditResult.adjusted``, ``adjusted_*`` columns of ``per_keypoint``
        and an ``adjusted`` object on each JSON ``per_keypoint`` record.
    measurements : str, path, list of dict or MeasurementSet, optional
        Clinical measurements to audit (angles, distances, ratios from the
        landmarks): a preset (``"isbi2015"``, ``"dha"``), a TOML file or
        definitions (see :mod:`fairlandmark.inputs.measurements`). Results in
        ``AuditResult.measurements`` and the JSON's ``measurements`` list.
    curves : bool or dict, default True
        Error curves (SDR over a threshold grid) per group and keypoint and,
        with significance, the curve-gap test; a dict passes ``phi`` (the
        grid) to :func:`fairlandmark.stats.curves.error_curves`.
    spacing_from_dicom : str or path-like, optional
        Folder of DICOM files giving each image's mm per pixel (x and y) from
        its header (``PixelSpacing``, else ``ImagerPixelSpacing``); needs the
        ``[dicom]`` extra. See :mod:`fairlandmark.inputs.dicom`.
    dicom_match : {"stem", "uid"}, default "stem"
        Match DICOM files to ``image_id`` by file stem or ``SOPInstanceUID``.
    encoding : str, optional
        Text encoding of CSV inputs; default UTF-8, or UTF-16 when the file starts with a byte-order mark
        (e.g. ``"latin-1"`` for a file saved by an old spreadsheet).
    emit_warnings : bool, default True
        Issue each note of ``AuditResult.warnings`` (unused metadata rows, small
        groups, ...) once as a :class:`fairlandmark.exceptions.FairlandmarkWarning`;
        False leaves them in the result only.
    progress : bool, default False
        Name each step of reading and checking the inputs, and of the point
        estimates, on standard error while it runs, in a terminal (a million
        images take seconds); the significance bars follow
        ``significance``'s own ``progress``.

    Returns
    -------
    AuditResult

    Examples
    --------
    >>> import pandas as pd
    >>> preds = pd.DataFrame({"image_id": ["a", "b", "c", "d"], "keypoint": 1,
    ...                       "pred_x": [0, 0, 0, 0], "pred_y": [1, 3, 1, 1],
    ...                       "true_x": 0, "true_y": 0})
    >>> meta = pd.DataFrame({"image_id": ["a", "b", "c", "d"], "sex": ["F", "F", "M", "M"]})
    >>> res = audit(preds, meta, attributes=["sex"], spacing_mm=1.0, min_group_size=1)
    >>> float(res.per_keypoint["dp"].iloc[0])
    0.5
    """
    if families is not None and isinstance(families, dict):
        families = {k: [str(x) for x in v] for k, v in families.items()}
    study = prepare_study(predictions, metadata, attributes=attributes, spacing_mm=spacing_mm,
                          wrist_width=wrist_width, bins=bins, families=families, intersection=intersection,
                          metadata_source=os.fspath(metadata) if isinstance(metadata, (str, os.PathLike)) else None,
                          spacing_from_dicom=spacing_from_dicom, dicom_match=dicom_match, encoding=encoding,
                          keep_pred_xy=measurements is not None,  # only the measurement audit reads them
                          progress=progress)
    covariates = None
    if adjust:
        from fairlandmark.stats.adjusted import check_covariates

        covariates = check_covariates(metadata, list(adjust), image_ids=study.row_image,
                                      attributes=[a for a in study.coding.attributes if a in study.coding.base_codes],
                                      source=os.fspath(metadata) if isinstance(metadata, (str, os.PathLike)) else None)
    result = run_audit(study, thresholds_mm=thresholds_mm, min_group_size=min_group_size, significance=significance,
                       privacy=privacy, adjust=covariates, measurements=measurements, curves=curves,
                       emit_warnings=False, progress=progress)
    if emit_warnings:
        emit_notes(result.notes, stacklevel=2)  # at the user's call
    return result


def audit_arrays(pred: ArrayLike, true: ArrayLike, groups: Mapping[str, ArrayLike], *,
                 spacing_mm: float | ArrayLike | None = None, runs: ArrayLike | None = None,
                 keypoints: Iterable[object] | None = None, image_ids: ArrayLike | None = None,
                 covariates: Mapping[str, ArrayLike] | None = None, coord_order: str = "xy",
                 **options: Any) -> AuditResult:
    """Audit predictions held as numpy arrays.

    Parameters
    ----------
    pred, true : ndarray, shape (N, K, 2)
        Predicted and true points in pixels of the original image, in
        ``coord_order``; NaN in ``pred`` = missing prediction, NaN in both
        true coordinates = no ground truth for that point (left out).
    groups : dict of str -> array-like, shape (N,)
        One sensitive attribute per entry, one value per row.
    spacing_mm : float or ndarray of shape (N,) or (N, 2), optional
        mm per pixel, global or per row; shape (N, 2) gives per-axis spacing
        in ``coord_order`` (anisotropic pixels: each axis is scaled before
        the distance).
    coord_order : {"xy", "yx"}, default "xy"
        Order of the last axis of ``pred``, ``true`` and a per-axis
        ``spacing_mm``. landmarker and other row-major pipelines use
        ``"yx"``; images resized or padded for the network must be mapped
        back first (see :mod:`fairlandmark.integrations.landmarker`).
    runs : array-like, shape (N,), optional
        Run (hold-out) of each row.
    keypoints : sequence, optional
        Keypoint labels; default 1..K.
    image_ids : array-like, shape (N,), optional
        Image ids; default row numbers. An image may appear in several runs.
    covariates : dict of str -> array-like, shape (N,), optional
        Extra per-row metadata (not audited) for ``adjust=[...]``.
    **options
        Any keyword option of :func:`audit`.

    Returns
    -------
    AuditResult

    Examples
    --------
    >>> import numpy as np
    >>> true = np.zeros((4, 1, 2)); pred = true.copy(); pred[1, 0, 1] = 3.0
    >>> res = audit_arrays(pred, true, {"sex": ["F", "F", "M", "M"]}, spacing_mm=1.0, min_group_size=1)
    >>> float(res.per_keypoint["dp"].iloc[0])
    0.5
    """
    for name, array in (("pred", pred), ("true", true)):
        if np.asarray(array).dtype == bool:
            raise InputError(MSG_ARRAY_BOOL.format(name=name))
    pred, true = np.asarray(pred, dtype=float), np.asarray(true, dtype=float)
    if pred.ndim != 3 or pred.shape[2] != 2:
        raise InputError(MSG_ARRAY_SHAPE.format(name="pred", shape=pred.shape))
    if true.shape != pred.shape:
        raise InputError(MSG_ARRAY_MATCH.format(name="true", shape=true.shape, expected=pred.shape))
    if coord_order not in ("xy", "yx"):
        raise InputError(MSG_COORD_ORDER.format(value=coord_order))
    n, k, _ = pred.shape
    per_row = None if spacing_mm is None or np.ndim(spacing_mm) == 0 else np.asarray(spacing_mm, dtype=float)
    if per_row is not None:
        if per_row.shape not in ((n,), (n, 2)):
            raise InputError(MSG_SPACING_SHAPE.format(shape=per_row.shape, n=n))
        spacing_mm = None
    if coord_order == "yx":
        pred, true = pred[..., ::-1], true[..., ::-1]
        if per_row is not None and per_row.ndim == 2:
            per_row = per_row[:, ::-1]
    keypoints = list(range(1, k + 1)) if keypoints is None else list(keypoints)
    image_ids = np.arange(n).astype(str) if image_ids is None else np.asarray(image_ids).astype(str)
    runs = np.zeros(n, dtype=int) if runs is None else np.asarray(runs)
    frame = pd.DataFrame({
        "run": np.repeat(runs.astype(str), k),
        "image_id": np.repeat(image_ids, k),
        "keypoint": np.tile(np.asarray(keypoints, dtype=object), n),
        "pred_x": pred[..., 0].ravel(), "pred_y": pred[..., 1].ravel(),
        "true_x": true[..., 0].ravel(), "true_y": true[..., 1].ravel(),
    })
    if per_row is not None and per_row.ndim == 1:
        frame["spacing_mm"] = np.repeat(per_row, k)
    elif per_row is not None:
        frame["spacing_x_mm"] = np.repeat(per_row[:, 0], k)
        frame["spacing_y_mm"] = np.repeat(per_row[:, 1], k)
    meta_rows = {}
    for name, values in groups.items():
        values = np.asarray(values)
        if len(values) != n:
            raise InputError(MSG_GROUP_LENGTH.format(name=name, n=len(values), n_images=n))
        meta_rows[name] = values
    for name, values in (covariates or {}).items():
        values = np.asarray(values)
        if len(values) != n:
            raise InputError(MSG_GROUP_LENGTH.format(name=name, n=len(values), n_images=n))
        meta_rows[name] = values
    meta = pd.DataFrame({"image_id": image_ids, **meta_rows}).drop_duplicates("image_id")
    options.setdefault("attributes", list(groups))
    # What is left is a scalar (or a 0-d array, which works as one).
    emit = options.pop("emit_warnings", True)
    result = audit(frame, meta, spacing_mm=cast("float | None", spacing_mm), emit_warnings=False, **options)
    if emit:
        emit_notes(result.notes, stacklevel=2)  # at the user's call
    return result


def _privacy_block(results: Sequence[PrivacyResult]) -> dict[str, Any] | None:
    if not results:
        return None
    from fairlandmark.stats.privacy import privacy_block

    return privacy_block(results)


def _json_columns(frame: pd.DataFrame) -> dict[str, list[Any]]:
    """Each column of ``frame`` as a list of JSON-ready values (NaN and inf as None, Python scalars), a
    whole column at a time: what :func:`json_safe` gives value by value."""
    out: dict[str, list[Any]] = {}
    for name, column in frame.items():
        kind = column.dtype.kind if isinstance(column.dtype, np.dtype) else "O"
        if kind == "f":
            values = column.to_numpy()
            bad = ~np.isfinite(values)
            if bad.any():
                values = values.astype(object)
                values[bad] = None
            out[str(name)] = values.tolist()
        elif kind in "iub":
            out[str(name)] = column.to_numpy().tolist()
        else:  # text and objects: NaN, None and pandas' NA where missing
            as_objects = column.to_numpy(dtype=object, copy=True)  # a copy: the table itself keeps its values
            as_objects[pd.isna(as_objects)] = None
            out[str(name)] = json_safe(as_objects.tolist())
    return out


class AuditResult:
    """Result of an audit: tidy tables, JSON and CSV, computed once on demand.

    Attributes
    ----------
    per_keypoint : pandas.DataFrame
        One row per (attribute, keypoint): DP (mean over runs), its sample std,
        the pair of groups that sets it, and significance columns if computed.
    per_group : pandas.DataFrame
        One row per (attribute, group, keypoint): images, missing, MRE and SDR
        at every threshold (mean and std over runs).
    summary : pandas.DataFrame
        One row per (attribute, family): mean and max DP over keypoints.
    overall : pandas.DataFrame
        One row per family ("all" first): MRE and SDR at each threshold.
    groups : pandas.DataFrame
        One row per (attribute, group): images in total and per run.
    warnings : list of str
        Notes for the user (unused metadata rows, small groups, ...); ``notes``
        holds the same with options still marked, for other spellings.
    """

    def __init__(self, *, study: Study, thresholds: Iterable[float], min_group_size: int,
                 observed: dict[str, Observed], significance: SignificanceResult | None,
                 notes: Iterable[str]) -> None:
        self.study = study
        self.thresholds = list(thresholds)
        self.min_group_size = min_group_size
        self.observed = observed
        self.significance = significance
        self.notes = list(notes)  # options still marked; `warnings` spells them by API name
        self.privacy: list[PrivacyResult] = []  # PrivacyResult list from the opt-in privacy section (fairlandmark.stats.privacy)
        self.adjusted: AdjustedResult | None = None  # from the opt-in covariate adjustment (fairlandmark.stats.adjusted)
        self.measurements: MeasurementAudit | None = None  # opt-in clinical measurements (stats/measurements.py)
        self.curves: CurveResult | None = None  # error curves and the curve-gap test (stats/curves.py)

    def add_privacy(self, results: Iterable[PrivacyResult]) -> list[str]:
        """Attach the privacy section; its notes that the audit does not already carry join the audit's notes.

        Returns the notes added (say, how missing predictions are imputed for the classifier).
        """
        self.privacy = list(results)
        added: list[str] = []
        for res in self.privacy:
            added += [text for text in res.notes if text not in self.notes and text not in added]
        self.notes.extend(added)
        return added

    @property
    def warnings(self) -> list[str]:
        """The notes for the user, options named as a Python caller types them."""
        return [spell_options(text) for text in self.notes]

    @cached_property
    def anatomy(self) -> dict[str, Any] | None:
        """Mean aligned ground-truth shape for the fairness map; None without coordinates."""
        from fairlandmark.stats.procrustes import mean_shape_of_study

        return mean_shape_of_study(self.study)

    # -- basic facts -------------------------------------------------------
    @property
    def unit(self) -> str:
        return self.study.unit

    @property
    def attributes(self) -> list[str]:
        return list(self.study.coding.attributes)

    @property
    def keypoints(self) -> list[Any]:
        return list(self.study.keypoints)

    @property
    def n_runs(self) -> int:
        return self.study.n_runs

    def _family_of(self) -> list[str]:
        out = ["" for _ in self.keypoints]
        for name, idx in self.study.families.items():
            for i in idx:
                out[i] = name
        return out

    def _pair(self, attribute: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pair (high, low) of run-mean SDRs, each group averaged over the runs where it is in DP.

        So a DP computed in some runs always comes with a pair, from the same groups.
        """
        obs = self.observed[attribute]
        sdr = obs.sdr[0] if obs.sdr_dp is None else obs.sdr_dp
        high, low = reported_pair(sdr, obs.valid)
        valid = np.asarray(obs.valid.any(axis=0))
        return high, low, valid

    @cached_property
    def _keypoint_sums(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per-run sums over all images, per keypoint: the base of per-keypoint and per-family accuracy.

        Returns err_sum (R, K), n_present (R, K), hits (T, R, K) and n_labelled (R, K), the images with
        ground truth for each keypoint (every image when nothing is unlabelled).
        """
        errors, row_run, labelled = self.study.errors, self.study.row_run, self.study.labelled
        n_rows, n_kp = errors.shape
        err_sum, n_present = np.zeros((self.n_runs, n_kp)), np.zeros((self.n_runs, n_kp))
        hits = np.zeros((len(self.thresholds), self.n_runs, n_kp))
        n_images, labelled_sum = np.zeros(self.n_runs), np.zeros((self.n_runs, n_kp))
        # In blocks of the study's rows, so that no (N, K) temporary is made at a million images. A study of
        # at most _SUM_BLOCK_ROWS rows in all is one block, whose sums are one product each, added to zeros
        # (exactly the old numbers); above that the blocks' products add up to the same within rounding.
        for lo in range(0, n_rows, _SUM_BLOCK_ROWS):
            block = slice(lo, lo + _SUM_BLOCK_ROWS)
            err = errors[block]
            present = ~np.isnan(err)
            onehot = np.zeros((self.n_runs, len(err)))
            onehot[row_run[block], np.arange(len(err))] = 1.0
            filled = np.where(present, err, np.inf)
            for t, threshold in enumerate(self.thresholds):
                hits[t] += onehot @ (filled <= threshold)  # a missing prediction never hits
            del filled
            err_sum += onehot @ np.where(present, err, 0.0)
            n_present += onehot @ present
            n_images += onehot.sum(axis=1)
            if labelled is not None:
                labelled_sum += onehot @ labelled[block]
        n_labelled = (labelled_sum if labelled is not None
                      else np.broadcast_to(n_images[:, None], (self.n_runs, n_kp)))
        return err_sum, n_present, hits, n_labelled

    # -- tables --------------------------------------------------------------
    @cached_property
    def per_keypoint(self) -> pd.DataFrame:
        fam = self._family_of()
        err_sum, n_present, hits, n_labelled = self._keypoint_sums
        with np.errstate(invalid="ignore", divide="ignore"):
            kp_mre, kp_mre_std = mean_std_over_runs(err_sum / n_present)
            kp_sdr, kp_sdr_std = mean_std_over_runs(hits[0] / n_labelled)
        n_kp = len(self.keypoints)
        columns: dict[str, list[Any]] = {name: [] for name in (
            "attribute", "keypoint", "family", "dp", "dp_std", "group_high", "group_low", "pair", "mre_gap",
            "mre_gap_std", "mre", "mre_std", "sdr", "sdr_std")}
        for a in self.attributes:  # one block of rows per attribute, a whole column at a time
            obs = self.observed[a]
            names = list(self.study.coding.groups[a])
            dp, dp_std = mean_std_over_runs(obs.dp)
            gap, gap_std = mean_std_over_runs(obs.mre_gap)
            high, low, valid = self._pair(a)
            pair_ok = (valid.sum() >= 2) & ~np.isnan(dp)
            # Index len(names) is "no pair": None in every column.
            high, low = np.where(pair_ok, high, len(names)), np.where(pair_ok, low, len(names))
            or_none = np.array([*names, None], dtype=object)
            group_high, group_low = or_none[high], or_none[low]
            pair_names = np.array([[f"{h} vs {lo}" for lo in names] + [None] for h in names]
                                  + [[None] * (len(names) + 1)], dtype=object)
            pair = pair_names[high, low]
            block = {"attribute": [a] * n_kp, "keypoint": self.keypoints, "family": fam, "dp": dp,
                     "dp_std": dp_std, "group_high": group_high, "group_low": group_low, "pair": pair,
                     "mre_gap": gap, "mre_gap_std": gap_std, "mre": kp_mre, "mre_std": kp_mre_std, "sdr": kp_sdr,
                     "sdr_std": kp_sdr_std}
            for name, values in block.items():
                columns[name].extend(values.tolist() if isinstance(values, np.ndarray) else values)
        table = pd.DataFrame(columns) if self.attributes else pd.DataFrame()
        if self.significance is not None:
            table = self.significance.join(table)
        if self.adjusted is not None:
            table = self.adjusted.join(table)
        return table

    @cached_property
    def per_group(self) -> pd.DataFrame:
        blocks = []
        fam = self._family_of()
        for a in self.attributes:
            obs, groups = self.observed[a], self.study.coding.groups[a]
            G, K = len(groups), len(self.keypoints)
            mre, mre_std = mean_std_over_runs(obs.mre)
            cols = {
                "attribute": np.repeat(np.asarray([a], dtype=object), G * K),
                "group": np.repeat(groups, K),
                "keypoint": np.tile(np.asarray(self.keypoints, dtype=object), G),
                "family": np.tile(np.asarray(fam, dtype=object), G),
                "n_images": np.repeat(obs.n_images.sum(axis=0), K).astype(int),
                "n_missing": obs.n_missing.sum(axis=0).ravel().astype(int),
                "in_dp": np.repeat(obs.valid.all(axis=0), K),  # per keypoint below when points are unlabelled
                "mre": mre.ravel(), "mre_std": mre_std.ravel(),
            }
            if self.study.labelled is not None:  # only then, so files without unlabelled points keep their columns
                cols["n_unlabelled"] = (cols["n_images"] - obs.n_labelled.sum(axis=0).ravel()).astype(int)
                cols["in_dp"] = cols["in_dp"] & (obs.n_labelled >= self.min_group_size).all(axis=0).ravel()
            for t, thr in enumerate(self.thresholds):
                m, s = mean_std_over_runs(obs.sdr[t])
                cols[f"sdr_{threshold_key(thr)}"] = m.ravel()
                cols[f"sdr_{threshold_key(thr)}_std"] = s.ravel()
            blocks.append(cols)
        # One frame from whole columns: a frame per attribute and their concatenation cost a millisecond more.
        table = pd.DataFrame({name: np.concatenate([block[name] for block in blocks]) for name in blocks[0]}
                             if blocks else {})
        if self.significance is not None:
            table = self.significance.join_groups(table)
        return table

    @cached_property
    def groups(self) -> pd.DataFrame:
        return pd.DataFrame(self._group_rows)

    @cached_property
    def _group_rows(self) -> list[dict[str, Any]]:
        """The rows of :attr:`groups` as plain Python values: the document's records without a frame."""
        rows = []
        for a in self.attributes:
            obs = self.observed[a]
            for g, name in enumerate(self.study.coding.groups[a]):
                rows.append({"attribute": a, "group": name, "n_images": int(obs.n_images[:, g].sum()),
                             "n_images_min_run": int(obs.n_images[:, g].min()),
                             "in_dp": bool(obs.valid[:, g].all())})
        return rows

    def _family_items(self) -> list[tuple[str, list[int]]]:
        items = [("all", list(range(len(self.keypoints))))]
        return items + list(self.study.families.items())

    @cached_property
    def summary(self) -> pd.DataFrame:
        rows = self._summary_rows
        frame = pd.DataFrame(rows)
        # Keep the keypoint's own type (int 2, not 2.0): a column of ints and None would otherwise become float.
        frame["max_dp_keypoint"] = pd.Series([r["max_dp_keypoint"] for r in rows], dtype=object, index=frame.index)
        return frame

    @cached_property
    def _summary_rows(self) -> list[dict[str, Any]]:
        """The rows of :attr:`summary`, keypoints as plain Python values (as :func:`json_safe` gives them)."""
        rows = []
        for a in self.attributes:
            obs = self.observed[a]
            dp_mean_kp, _ = mean_std_over_runs(obs.dp)
            for name, idx in self._family_items():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    per_run = np.nanmean(obs.dp[:, idx], axis=1)  # mean DP over keypoints, per run
                mean, std = mean_std_over_runs(per_run)
                sub = dp_mean_kp[idx]
                j = int(np.nanargmax(sub)) if np.isfinite(sub).any() else None
                rows.append({"attribute": a, "family": name, "n_keypoints": len(idx),
                             "mean_dp": float(mean), "mean_dp_std": float(std),
                             "max_dp": float(sub[j]) if j is not None else np.nan,
                             "max_dp_keypoint": json_safe(self.keypoints[idx[j]]) if j is not None else None})
        return rows

    @cached_property
    def overall(self) -> pd.DataFrame:
        return pd.DataFrame(self._overall_rows)

    @cached_property
    def _overall_rows(self) -> list[dict[str, Any]]:
        """The rows of :attr:`overall` as plain Python values."""
        err_sum, n_present, hits, n_labelled = self._keypoint_sums
        rows = []
        for name, idx in self._family_items():
            n_pred = n_labelled[:, idx].sum(axis=1)  # labelled points: images x keypoints when all are labelled
            fam_present = n_present[:, idx].sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                mre, mre_std = mean_std_over_runs(err_sum[:, idx].sum(axis=1) / fam_present)
            row = {"family": name, "n_keypoints": len(idx), "n_predictions": int(n_pred.sum()),
                   "n_missing": int(n_pred.sum() - fam_present.sum()), "mre": float(mre), "mre_std": float(mre_std)}
            for t, thr in enumerate(self.thresholds):
                m, sd = mean_std_over_runs(hits[t][:, idx].sum(axis=1) / n_pred)
                row[f"sdr_{threshold_key(thr)}"] = float(m)
                row[f"sdr_{threshold_key(thr)}_std"] = float(sd)
            rows.append(row)
        return rows

    # -- export ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The audit as a JSON-ready dict (schema in docs/json_schema.md)."""
        pk, pg = self.per_keypoint, self.per_group
        primary = f"sdr_{threshold_key(self.thresholds[0])}"
        keys = [threshold_key(t) for t in self.thresholds]
        records = []
        # The largest block of the document, so built from whole columns already JSON-ready (NaN as None),
        # not walked value by value afterwards; each (attribute, keypoint)'s group rows as lists of the
        # per-group columns (per-record sub-frames cost a fixed tenth of a second or so per audit).
        keypoint_columns, columns = _json_columns(pk), _json_columns(pg)
        rows_of: dict[tuple[Any, Any], list[int]] = {}
        for i, key in enumerate(zip(columns["attribute"], columns["keypoint"])):
            rows_of.setdefault(key, []).append(i)
        for i in range(len(pk)):
            row: dict[Hashable, Any] = {name: values[i] for name, values in keypoint_columns.items()}
            rows = rows_of[(row["attribute"], row["keypoint"])]
            g = {name: [values[j] for j in rows] for name, values in columns.items()}
            groups = [str(label) for label in g["group"]]
            rec = {
                "attribute": row["attribute"], "keypoint": row["keypoint"], "family": row["family"] or None,
                "dp": row["dp"], "dp_std": row["dp_std"],
                "pair": [row["group_high"], row["group_low"]] if isinstance(row["pair"], str) else None,
                "sdr_by_group": dict(zip(groups, g[primary])),
                "sdr_std_by_group": dict(zip(groups, g[primary + "_std"])),
                "mre_by_group": dict(zip(groups, g["mre"])),
                "mre_std_by_group": dict(zip(groups, g["mre_std"])),
                "n_by_group": dict(zip(groups, g["n_images"])),
                "n_missing_by_group": dict(zip(groups, g["n_missing"])),
                **({"n_unlabelled_by_group": dict(zip(groups, g["n_unlabelled"]))}
                   if "n_unlabelled" in g else {}),
                "sdr_by_threshold": {key: dict(zip(groups, g[f"sdr_{key}"])) for key in keys},
                "mre_gap": row["mre_gap"], "mre_gap_std": row["mre_gap_std"],
                "mre": row["mre"], "mre_std": row["mre_std"], "sdr": row["sdr"], "sdr_std": row["sdr_std"],
            }
            if self.significance is not None:
                rec.update(json_safe(self.significance.record(row, g)))
            if self.adjusted is not None:
                rec["adjusted"] = json_safe(self.adjusted.record(row["attribute"], row["keypoint"]))
            records.append(rec)
        doc = {
            "schema_version": SCHEMA_VERSION,
            "tool": {"name": "fairlandmark", "version": __version__},
            "unit": self.unit,
            "thresholds": self.thresholds,
            "primary_threshold": self.thresholds[0],
            "min_group_size": self.min_group_size,
            "n_runs": self.n_runs,
            "runs": [str(r) for r in self.study.runs],
            "n_images": len(self.study.first_image_rows),
            "keypoints": self.keypoints,
            "families": {k: [self.keypoints[i] for i in v] for k, v in self.study.families.items()},
            "attributes": self.attributes,
            "groups": self._group_rows,  # plain Python values: json_safe below makes NaN None
            "per_keypoint": None,  # the records, JSON-ready already: set below
            "summary": self._summary_rows,
            "overall": self._overall_rows,
            "significance": self.significance.settings() if self.significance is not None else None,
            "privacy": _privacy_block(self.privacy),
            "adjustment": self.adjusted.settings() if self.adjusted is not None else None,
            "anatomy": self.anatomy,
            "curves": self.curves.block() if self.curves is not None else None,
            "measurements": self.measurements.records if self.measurements is not None else None,
            "measurement_settings": self.measurements.block() if self.measurements is not None else None,
            "warnings": self.warnings,
        }
        doc = json_safe(doc)
        doc["per_keypoint"] = records
        return doc

    def to_json(self, path: str | os.PathLike[str] | None = None, *, indent: int | None = 2) -> str:
        """JSON text of :meth:`to_dict`; written atomically to ``path`` if given."""
        return dump_json(self.to_dict(), path, indent=indent)

    def to_frame(self) -> pd.DataFrame:
        """One tidy row per (attribute, keypoint, group) with the keypoint's DP columns."""
        pk = self.per_keypoint.drop(columns=["family"]).rename(
            columns={c: f"keypoint_{c}" for c in ("mre", "mre_std", "sdr", "sdr_std")})
        return self.per_group.merge(pk, on=["attribute", "keypoint"], how="left")

    def to_metricframe_like(self, attribute: str | None = None, *, metric: str = "sdr",
                            threshold: float | None = None, in_dp_only: bool = False) -> pd.DataFrame:
        """Per-group values in Fairlearn's ``MetricFrame.by_group`` shape.

        Parameters
        ----------
        attribute : str, optional
            Attribute (default: the first audited one).
        metric : {"sdr", "mre"}, default "sdr"
        threshold : float, optional
            SDR threshold in mm (default: the primary one).
        in_dp_only : bool, default False
            Keep only groups that take part in DP (``min_group_size``).

        Returns
        -------
        pandas.DataFrame
            Index: the attribute's groups (named after the attribute);
            columns: keypoints; values: mean over runs. With one run and
            every group in DP, ``frame.max() - frame.min()`` is the DP of
            each keypoint, as ``MetricFrame.difference()`` would give.

        Examples
        --------
        >>> import numpy as np
        >>> true = np.zeros((4, 1, 2)); pred = true.copy(); pred[1, 0, 1] = 3.0
        >>> res = audit_arrays(pred, true, {"sex": ["F", "F", "M", "M"]}, spacing_mm=1.0, min_group_size=1,
        ...                    significance=False)
        >>> res.to_metricframe_like().to_dict()
        {1: {'F': 0.5, 'M': 1.0}}
        """
        attribute = self.attributes[0] if attribute is None else attribute
        if attribute not in self.attributes:
            raise InputError(f"attribute {attribute!r}: not audited; choose one of {', '.join(self.attributes)}")
        if metric == "sdr":
            thr = self.thresholds[0] if threshold is None else float(threshold)
            column = f"sdr_{threshold_key(thr)}"
        elif metric == "mre":
            column = "mre"
        else:
            raise InputError(f"metric {metric!r}: choose 'sdr' or 'mre'")
        table = self.per_group[self.per_group["attribute"] == attribute]
        if column not in table:
            raise InputError(f"threshold {threshold!r}: not audited; the thresholds are "
                             f"{', '.join(threshold_key(t) for t in self.thresholds)}")
        if in_dp_only:
            table = table[table["in_dp"]]
        frame = table.pivot(index="group", columns="keypoint", values=column)
        frame = frame.reindex(index=[g for g in self.study.coding.groups[attribute] if g in frame.index],
                              columns=self.keypoints)
        frame.index.name, frame.columns.name = attribute, None
        return frame

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_frame` as CSV, atomically."""
        from fairlandmark.files import atomic_write_text

        atomic_write_text(path, self.to_frame().to_csv(index=False))

    def __repr__(self) -> str:
        return (f"AuditResult({len(self.attributes)} attributes, {len(self.keypoints)} keypoints, "
                f"{self.n_runs} run(s), unit={self.unit!r})")
