"""Attribute inference: do a model's per-keypoint errors reveal a sensitive attribute?

The paper ("Are X-ray landmark detection models fair?", section 3.1.4) trains
a random forest on each image's per-keypoint radial errors to predict a
sensitive attribute with 5-fold cross-validation. Accuracy well above chance
means the errors themselves leak the attribute. This module does that, with
the controls a reader needs to trust the number:

* **features**: one row per (run, image), one column per keypoint, the radial
  error (mm where a scale is known);
* **folds over images**: :func:`fairlandmark.stats.folds.stratified_image_folds`
  splits the *unique images* (stratified on the target), then every run-row of
  an image goes to the side of its image, so one image is never in both the
  training and the test part of a fold (:func:`row_folds`). The reference
  model's image-classifier control calls the same function with the same seed,
  so both see identical folds;
* **missing predictions**: a missing prediction (NaN error) is replaced by the
  median error of that keypoint in the *training* part of the fold, and a 0/1
  missing-indicator feature is added for every keypoint that has a missing
  prediction in that training part (``SimpleImputer(strategy="median",
  add_indicator=True)`` fitted inside the fold). Nothing is dropped;
* **scores**: accuracy and balanced accuracy (mean and sample std over folds),
  ROC AUC (binary; one-vs-rest macro average for three or more classes), the
  majority-class rate (chance for accuracy) and ``1 / n_classes`` (chance for
  balanced accuracy);
* **label-permutation test**, by default *chained* (no refit per
  permutation): fold ``k`` (k >= 2) is predicted by a model fitted on folds
  ``1..k-1`` only and tested by permuting its held-out labels *between
  images* (all runs of an image keep one label; statistic: the balanced mean
  predicted probability of the true class); each link's p-value is exact
  given the earlier folds' labels, so Fisher's combination of the ``K - 1``
  links is valid. Options: "per-fold" (each fold's own model fixed, the fold
  p-values merged by Bonferroni), "refit" (the whole cross-validation
  refitted per permutation, as scikit-learn's ``permutation_test_score``, but
  shuffling between images, not within groups), "fixed-model" (a screen);
* **which keypoints leak**: permutation importance (the numbers of
  :func:`sklearn.inspection.permutation_importance`, batched:
  :func:`permutation_importance_batched`) on each held-out fold (balanced accuracy drop), averaged over folds, ranked;
* ``within``: the whole analysis is repeated inside each level of another
  attribute (the paper's filtered attribute: age within male and within
  female), so the attributes don't mix.

Everything is driven by one ``seed``; a task's result does not depend on the
worker that runs it, so the numbers are bit-for-bit identical for any
``n_jobs``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
# scikit-learn is imported where it is used: it would double the start-up of every CLI command.

from fairlandmark.version import __version__
from fairlandmark.exceptions import FairlandmarkWarning, InputError, spell_options
from fairlandmark.inputs.radial_error import WristWidth
from fairlandmark.inputs.study import Study, prepare_study
from fairlandmark.progress import progress_bar
from fairlandmark.stats.folds import stratified_image_folds
from fairlandmark.stats.kernel import mean_std_over_runs
from fairlandmark.files import dump_json, json_safe

__all__ = [
    "attribute_inference",
    "audit_privacy",
    "privacy_block",
    "PrivacyResult",
    "row_folds",
    "default_estimator",
    "SCHEMA_VERSION",
    "MISSING_POLICY",
    "RUNS_POLICY",
    "PERMUTATION_TESTS",
    "fixed_model_null",
    "fold_permutation_pvalues",
    "merge_pvalues",
    "chain_folds",
    "fisher_sequential_pvalue",
    "MERGE_RULES",
    "besag_clifford_pvalue",
    "DEFAULT_STOP_AFTER",
    "balanced_accuracy_by_image",
    "permutation_importance_batched",
]

SCHEMA_VERSION = "1.0"
DEFAULT_TREES = 100
DEFAULT_PERMUTATIONS = 200
DEFAULT_REPEATS = 5
TOP_KEYPOINTS = 3
ALPHA = 0.05

MISSING_POLICY = (
    "a missing prediction is replaced by the median error of its keypoint in the training part of the fold, "
    "and a missing-indicator feature is added for each keypoint with a missing prediction there; nothing is dropped"
)
MSG_UNLABELLED_PRIVACY = (
    "{n} point(s) without ground truth are treated like missing predictions here (imputed, with an indicator); "
    "if labelling differs between groups, that alone can predict the attribute"
)
RUNS_POLICY = (
    "one feature row per (run, image); folds are made over unique images (stratified on the target) and every "
    "run-row of an image goes to the same side, so no image is in both training and test"
)

MSG_TARGET = "target: give the name of one attribute column to infer, got {value!r}"
MSG_WITHIN_SAME = "within: '{value}' is the target itself; give another attribute or drop the option"
MSG_WITHIN = "within: give the name of one attribute column, got {value!r}"
MSG_SPLITS = "n_splits: must be an integer >= 2 (number of folds), got {value!r}"
MSG_PERMUTATIONS = "n_permutations: must be an integer >= 0, got {value!r}"
MSG_REPEATS = "n_repeats: must be an integer >= 1 (importance shuffles per keypoint and fold), got {value!r}"
MSG_SEED = "seed: must be an integer >= 0, got {value!r}"
MSG_N_JOBS = "n_jobs: must be None or a non-zero integer (-1 = all cores), got {value!r}"
MSG_ESTIMATOR = "estimator: {name} is not a scikit-learn classifier; give e.g. RandomForestClassifier()"
MSG_METADATA_WITH_STUDY = "metadata: a prepared Study already holds the metadata; pass metadata=None"
MSG_NOT_IN_STUDY = (
    "{role} '{name}' is not an attribute of this study (it has: {known}); prepare the study with that attribute"
)
MSG_ONE_CLASS = (
    "target '{target}' has a single class ({cls!r}){where}; inference needs two or more classes: "
    "drop «within» or check the metadata"
)
MSG_SMALL_CLASS = (
    "target '{target}': class '{cls}' has {n} image(s){where}, fewer than the {k} folds; "
    "use «n_splits» {fix} or fewer, or merge small classes"
)
MSG_TOO_FEW_FOR_TWO = (
    "target '{target}': class '{cls}' has {n} image(s){where}; cross-validation needs at least 2 per class: "
    "merge small classes{drop}"
)
MSG_NOTHING_INFORMATIVE = "no keypoint is informative"
MSG_PERMUTATION_TEST = "permutation_test: must be one of {choices}, got {value!r}"
MSG_STOP_AFTER = "stop_after: must be None or an integer >= 1, got {value!r}"
MSG_MERGE_RULE = "merge rule: must be one of {choices}, got {value!r}"

# "chained" (default): fold k is predicted by a model fitted on folds 0..k-1 only, and tested by permuting its
# held-out labels between its images; each link's p-value is exact given the earlier folds' labels, so Fisher's
# combination of the K-1 links is valid: K-1 extra fits, no refit per permutation (docs/privacy.md).
# "per-fold": one exact permutation test per fold (the fold's forest fixed, its held-out labels permuted
# between its images), the fold p-values merged by a rule valid under any dependence (DEFAULT_MERGE): no refit,
# but much less power (the merging pays for the unknown dependence between folds).
# "refit": every permutation refits the whole cross-validation (the test of scikit-learn's
# permutation_test_score), stopped early by Besag-Clifford. "fixed-model": the forests fitted on the true labels
# stay fixed and the mean over folds is compared with the mean of the within-fold nulls: no refit, but mildly
# anti-conservative (a fold's labels also trained the other folds' forests; docs/privacy.md).
PERMUTATION_TESTS = ("chained", "per-fold", "refit", "fixed-model")
DEFAULT_PERMUTATION_TEST = "chained"
MERGE_RULES = ("twice-mean", "bonferroni", "geometric", "harmonic", "max")
PERMUTATION_TEST_TEXT = {
    "per-fold": ("an exact permutation test in each fold (the fold's fitted model fixed, its held-out labels "
                 "permuted between its test images), the fold p-values merged by {merge} (valid under any "
                 "dependence between folds; Vovk & Wang 2020)"),
    "fixed-model": ("held-out labels permuted between the test images of each fold, fitted models fixed; a fast "
                    "screen, mildly anti-conservative because a fold's labels also trained the other folds' models "
                    "(docs/privacy.md)"),
    "chained": ("folds chained: fold k is predicted by a model fitted on folds 1..k-1 only and tested by an exact "
                "permutation of its held-out labels between its images (statistic: {chain}); the K-1 sequentially "
                "valid p-values are combined by Fisher's method"),
    "refit": ("labels permuted between images and the whole cross-validation refitted for each permutation; "
              "an analysis stops once stop_after permuted scores reached the observed one (Besag-Clifford)"),
}
# The chained test's statistic per link: "probability" (balanced mean predicted probability of the true class; uses
# the forest's graded output) or "balanced_accuracy" (chosen by simulated power; docs/privacy.md).
CHAIN_STATISTIC = "probability"
CHAIN_TEXT = {"probability": "the balanced mean predicted probability of the true class",
              "balanced_accuracy": "balanced accuracy"}
# How the per-fold test merges its fold p-values (chosen by simulated power; docs/privacy.md).
DEFAULT_MERGE = "bonferroni"
MERGE_TEXT = {"twice-mean": "twice their mean", "bonferroni": "the number of folds times their minimum",
              "geometric": "e times their geometric mean", "harmonic": "e log K times their harmonic mean",
              "max": "their maximum"}
# Scores of a permuted labelling equal to the observed one count as ">=" (ties up to rounding).
_TIE = 1e-12
# Besag-Clifford: the refit test of an analysis stops once this many permuted scores reached the observed one.
DEFAULT_STOP_AFTER = 10
# Refit permutations run in rounds of this many per analysis between stopping checks.
_REFIT_ROUND = 20


# -- inputs ---------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_options(target: object, within: object, n_splits: Any, n_permutations: Any, n_repeats: Any, seed: Any,
                   n_jobs: Any, estimator: Any, permutation_test: object = DEFAULT_PERMUTATION_TEST) -> None:
    from sklearn.base import is_classifier

    if permutation_test not in PERMUTATION_TESTS:
        raise InputError(MSG_PERMUTATION_TEST.format(choices=", ".join(PERMUTATION_TESTS), value=permutation_test))
    if not isinstance(target, str) or not target.strip():
        raise InputError(MSG_TARGET.format(value=target))
    if within is not None:
        if not isinstance(within, str) or not within.strip():
            raise InputError(MSG_WITHIN.format(value=within))
        if within == target:
            raise InputError(MSG_WITHIN_SAME.format(value=within))
    if not _is_int(n_splits) or n_splits < 2:
        raise InputError(MSG_SPLITS.format(value=n_splits))
    if not _is_int(n_permutations) or n_permutations < 0:
        raise InputError(MSG_PERMUTATIONS.format(value=n_permutations))
    if not _is_int(n_repeats) or n_repeats < 1:
        raise InputError(MSG_REPEATS.format(value=n_repeats))
    if not _is_int(seed) or seed < 0:
        raise InputError(MSG_SEED.format(value=seed))
    if n_jobs is not None and (not _is_int(n_jobs) or n_jobs == 0):
        raise InputError(MSG_N_JOBS.format(value=n_jobs))
    if estimator is not None and not is_classifier(estimator):
        raise InputError(MSG_ESTIMATOR.format(name=type(estimator).__name__))


def default_estimator(*, n_estimators: int = DEFAULT_TREES, seed: int | None = 0) -> Any:
    """The paper's classifier: a random forest (``n_jobs=1``; parallelism is over folds and permutations)."""
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=n_estimators, random_state=seed, n_jobs=1)


