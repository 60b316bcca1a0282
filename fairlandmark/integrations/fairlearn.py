"""Metric callables for Fairlearn's ``MetricFrame``: radial error and SDR on points.

``MetricFrame(metrics=..., y_true=..., y_pred=..., sensitive_features=...)``
splits ``y_true`` and ``y_pred`` by group and calls each metric on the rows of
a group. For one keypoint, pass its points as arrays of shape ``(N, 2)``
((x, y) pixels; NaN in a prediction = missing, NaN in both true coordinates =
no ground truth); the spacing is fixed in the factory or passed per row
through ``sample_params`` so that it is split with the rows::

    from fairlearn.metrics import MetricFrame
    from fairlandmark.integrations.fairlearn import sdr_metric

    mf = MetricFrame(metrics=sdr_metric(2.0), y_true=true[:, k], y_pred=pred[:, k],
                     sensitive_features=sex, sample_params={"spacing_mm": spacing})
    mf.by_group      # SDR@2mm per group = the true positive rate of "within 2 mm"
    mf.difference()  # fairlandmark's DP for keypoint k (one run, every group in DP)

The numbers follow fairlandmark's rules: a missing prediction is a miss in
SDR and left out of the mean radial error; an unlabelled point is left out of
both. Fairlearn itself is not imported here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

from fairlandmark.exceptions import InputError

__all__ = ["radial_errors_mm", "sdr", "mean_radial_error", "sdr_metric", "mre_metric"]

MSG_POINTS = "{name}: expected points of shape (N, 2) ((x, y) pixels), got shape {shape}"
MSG_SPACING = "spacing_mm: expected a positive number, shape (N,) or shape (N, 2) ((x, y)), got shape {shape}"
MSG_PHI = "phi: must be a positive number of mm, got {value!r}"


def _points(value: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InputError(MSG_POINTS.format(name=name, shape=arr.shape))
    return arr


def radial_errors_mm(y_true: ArrayLike, y_pred: ArrayLike,
                     spacing_mm: ArrayLike | None = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Radial error of each row, and which rows have ground truth.

    Parameters
    ----------
    y_true, y_pred : array-like, shape (N, 2)
        (x, y) in pixels.
    spacing_mm : float or array-like, shape (N,) or (N, 2)
        mm per pixel: global, per row, or per row and axis (x, y).

    Returns
    -------
    errors : ndarray, shape (N,)
        NaN where the prediction is missing or the point is unlabelled.
    labelled : ndarray of bool, shape (N,)

    Examples
    --------
    >>> radial_errors_mm([[0, 0], [0, 0]], [[3, 4], [np.nan, np.nan]], 0.5)
    (array([2.5, nan]), array([ True,  True]))
    """
    true, pred = _points(y_true, "y_true"), _points(y_pred, "y_pred")
    if pred.shape != true.shape:
        raise InputError(MSG_POINTS.format(name="y_pred", shape=pred.shape))
    spacing = np.asarray(1.0 if spacing_mm is None else spacing_mm, dtype=float)
    n = len(true)
    if spacing.shape not in ((), (n,), (n, 2)) or not (spacing > 0).all():
        raise InputError(MSG_SPACING.format(shape=spacing.shape))
    delta = pred - true
    labelled = ~np.isnan(true).any(axis=1)
    if spacing.ndim == 2:
        sx, sy = spacing[:, 0], spacing[:, 1]
        # Square pixels the way fairlandmark's long format computes them (bit-identical numbers).
        errors = np.where(sx == sy, np.hypot(delta[:, 0], delta[:, 1]) * sx,
                          np.hypot(delta[:, 0] * sx, delta[:, 1] * sy))
    else:
        errors = np.hypot(delta[:, 0], delta[:, 1]) * spacing
    return errors, labelled


def sdr(y_true: ArrayLike, y_pred: ArrayLike, *, phi: float = 2.0, spacing_mm: ArrayLike | None = 1.0) -> float:
    """Share of labelled points predicted within ``phi`` mm (a missing prediction is a miss).

    Examples
    --------
    >>> float(sdr([[0, 0], [0, 0], [0, 0]], [[1, 0], [9, 0], [np.nan, np.nan]], phi=2.0))
    0.3333333333333333
    """
    errors, labelled = radial_errors_mm(y_true, y_pred, spacing_mm)
    hits = np.sum(errors[labelled] <= phi)  # NaN (missing) compares False: a miss
    n = int(labelled.sum())
    return float(hits / n) if n else float("nan")


def mean_radial_error(y_true: ArrayLike, y_pred: ArrayLike, *, spacing_mm: ArrayLike | None = 1.0) -> float:
    """Mean radial error over labelled points with a prediction (NaN if none).

    Examples
    --------
    >>> float(mean_radial_error([[0, 0], [0, 0]], [[3, 4], [np.nan, np.nan]]))
    5.0
    """
    errors, labelled = radial_errors_mm(y_true, y_pred, spacing_mm)
    present = labelled & ~np.isnan(errors)
    return float(errors[present].sum() / present.sum()) if present.any() else float("nan")


def sdr_metric(phi: float = 2.0, spacing_mm: ArrayLike | None = None) -> Callable[..., float]:
    """An SDR@``phi`` callable ``f(y_true, y_pred, spacing_mm=None)`` for ``MetricFrame``.

    Parameters
    ----------
    phi : float, default 2.0
        Threshold in mm (inclusive).
    spacing_mm : float or array-like, optional
        Fixed spacing; a per-row spacing is better passed through
        ``MetricFrame(..., sample_params={"spacing_mm": array})`` so that it
        is split by group with the points. Default 1 (errors in pixels).

    Examples
    --------
    >>> f = sdr_metric(2.0, spacing_mm=0.5)
    >>> f.__name__, f([[0, 0], [0, 0]], [[3, 0], [5, 0]])
    ('sdr_2mm', 0.5)
    """
    phi = float(phi)
    if not (np.isfinite(phi) and phi > 0):
        raise InputError(MSG_PHI.format(value=phi))
    fixed = spacing_mm

    def metric(y_true: ArrayLike, y_pred: ArrayLike, spacing_mm: ArrayLike | None = None) -> float:
        return sdr(y_true, y_pred, phi=phi, spacing_mm=fixed if spacing_mm is None else spacing_mm)

    metric.__name__ = f"sdr_{phi:g}mm"
    return metric


def mre_metric(spacing_mm: ArrayLike | None = None) -> Callable[..., float]:
    """A mean-radial-error callable ``f(y_true, y_pred, spacing_mm=None)`` for ``MetricFrame``.

    Examples
    --------
    >>> mre_metric(0.1)([[0, 0]], [[30, 40]])
    5.0
    """
    fixed = spacing_mm

    def metric(y_true: ArrayLike, y_pred: ArrayLike, spacing_mm: ArrayLike | None = None) -> float:
        return mean_radial_error(y_true, y_pred, spacing_mm=fixed if spacing_mm is None else spacing_mm)

    metric.__name__ = "mre"
    return metric