def _pipeline(estimator: Any, seed: int) -> Any:
    """Fold-local median imputation with missing indicators, then the classifier."""
    from sklearn.base import clone
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline

    est = clone(estimator)
    params = est.get_params(deep=False)
    if "random_state" in params and params["random_state"] is None:
        est.set_params(random_state=seed)  # reproducible with --seed
    imputer = SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)
    return Pipeline([("impute", imputer), ("classifier", est)])


def row_folds(row_image: ArrayLike, row_labels: ArrayLike, *, n_splits: int = 5,
              seed: int | None = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cross-validation folds over rows that never split an image.

    The unique images are split by :func:`fairlandmark.stats.folds.stratified_image_folds`
    (stratified on each image's label); each row then follows its image.

    Parameters
    ----------
    row_image : array-like of str, shape (N,)
        Image id of each row (one row per run and image).
    row_labels : array-like, shape (N,)
        Target label of each row; all rows of an image must share it.
    n_splits : int, default 5
    seed : int, default 0

    Returns
    -------
    list of (ndarray, ndarray)
        ``(train_rows, test_rows)`` row indices per fold, usable as the ``cv``
        argument of scikit-learn's ``cross_validate``.

    Examples
    --------
    >>> folds = row_folds(["a", "a", "b", "b", "c", "c", "d", "d"], [0, 0, 0, 0, 1, 1, 1, 1], n_splits=2)
    >>> [sorted(set(test // 2)) == sorted(set(test // 2) - set(train // 2)) for train, test in folds]
    [True, True]
    """
    row_image = np.asarray(row_image).astype(str)
    row_labels = np.asarray(row_labels)
    images, first, inverse = np.unique(row_image, return_index=True, return_inverse=True)
    image_labels = row_labels[first]
    if not np.array_equal(image_labels[inverse], row_labels):
        raise InputError("row_labels: every row of an image must have the same label")
    out = []
    for _, test_ids in stratified_image_folds(images, image_labels, n_splits=n_splits, seed=seed):
        test_mask = np.isin(row_image, test_ids)
        out.append((np.flatnonzero(~test_mask), np.flatnonzero(test_mask)))
    return out


# -- work units (module level so that worker processes can run them) ---------------


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence metric warnings of degenerate permuted folds (a class absent from a test part)."""
    from sklearn.exceptions import UndefinedMetricWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.filterwarnings("ignore", message=".*y_pred contains classes not in y_true.*")
        yield


def _auc(model: Any, X: np.ndarray, y: np.ndarray, n_classes: int) -> float:
    from sklearn.metrics import roc_auc_score

    try:
        if hasattr(model, "predict_proba"):
            score = model.predict_proba(X)
        else:
            score = model.decision_function(X)
    except (AttributeError, NotImplementedError):
        return np.nan
    classes = list(model.classes_)
    if len(classes) != n_classes or len(np.unique(y)) != n_classes:
        return np.nan
    if n_classes == 2:
        return float(roc_auc_score(y, score[:, 1] if np.ndim(score) == 2 else score))
    return float(roc_auc_score(y, score, multi_class="ovr", average="macro", labels=classes))


def permutation_importance_batched(model: Any, X: np.ndarray, y: np.ndarray, *, n_repeats: int, seed: int,
                                   max_cells: int = 1 << 22) -> np.ndarray:
    """Mean permutation importance (drop in balanced accuracy), batched into few ``predict`` calls.

    The same numbers as :func:`sklearn.inspection.permutation_importance`
    with ``scoring="balanced_accuracy"``, ``random_state=seed`` (the same
    shuffles: one ``RandomState`` stream per column, each repeat shuffling the
    already shuffled column), but every shuffled copy of ``X`` is stacked and
    predicted in a handful of calls instead of one per (column, repeat): a
    forest's per-call overhead is paid once per block. Rows are predicted
    independently, so the predictions are the same.

    Parameters
    ----------
    model : fitted scikit-learn classifier (or pipeline)
    X : ndarray, shape (n, F)
    y : ndarray, shape (n,)
    n_repeats : int
    seed : int
    max_cells : int, default 2**22
        Upper bound on the cells of one stacked block (memory).

    Returns
    -------
    ndarray, shape (F,)
        ``importances_mean`` of scikit-learn's result.

    Examples
    --------
    >>> from sklearn.tree import DecisionTreeClassifier
    >>> X = np.array([[0.0, 5.0], [1.0, 5.0], [0.0, 6.0], [1.0, 6.0]] * 5)
    >>> y = X[:, 0].astype(int)
    >>> imp = permutation_importance_batched(DecisionTreeClassifier().fit(X, y), X, y, n_repeats=3, seed=0)
    >>> bool(imp[0] > 0), float(imp[1])
    (True, 0.0)
    """
    n, n_features = X.shape
    stream = np.random.RandomState(np.random.RandomState(seed).randint(np.iinfo(np.int32).max + 1))
    step = np.arange(n)
    order = np.arange(n)
    orders = []  # row order of a column after each repeat's shuffle (cumulative, as scikit-learn shuffles)
    for _ in range(n_repeats):
        stream.shuffle(step)
        order = order[step]
        orders.append(order)
    shuffled = X[np.array(orders, dtype=np.int64).reshape(n_repeats, n)]  # (repeats, n, F)
    classes = np.asarray(model.classes_)
    y_index = np.searchsorted(classes, y)
    support = np.bincount(y_index, minlength=len(classes)).astype(np.float64)
    present = support > 0

    def score(pred: np.ndarray) -> np.ndarray:  # (B, n) predictions -> balanced accuracy per block row
        hit = pred == classes[y_index][None, :]
        hits = np.stack([hit[:, y_index == c].sum(axis=1) for c in np.flatnonzero(present)], axis=1)
        return np.mean(hits / support[present][None, :], axis=1)

    with _quiet():
        baseline = score(np.asarray(model.predict(X))[None, :])[0]
        per_block = max(1, max_cells // max(1, n * n_features * n_repeats))
        permuted = np.empty((n_features, n_repeats))
        for start in range(0, n_features, per_block):
            cols = np.arange(start, min(n_features, start + per_block))
            stacked = np.broadcast_to(X, (len(cols), n_repeats, n, n_features)).copy()  # (cols, repeats, n, F)
            # column j of block (j, r) in the row order of repeat r
            block = np.arange(len(cols))[:, None]
            stacked[block, :, :, cols[:, None]] = shuffled[:, :, cols].transpose(2, 0, 1)[:, None]
            pred = np.asarray(model.predict(stacked.reshape(-1, n_features))).reshape(len(cols) * n_repeats, n)
            permuted[start:start + len(cols)] = score(pred).reshape(len(cols), n_repeats)
    return np.mean(baseline - permuted, axis=1)


def _observed_fold(pipeline: Any, X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray,
                   n_classes: int, n_repeats: int, seed: int) -> dict[str, Any]:
    """Fit one fold with the true labels: every score plus permutation importance."""
    from sklearn.base import clone
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    with _quiet():
        model = clone(pipeline).fit(X[train], y[train])
        pred = model.predict(X[test])
        importance = permutation_importance_batched(model, X[test], y[test], n_repeats=n_repeats, seed=seed)
        return {
            "accuracy": float(accuracy_score(y[test], pred)),
            "balanced_accuracy": float(balanced_accuracy_score(y[test], pred)),
            "roc_auc": _auc(model, X[test], y[test], n_classes),
            "importance": importance.astype(float),
            "test_pred": np.asarray(pred),
        }


def _chain_predict(pipeline: Any, X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray,
                   n_classes: int) -> np.ndarray:
    """Held-out predictions of one link of the chained test (a model fitted on the earlier folds only).

    Class probabilities, one column per class of the analysis (CHAIN_STATISTIC "probability", when the classifier
    has ``predict_proba``), else the predicted class index.
    """
    from sklearn.base import clone

    with _quiet():
        model = clone(pipeline).fit(X[train], y[train])
        if CHAIN_STATISTIC == "probability" and hasattr(model, "predict_proba"):
            out = np.zeros((len(test), n_classes))
            out[:, np.asarray(model.classes_, dtype=np.int64)] = model.predict_proba(X[test])
            return out
        return np.asarray(model.predict(X[test]))


def chain_folds(folds: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The links of the chained test: ``(test rows of folds 0..k-1, test rows of fold k)`` for k = 1..K-1.

    Examples
    --------
    >>> f = [(np.array([2, 3]), np.array([0, 1])), (np.array([0, 1]), np.array([2, 3])),
    ...      (np.array([0, 1, 2, 3]), np.array([4]))]
    >>> [(a.tolist(), b.tolist()) for a, b in chain_folds(f)]
    [([0, 1], [2, 3]), ([0, 1, 2, 3], [4])]
    """
    return [(np.concatenate([folds[j][1] for j in range(k)]), folds[k][1]) for k in range(1, len(folds))]


def fisher_sequential_pvalue(p: ArrayLike) -> float:
    """Fisher's combination of sequentially valid p-values.

    Valid when each p-value is super-uniform given the earlier ones (as in the
    chained test, where link ``k`` depends only on the labels of folds
    ``0..k``): ``P(chi2(2K) >= -2 sum log p)``. Not valid under arbitrary
    dependence (use :func:`merge_pvalues` there).

    Examples
    --------
    >>> round(fisher_sequential_pvalue([0.05]), 6)
    0.05
    >>> fisher_sequential_pvalue([1.0, 1.0])
    1.0
    """
    from scipy.stats import chi2

    p = np.asarray(p, dtype=float)
    return float(min(1.0, chi2.sf(-2.0 * np.sum(np.log(p)), 2 * len(p))))


def _null_score(pipeline: Any, X: np.ndarray, y: np.ndarray, folds: Sequence[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean balanced accuracy over the folds for one permuted labelling."""
    from sklearn.base import clone
    from sklearn.metrics import balanced_accuracy_score

    with _quiet():
        scores = []
        for train, test in folds:
            model = clone(pipeline).fit(X[train], y[train])
            scores.append(balanced_accuracy_score(y[test], model.predict(X[test])))
        return float(np.mean(scores))


def balanced_accuracy_by_image(labels: np.ndarray, image_hits: np.ndarray, image_rows: np.ndarray) -> np.ndarray:
    """Balanced accuracy of fixed predictions under many labellings of the images.

    Parameters
    ----------
    labels : ndarray of int, shape (B, I)
        Class of each image, per labelling.
    image_hits : ndarray, shape (I, C)
        Rows of each image predicted as each class.
    image_rows : ndarray, shape (I,)
        Rows of each image.

    Returns
    -------
    ndarray, shape (B,)
        Mean over the classes present of the share of their rows predicted
        right (scikit-learn's ``balanced_accuracy_score`` over rows).

    Examples
    --------
    Two images of one row each, both predicted class 0:

    >>> balanced_accuracy_by_image(np.array([[0, 1], [1, 0]]), np.array([[1, 0], [1, 0]]), np.array([1, 1]))
    array([0.5, 0.5])
    """
    n_classes = image_hits.shape[1]
    onehot = (labels[..., None] == np.arange(n_classes)).astype(np.float64)  # (B, I, C)
    hits = np.einsum("bic,ic->bc", onehot, image_hits.astype(np.float64))
    rows = onehot.transpose(0, 2, 1) @ image_rows.astype(np.float64)  # (B, C)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = hits / rows
    present = rows > 0
    return np.where(present, recall, 0.0).sum(axis=1) / present.sum(axis=1)


def fixed_model_null(folds: Sequence[tuple[np.ndarray, np.ndarray]], test_predictions: Sequence[np.ndarray],
                     y: np.ndarray, image_of_row: np.ndarray, n_permutations: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Null of the mean balanced accuracy with the fitted models fixed.

    In each fold the held-out images' labels are permuted among themselves
    (all rows of an image move together, class counts stay), the held-out
    predictions stay as fitted on the true training labels; the statistic is
    the mean over folds, as observed.

    Parameters
    ----------
    folds : list of (ndarray, ndarray)
        ``(train, test)`` row indices.
    test_predictions : list of ndarray
        Predicted class (index into the classes) of each test row, per fold.
    y : ndarray of int, shape (N,)
        True class of each row.
    image_of_row : ndarray of int, shape (N,)
        Image of each row.
    n_permutations : int
    rng : numpy.random.Generator

    Returns
    -------
    null : ndarray, shape (n_permutations,)
    observed : float
        The statistic for the true labels, computed the same way (for exact
        comparison with the null).
    """
    # The per-fold tests draw fold by fold in this order; their mean over folds is this null. cumsum adds the folds
    # one after the other (mean() may sum pairwise), so the figures do not depend on the number of folds' rounding.
    _, observed, null = fold_permutation_pvalues(folds, test_predictions, y, image_of_row, n_permutations, rng)
    return null.cumsum(axis=1)[:, -1] / len(folds), float(observed.cumsum()[-1] / len(folds))


def fold_permutation_pvalues(folds: Sequence[tuple[np.ndarray, np.ndarray]], test_predictions: Sequence[np.ndarray],
                             y: np.ndarray, image_of_row: np.ndarray, n_permutations: int,
                             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One exact permutation test per fold, the fitted model of the fold fixed.

    Fold ``k``'s model was fitted on the other folds only, so given the
    features and the labels outside fold ``k`` its held-out predictions are
    fixed; under the null (errors carry no information on the target) the
    held-out labels are then a uniformly random arrangement of their multiset
    over the held-out images. Permuting them between the held-out images (all
    rows of an image together) therefore gives an exact p-value per fold:
    ``p_k = (1 + #{null_k >= observed_k}) / (1 + n_permutations)``. The ``K``
    p-values are dependent (a fold's labels trained the other folds' models);
    :func:`merge_pvalues` combines them with a rule valid under any dependence.

    Parameters
    ----------
    folds : list of (ndarray, ndarray)
        ``(train, test)`` row indices.
    test_predictions : list of ndarray
        Predicted class (index into the classes) of each test row, per fold;
        or, shape (rows, classes), the predicted class probabilities: the
        statistic is then the balanced mean probability of the true class
        (per class, the mean over its rows of the probability given to it;
        then the mean over the classes present), which uses the forest's
        graded output and ties less often than balanced accuracy.
    y : ndarray of int, shape (N,)
        True class of each row.
    image_of_row : ndarray of int, shape (N,)
        Image of each row.
    n_permutations : int
    rng : numpy.random.Generator
        Drawn fold by fold; ``null.mean(axis=1)`` is :func:`fixed_model_null`'s
        null (it is computed that way).

    Returns
    -------
    p : ndarray, shape (K,)
        The p-value of each fold.
    observed : ndarray, shape (K,)
        The balanced accuracy of each fold for the true labels.
    null : ndarray, shape (n_permutations, K)
        The permuted balanced accuracies of each fold.

    Examples
    --------
    One fold of four single-row images, predicted perfectly: 1 of the 6
    distinct arrangements of the labels scores as well.

    >>> p, obs, null = fold_permutation_pvalues([(np.array([], int), np.arange(4))], [np.array([0, 0, 1, 1])],
    ...                                         np.array([0, 0, 1, 1]), np.arange(4), 2000,
    ...                                         np.random.default_rng(0))
    >>> float(obs[0]), round(float(np.mean(null[:, 0] >= 1.0)), 1)
    (1.0, 0.2)
    """
    n_classes = int(max(y.max(), max((p.shape[1] - 1 if p.ndim == 2 else p.max() for p in test_predictions
                                      if len(p)), default=0))) + 1
    null = np.zeros((n_permutations, len(folds)))
    observed = np.zeros(len(folds))
    for k, ((_, test), pred) in enumerate(zip(folds, test_predictions)):
        images, first, inverse = np.unique(image_of_row[test], return_index=True, return_inverse=True)
        image_rows = np.bincount(inverse, minlength=len(images))
        image_hits = np.zeros((len(images), n_classes))
        if np.ndim(pred) == 2:  # class probabilities: summed per image and class
            np.add.at(image_hits, inverse, np.asarray(pred, dtype=np.float64))
        else:
            np.add.at(image_hits, (inverse, np.asarray(pred, dtype=np.int64)), 1.0)
        image_y = y[test][first]
        observed[k] = balanced_accuracy_by_image(image_y[None, :], image_hits, image_rows)[0]
        labels = rng.permuted(np.broadcast_to(image_y, (n_permutations, len(image_y))), axis=1)
        null[:, k] = balanced_accuracy_by_image(labels, image_hits, image_rows)
    p = (1.0 + np.sum(null >= observed - _TIE, axis=0)) / (1.0 + n_permutations)
    return p, observed, null


def merge_pvalues(p: ArrayLike, rule: str = "twice-mean") -> float:
    """Combine p-values that are each valid but arbitrarily dependent into one valid p-value.

    Rules (each valid under any dependence between the p-values; capped at 1):

    * ``"twice-mean"``: ``2 x mean`` (Rüschendorf 1982; Vovk & Wang 2020);
    * ``"bonferroni"``: ``K x min``;
    * ``"geometric"``: ``e x geometric mean`` (Vovk & Wang 2020);
    * ``"harmonic"``: ``e log K x harmonic mean`` for ``K >= 3`` (Vovk & Wang
      2020; ``2 x harmonic mean`` for ``K = 2``);
    * ``"max"``: the largest (every p-value must be small).

    Examples
    --------
    >>> merge_pvalues([0.01, 0.02, 0.03])
    0.04
    >>> merge_pvalues([0.01, 0.02, 0.03], "bonferroni")
    0.03
    >>> merge_pvalues([0.4, 0.9], "twice-mean")
    1.0
    """
    p = np.asarray(p, dtype=float)
    k = len(p)
    if rule == "twice-mean":
        value = 2.0 * p.mean()
    elif rule == "bonferroni":
        value = k * p.min()
    elif rule == "geometric":
        value = np.e * np.exp(np.mean(np.log(p)))
    elif rule == "harmonic":
        value = (np.e * np.log(k) if k >= 3 else 2.0) * k / np.sum(1.0 / p)
    elif rule == "max":
        value = p.max()
    else:
        raise InputError(MSG_MERGE_RULE.format(choices=", ".join(MERGE_RULES), value=rule))
    return float(min(1.0, value))


def besag_clifford_pvalue(null: ArrayLike, observed: float, n_permutations: int,
                          stop_after: int | None) -> tuple[float, int, bool]:
    """Sequential Monte-Carlo p-value (Besag & Clifford, 1991) of ``observed`` against ``null`` in draw order.

    If the ``stop_after``-th null score ``>= observed`` comes at draw ``L``, the
    p-value is ``stop_after / L`` (the draws after ``L`` are not needed);
    otherwise, after all ``n_permutations`` draws with ``k`` such scores, it is
    the usual ``(1 + k) / (1 + n_permutations)``. Both are valid p-values.

    Returns
    -------
    p : float
    n_used : int
        Draws the p-value rests on.
    stopped : bool
        Whether it stopped early.

    Examples
    --------
    >>> besag_clifford_pvalue(np.array([0.9, 0.1, 0.8, 0.7]), 0.6, 4, stop_after=2)
    (0.6666666666666666, 3, True)
    >>> besag_clifford_pvalue(np.array([0.1, 0.2, 0.3]), 0.6, 3, stop_after=2)
    (0.25, 3, False)
    """
    null = np.asarray(null, dtype=float)
    hits = np.flatnonzero(null >= observed - _TIE)
    if stop_after is not None and len(hits) >= stop_after:
        n_used = int(hits[stop_after - 1]) + 1
        return stop_after / n_used, n_used, True
    return (1.0 + len(hits)) / (1.0 + n_permutations), len(null), False


def _refit_null(levels: list[_Level], pipeline: Any, seed: int, n_permutations: int, stop_after: int | None,
                n_jobs: int | None, bar: Any, names: dict[tuple[int, str], Any]) -> None:
    """Refit permutations in rounds; an analysis stops once its p-value is clearly above alpha (Besag-Clifford).

    Permutation p of analysis li is always the p-th draw of ``default_rng([seed, li])``, and the rounds do not
    depend on ``n_jobs``, so the result is the same for any number of workers.
    """
    streams = {li: np.random.default_rng([seed, li]) for li in range(len(levels))}
    observed = {li: float(np.mean([f["balanced_accuracy"] for f in lev.fold_scores])) for li, lev in enumerate(levels)}
    drawn = {li: 0 for li in range(len(levels))}
    active = set(drawn)
    while active:
        tasks: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        owners: list[tuple[int, int]] = []
        for li in sorted(active):
            lev = levels[li]
            for p in range(drawn[li], min(n_permutations, drawn[li] + _REFIT_ROUND)):
                y_perm = streams[li].permutation(lev.image_y)[lev.image_of_row]  # shuffle between images
                tasks.append((_null_score, (pipeline, lev.X, y_perm, lev.folds)))
                owners.append((li, p))

        def done(i: int, result: Any) -> None:
            li, p = owners[i]
            levels[li].null[p] = result
            bar.advance(names[li, "null"])

        _run_tasks(tasks, n_jobs, done)
        for li in sorted(active):
            lev = levels[li]
            drawn[li] = min(n_permutations, drawn[li] + _REFIT_ROUND)
            p_value, n_used, stopped = besag_clifford_pvalue(lev.null[:drawn[li]], observed[li], n_permutations,
                                                             stop_after)
            if stopped or drawn[li] >= n_permutations:
                lev.null = lev.null[:n_used]
                lev.p_value = p_value
                bar.advance(names[li, "null"], n_permutations - drawn[li])
                active.discard(li)


# -- progress -------------------------------------------------------------------


def _run_tasks(tasks: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]], n_jobs: int | None,
               on_done: Callable[[int, Any], None]) -> None:
    """Run ``(function, args)`` tasks in order, calling ``on_done(i, result)`` as each finishes."""
    if n_jobs is None or n_jobs == 1 or len(tasks) <= 1:
        for i, (fn, args) in enumerate(tasks):
            on_done(i, fn(*args))
        return
    from joblib import Parallel, delayed

    try:
        runner = Parallel(n_jobs=n_jobs, return_as="generator")  # joblib >= 1.3: results as they come
    except TypeError:  # pragma: no cover - older joblib: all results at the end
        runner = Parallel(n_jobs=n_jobs)
    for i, result in enumerate(runner(delayed(fn)(*args) for fn, args in tasks)):
        on_done(i, result)


# -- the analysis ---------------------------------------------------------------


@dataclass
class _Level:
    """One analysis: all rows, or the rows of one level of ``within``."""

    label: str | None  # "sex=F", or a binned group's own name such as "age<14"; None: all rows
    level: str | None  # the group of ``within``
    rows: np.ndarray  # study row indices
    classes: list  # class names present, in order
    y: np.ndarray  # class index per row (into classes)
    images: np.ndarray  # unique image ids
    image_y: np.ndarray  # class index per image
    image_of_row: np.ndarray  # index into images per row
    folds: list = field(default_factory=list)  # (train, test) indices into rows
    fold_scores: list = field(default_factory=list)
    null: np.ndarray = field(default_factory=lambda: np.empty(0))  # set by attribute_inference
    X: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))  # features of the rows
    p_value: float | None = None  # set by the sequential refit test
    observed_null_scale: float | None = None  # the observed statistic as the fixed-model null computes it
    fold_p: np.ndarray | None = None  # per-fold exact p-values of the per-fold and chained tests
    chain_preds: list = field(default_factory=list)  # held-out predictions of the chained test's links
    min_p: float | None = None  # the smallest p-value the test can give, where not 1 / (1 + n_permutations)


def _levels(study: Study, target: str, within: str | None, n_splits: int) -> list[_Level]:
    codes = study.coding.base_codes
    known = ", ".join(codes)
    for role, name in (("target", target), ("within", within)):
        if name is not None and name not in codes:
            raise InputError(MSG_NOT_IN_STUDY.format(role=role, name=name, known=known))
    names = study.coding.groups[target]
    if within is None:
        parts: list[tuple[str | None, str | None, np.ndarray]] = [(None, None, np.arange(len(study.row_image)))]
    else:
        wcodes = codes[within]
        parts = [(g if within in g else f"{within}={g}", g, np.flatnonzero(wcodes == i))
                 for i, g in enumerate(study.coding.groups[within])]
    levels = []
    for label, level, rows in parts:
        if len(rows) == 0:
            continue
        where = f" within {label}" if label else ""
        row_image = np.asarray(study.row_image)[rows].astype(str)
        images, first, image_of_row = np.unique(row_image, return_index=True, return_inverse=True)
        raw = codes[target][rows]
        present = np.unique(raw)
        if len(present) < 2:
            raise InputError(MSG_ONE_CLASS.format(target=target, cls=names[present[0]], where=where))
        y = np.searchsorted(present, raw)
        image_y = y[first]
        counts = np.bincount(image_y, minlength=len(present))
        j = int(np.argmin(counts))
        if counts[j] < n_splits:
            cls, n = names[present[j]], int(counts[j])
            if n < 2:
                drop = f" or drop «within» {within}" if within else ""
                raise InputError(MSG_TOO_FEW_FOR_TWO.format(target=target, cls=cls, n=n, where=where, drop=drop))
            raise InputError(MSG_SMALL_CLASS.format(target=target, cls=cls, n=n, where=where, k=n_splits, fix=n))
        levels.append(_Level(label=label, level=level, rows=rows, classes=[names[c] for c in present], y=y,
                             images=images, image_y=image_y, image_of_row=image_of_row.astype(np.int64)))
    return levels


def attribute_inference(predictions: Study | pd.DataFrame | str | os.PathLike[str],
                        metadata: pd.DataFrame | str | os.PathLike[str] | None = None, *, target: str,
                        within: str | None = None, estimator: Any = None, n_splits: int = 5,
                        n_permutations: int = DEFAULT_PERMUTATIONS, n_repeats: int = DEFAULT_REPEATS, seed: int = 0,
                        n_jobs: int | None = None, progress: object = None, spacing_mm: float | None = None,
                        wrist_width: WristWidth | str | tuple[object, object, float] | None = None,
                        bins: Mapping[str, Sequence[float]] | None = None,
                        permutation_test: str = DEFAULT_PERMUTATION_TEST,
                        stop_after: int | None = DEFAULT_STOP_AFTER,
                        spacing_from_dicom: str | os.PathLike[str] | None = None,
                        dicom_match: str = "stem", encoding: str | None = None,
                        emit_warnings: bool = True) -> PrivacyResult:
    """Predict a sensitive attribute from each image's per-keypoint errors.

    Parameters
    ----------
    predictions : pandas.DataFrame, path, or Study
        Predictions in the long format of :func:`fairlandmark.audit`, or a
        :class:`~fairlandmark.audit.Study` already prepared (then ``metadata``
        is None and the study must hold ``target`` and ``within``).
    metadata : pandas.DataFrame or path, optional
        ``image_id`` plus attribute columns.
    target : str
        Attribute to infer, e.g. ``"age_group"``.
    within : str, optional
        Repeat the analysis inside each level of this attribute (e.g. infer
        age within each sex), so the two attributes don't mix.
    estimator : scikit-learn classifier, optional
        Default ``RandomForestClassifier(n_estimators=100, random_state=seed)``.
        It is cloned; a ``random_state`` left at None is set to ``seed``.
    n_splits : int, default 5
        Folds of the stratified cross-validation over images.
    n_permutations : int, default 200
        Label permutations for the p-value (0: no test).
    n_repeats : int, default 5
        Shuffles per keypoint and fold for the permutation importance.
    seed : int, default 0
        Seeds folds, permutations, the classifier and the importance; the same
        seed gives the same numbers bit for bit, for any ``n_jobs``.
    n_jobs : int, optional
        Parallel workers over folds and permutations (-1: all cores).
    progress : bool or rich.progress.Progress, optional
        Show progress bars (True: on stderr).
    spacing_mm, wrist_width, bins, spacing_from_dicom, dicom_match
        As in :func:`fairlandmark.audit`.
    permutation_test : {"chained", "per-fold", "refit", "fixed-model"}, default "chained"
        "chained": fold ``k`` (k >= 2) is predicted by a model fitted on folds
        ``1..k-1`` only and tested by permuting its held-out labels between
        its images; the ``K - 1`` p-values are each exact given the earlier
        folds' labels, and combined by Fisher's method
        (:func:`chain_folds`, :func:`fisher_sequential_pvalue`): ``K - 1``
        extra fits, no refit per permutation. The reported scores stay those
        of the usual cross-validation.
        "per-fold": in each fold, the fitted model stays fixed and the
        held-out labels are permuted between the fold's test images, an exact
        test per fold; the fold p-values are merged by Bonferroni (K x the
        smallest), valid under any dependence between folds (no refit: seconds;
        :func:`fold_permutation_pvalues`, :func:`merge_pvalues`).
        "refit": each permutation refits the whole cross-validation, as
        scikit-learn's ``permutation_test_score``. "fixed-model": the mean
        over folds against the mean of the within-fold nulls, a fast screen
        that is mildly anti-conservative (docs/privacy.md).
    stop_after : int or None, default 10
        Refit test only: stop an analysis once this many permuted scores
        reached the observed one (Besag-Clifford; its p-value is then
        ``stop_after / draws``, clearly above alpha). None runs all
        permutations.
    encoding : str, optional
        Text encoding of CSV inputs.
    emit_warnings : bool, default True
        Also issue the notes of ``PrivacyResult.warnings`` as
        :class:`fairlandmark.exceptions.FairlandmarkWarning`.

    Returns
    -------
    PrivacyResult

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> ids = [f"{i:03d}" for i in range(60)]
    >>> old = np.arange(60) % 2 == 1
    >>> preds = pd.DataFrame({"image_id": np.repeat(ids, 3), "keypoint": np.tile([1, 2, 3], 60),
    ...                       "error_mm": rng.gamma(2.0, 1.0, 180) + np.repeat(np.where(old, 2.0, 0.0), 3)
    ...                       * np.tile([1.0, 0.0, 0.0], 60)})
    >>> meta = pd.DataFrame({"image_id": ids, "age_group": np.where(old, "old", "young")})
    >>> res = attribute_inference(preds, meta, target="age_group", n_permutations=20,
    ...                           estimator=default_estimator(n_estimators=20))
    >>> float(res.scores["balanced_accuracy"].iloc[0]) > 0.7
    True
    >>> int(res.importance["keypoint"].iloc[0])
    1
    """
    _check_options(target, within, n_splits, n_permutations, n_repeats, seed, n_jobs, estimator, permutation_test)
    if stop_after is not None and (not _is_int(stop_after) or stop_after < 1):
        raise InputError(MSG_STOP_AFTER.format(value=stop_after))

    if isinstance(predictions, Study):
        if metadata is not None:
            raise InputError(MSG_METADATA_WITH_STUDY)
        study = predictions
    else:
        attributes = [target] + ([within] if within else [])
        # metadata None without a Study is an InputError of read_table ("metadata: expected a pandas DataFrame").
        study = prepare_study(predictions, metadata,  # type: ignore[arg-type]
                              attributes=attributes, spacing_mm=spacing_mm, encoding=encoding,
                              wrist_width=wrist_width, bins=bins, intersection=False,
                              metadata_source=os.fspath(metadata) if isinstance(metadata, (str, os.PathLike)) else None,
                              spacing_from_dicom=spacing_from_dicom, dicom_match=dicom_match, progress=progress)
    levels = _levels(study, target, within, n_splits)
    estimator = default_estimator(seed=seed) if estimator is None else estimator
    pipeline = _pipeline(estimator, seed)

    tasks: list[tuple[Any, tuple]] = []
    owners: list[tuple] = []
    for li, lev in enumerate(levels):
        X = np.asarray(study.errors, dtype=float)[lev.rows]
        lev.folds = row_folds(lev.images[lev.image_of_row], lev.y, n_splits=n_splits, seed=seed)
        lev.fold_scores = [None] * n_splits
        lev.null = np.full(n_permutations, np.nan)
        lev.X = X
        for f, (train, test) in enumerate(lev.folds):
            tasks.append((_observed_fold, (pipeline, X, lev.y, train, test, len(lev.classes), n_repeats, seed)))
            owners.append((li, "fold", f))
        if permutation_test == "chained" and n_permutations:
            lev.chain_preds = [None] * (n_splits - 1)
            for f, (train, test) in enumerate(chain_folds(lev.folds)):
                tasks.append((_chain_predict, (pipeline, X, lev.y, train, test, len(lev.classes))))
                owners.append((li, "chain", f))

    with progress_bar(progress) as bar:
        names: dict[tuple[int, str], Any] = {}
        for li, lev in enumerate(levels):
            where = f" ({lev.label})" if lev.label else ""
            names[li, "fold"] = bar.add_task(f"cross-validation + importance{where}", total=n_splits)
            if n_permutations and permutation_test == "chained":
                names[li, "chain"] = bar.add_task(f"chained folds{where}", total=n_splits - 1)
            if n_permutations and permutation_test == "refit":
                names[li, "null"] = bar.add_task(f"permutation test{where}", total=n_permutations)

        def done(i: int, result: Any) -> None:
            li, kind, j = owners[i]
            (levels[li].fold_scores if kind == "fold" else levels[li].chain_preds)[j] = result
            bar.advance(names[li, kind])

        _run_tasks(tasks, n_jobs, done)
        if permutation_test == "refit" and n_permutations:
            _refit_null(levels, pipeline, seed, n_permutations, stop_after, n_jobs, bar, names)

    if permutation_test == "per-fold" and n_permutations:
        for li, lev in enumerate(levels):
            preds = [f["test_pred"] for f in lev.fold_scores]
            fold_p, fold_observed, fold_null = fold_permutation_pvalues(
                lev.folds, preds, lev.y, lev.image_of_row, n_permutations, np.random.default_rng([seed, li]))
            lev.fold_p = fold_p
            lev.p_value = merge_pvalues(fold_p, DEFAULT_MERGE)
            lev.min_p = merge_pvalues(np.full(len(lev.folds), 1.0 / (1 + n_permutations)), DEFAULT_MERGE)
            lev.null, lev.observed_null_scale = fold_null.mean(axis=1), float(fold_observed.mean())
    if permutation_test == "chained" and n_permutations:
        for li, lev in enumerate(levels):
            links = chain_folds(lev.folds)
            link_p, link_observed, link_null = fold_permutation_pvalues(
                links, lev.chain_preds, lev.y, lev.image_of_row, n_permutations, np.random.default_rng([seed, li]))
            lev.fold_p = np.concatenate([[np.nan], link_p])
            lev.p_value = fisher_sequential_pvalue(link_p)
            lev.min_p = fisher_sequential_pvalue(np.full(len(links), 1.0 / (1 + n_permutations)))
            lev.null, lev.observed_null_scale = link_null.mean(axis=1), float(link_observed.mean())
            lev.chain_preds = []
    if permutation_test == "fixed-model" and n_permutations:
        for li, lev in enumerate(levels):
            preds = [f.pop("test_pred") for f in lev.fold_scores]
            lev.null, lev.observed_null_scale = fixed_model_null(lev.folds, preds, lev.y, lev.image_of_row,
                                                                 n_permutations, np.random.default_rng([seed, li]))
    for lev in levels:
        for f in lev.fold_scores:
            f.pop("test_pred", None)

    notes = list(study.notes)
    n_unlabelled = 0 if study.labelled is None else int((~study.labelled).sum())
    n_missing = int(np.isnan(study.errors).sum()) - n_unlabelled
    if n_missing:
        notes.append(f"{n_missing} missing prediction(s): {MISSING_POLICY}")
    if n_unlabelled:
        notes.append(MSG_UNLABELLED_PRIVACY.format(n=n_unlabelled))
    if emit_warnings:  # the notes are PrivacyResult.warnings; the command line prints them itself
        for text in notes:
            warnings.warn(FairlandmarkWarning(text), stacklevel=2)
    settings = {
        "target": target, "within": within, "estimator": repr(estimator), "n_splits": n_splits,
        "n_permutations": n_permutations, "n_repeats": n_repeats, "seed": seed,
        "permutation_test": permutation_test,
        "permutation_test_description": PERMUTATION_TEST_TEXT[permutation_test].format(
            merge=MERGE_TEXT[DEFAULT_MERGE],
            chain=CHAIN_TEXT[CHAIN_STATISTIC if hasattr(estimator, "predict_proba") else "balanced_accuracy"]),
        "merge_rule": DEFAULT_MERGE if permutation_test == "per-fold" else None,
        "stop_after": stop_after if permutation_test == "refit" else None,
        "score": "balanced_accuracy", "missing_policy": MISSING_POLICY, "runs_policy": RUNS_POLICY,
    }
    return PrivacyResult(study=study, levels=levels, settings=settings, notes=notes)


# -- result -----------------------------------------------------------------------


def _scalar_mean_std(values: np.ndarray | list[Any]) -> tuple[float, float]:
    mean, std = mean_std_over_runs(values)
    return float(mean), float(std)


def _fmt_p(p: float | None) -> str:
    if p is None or not np.isfinite(p):
        return "no permutation test"
    return f"p = {p:.2g}"




class PrivacyResult:
    """Result of :func:`attribute_inference`: tidy tables and JSON, computed once.

    Attributes
    ----------
    scores : pandas.DataFrame
        One row per analysis (one, or one per level of ``within``): images,
        rows, classes, majority rate, chance, accuracy, balanced accuracy and
        ROC AUC (mean and std over folds), the permutation null (mean, std) and
        the p-value.
    folds : pandas.DataFrame
        One row per (analysis, fold): train/test images and rows and the scores.
    importance : pandas.DataFrame
        One row per (analysis, keypoint): permutation importance (drop in
        balanced accuracy, mean and std over folds) and its rank (1 = most
        informative), sorted by rank.
    null_scores : dict of str -> ndarray
        Permutation null of the mean balanced accuracy, per analysis.
    risk_lines : list of str
        One plain-words line per analysis; ``risk_line`` joins them.
    warnings : list of str
        Notes for the user; ``notes`` holds them with options still marked.
    """

    def __init__(self, *, study: Study, levels: list[_Level], settings: Mapping[str, Any],
                 notes: Iterable[str]) -> None:
        self.study = study
        self._levels = levels
        self.settings = dict(settings)
        self.target = settings["target"]
        self.within = settings["within"]
        self.notes = list(notes)  # options still marked; `warnings` spells them by API name

    @property
    def warnings(self) -> list[str]:
        """The notes for the user, options named as a Python caller types them."""
        return [spell_options(text) for text in self.notes]

    @property
    def unit(self) -> str:
        return self.study.unit

    @property
    def keypoints(self) -> list[Any]:
        return [k.item() if hasattr(k, "item") else k for k in self.study.keypoints]

    def _name(self, lev: _Level) -> str:
        return lev.label if lev.label is not None else "all"

    @cached_property
    def scores(self) -> pd.DataFrame:
        rows = []
        for lev in self._levels:
            fs = lev.fold_scores
            y = lev.y
            counts = np.bincount(y, minlength=len(lev.classes))
            image_counts = np.bincount(lev.image_y, minlength=len(lev.classes))
            observed = float(np.mean([f["balanced_accuracy"] for f in fs]))
            n_perm = len(lev.null)
            # Compare like with like: the fixed-model null recomputes the observed score with its own arithmetic.
            reference = observed if lev.observed_null_scale is None else lev.observed_null_scale
            p = (1 + np.sum(lev.null >= reference - _TIE)) / (1 + n_perm) if n_perm else np.nan
            if lev.p_value is not None:  # the refit test's Besag-Clifford p-value
                p = lev.p_value
            null_mean, null_std = _scalar_mean_std(lev.null) if n_perm else (np.nan, np.nan)
            row = {"target": self.target, "within": self.within,
                   "level": lev.level, "analysis": self._name(lev),
                   "n_images": len(lev.images), "n_rows": len(lev.rows), "n_classes": len(lev.classes),
                   "classes": list(lev.classes),
                   "images_by_class": dict(zip(lev.classes, image_counts.tolist())),
                   "n_missing": int(np.isnan(self.study.errors[lev.rows]).sum()),
                   "majority_rate": float(counts.max() / counts.sum()), "chance": 1.0 / len(lev.classes)}
            for metric in ("accuracy", "balanced_accuracy", "roc_auc"):
                row[metric], row[f"{metric}_std"] = _scalar_mean_std([f[metric] for f in fs])
            # What the p-value compares against the null: the cross-validated balanced accuracy for the refit test;
            # the test's own statistic for the others (the chained links' mean probability, the folds' mean).
            row["test_statistic"] = float(reference)
            min_p = (lev.min_p if lev.min_p is not None else 1.0 / (1 + n_perm)) if n_perm else np.nan
            row.update({"null_mean": null_mean, "null_std": null_std, "p_value": float(p),
                        "n_permutations": n_perm, "min_p_value": float(min_p), "leak": bool(n_perm and p <= ALPHA)})
            rows.append(row)
        return pd.DataFrame(rows)

    @cached_property
    def folds(self) -> pd.DataFrame:
        rows = []
        for lev in self._levels:
            for f, ((train, test), s) in enumerate(zip(lev.folds, lev.fold_scores)):
                rows.append({"analysis": self._name(lev), "fold": f,
                             "n_train_images": len(np.unique(lev.image_of_row[train])),
                             "n_test_images": len(np.unique(lev.image_of_row[test])),
                             "n_train_rows": len(train), "n_test_rows": len(test),
                             "accuracy": s["accuracy"], "balanced_accuracy": s["balanced_accuracy"],
                             "roc_auc": s["roc_auc"],
                             "p_value": (float(lev.fold_p[f]) if lev.fold_p is not None and np.isfinite(lev.fold_p[f])
                                         else None)})
        return pd.DataFrame(rows)

    @cached_property
    def importance(self) -> pd.DataFrame:
        frames = []
        for lev in self._levels:
            imp = np.stack([f["importance"] for f in lev.fold_scores])  # (folds, K)
            mean = imp.mean(axis=0)
            std = imp.std(axis=0, ddof=1) if len(imp) >= 2 else np.full(imp.shape[1], np.nan)
            order = np.argsort(-mean, kind="stable")
            rank = np.empty(len(mean), dtype=int)
            rank[order] = np.arange(1, len(mean) + 1)
            frame = pd.DataFrame({"analysis": self._name(lev), "keypoint": self.keypoints,
                                  "importance": mean, "importance_std": std, "rank": rank})
            frames.append(frame.sort_values("rank", kind="stable"))
        return pd.concat(frames, ignore_index=True)

    @cached_property
    def null_scores(self) -> dict[str, np.ndarray]:
        return {self._name(lev): lev.null.copy() for lev in self._levels}

    def top_keypoints(self, analysis: str | None = None, n: int = TOP_KEYPOINTS) -> list[Any]:
        """The ``n`` keypoints with the largest positive importance."""
        imp = self.importance
        if analysis is not None:
            imp = imp[imp["analysis"] == analysis]
        return list(imp.loc[imp["importance"] > 0, "keypoint"].head(n))

    @cached_property
    def risk_lines(self) -> list[str]:
        lines = []
        for row in self.scores.to_dict("records"):
            where = f"within {row['analysis']}: " if row["level"] is not None else ""
            top = self.top_keypoints(row["analysis"])
            top_text = f"most informative keypoints: {', '.join(map(str, top))}" if top else MSG_NOTHING_INFORMATIVE
            p = row["p_value"]
            p_text = _fmt_p(p)
            powerless = np.isfinite(p) and row["min_p_value"] > ALPHA
            numbers = f"balanced accuracy {row['balanced_accuracy']:.2f} (chance {row['chance']:.2f}, {p_text})"
            if powerless:
                head = (f"{where}no conclusion: {row['n_permutations']} permutations cannot reach p <= {ALPHA:g} "
                        f"(use more); {numbers}")
            elif np.isfinite(p) and p > ALPHA:
                head = f"{where}errors do not predict {self.target} better than chance: {numbers}"
            else:
                head = f"{where}errors predict {self.target} with {numbers}"
            lines.append(f"{head}; {top_text}")
        return lines

    @property
    def risk_line(self) -> str:
        return "\n".join(self.risk_lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (schema in docs/privacy.md)."""
        imp = self.importance
        analyses: list[dict] = []
        for row in self.scores.to_dict("records"):
            name = row["analysis"]
            folds = self.folds[self.folds["analysis"] == name].drop(columns="analysis")
            ranked = imp[imp["analysis"] == name].drop(columns="analysis")
            analyses.append({"attribute": self.target, **row, "risk_line": self.risk_lines[len(analyses)],
                             "top_keypoints": self.top_keypoints(name),
                             "folds": folds.to_dict("records"), "importance": ranked.to_dict("records")})
        doc = {
            "schema_version": SCHEMA_VERSION,
            "kind": "attribute_inference",
            "tool": {"name": "fairlandmark", "version": __version__},
            "unit": self.unit,
            "n_runs": int(len(self.study.runs)),
            "keypoints": self.keypoints,
            **self.settings,
            "alpha": ALPHA,
            "analyses": analyses,
            "warnings": self.warnings,
        }
        return json_safe(doc)

    def to_json(self, path: str | os.PathLike[str] | None = None, *, indent: int | None = 2) -> str:
        """JSON text of :meth:`to_dict`; written atomically to ``path`` if given."""
        return dump_json(self.to_dict(), path, indent=indent)

    def __repr__(self) -> str:
        return (f"PrivacyResult(target={self.target!r}, within={self.within!r}, "
                f"{len(self._levels)} analysis(es), {len(self.keypoints)} keypoints)")


def audit_privacy(study: Study, *, targets: Iterable[str] | None = None, within: str | None = None,
                  **options: Any) -> list[PrivacyResult]:
    """Attribute inference for each audited attribute of a prepared study.

    For the audit's opt-in privacy section. ``targets`` defaults to every base
    attribute of the study (intersections are not targets); ``within`` is
    skipped for the target it names. ``options`` go to
    :func:`attribute_inference`.

    Returns
    -------
    list of PrivacyResult
    """
    targets = list(study.coding.base_codes) if targets is None else list(targets)
    out = []
    for target in targets:
        w = within if within != target else None
        out.append(attribute_inference(study, target=target, within=w, **options))
    return out


def privacy_block(results: Sequence[PrivacyResult]) -> dict[str, Any] | None:
    """The audit document's ``privacy`` block from :func:`audit_privacy` results.

    ``{"schema_version": ..., "attributes": {target: PrivacyResult.to_dict()}}``;
    every analysis record carries ``attribute``, ``balanced_accuracy``,
    ``chance``, ``p_value``, ``risk_line`` and ``top_keypoints``, which the
    report and the gate read. Returns None for no results.
    """
    if not results:
        return None
    return {"schema_version": SCHEMA_VERSION, "attributes": {r.target: r.to_dict() for r in results}}
