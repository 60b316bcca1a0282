"""Image-level stratified folds shared by every attribute-inference experiment.

The error-based attribute inference (:mod:`fairlandmark.stats.privacy`) and the
reference model's image-classifier control must see *the same* folds, so both
call :func:`stratified_image_folds`. Folds are made over unique image ids, so
one image (with all its runs) is never on both sides of a split.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["stratified_image_folds"]


def stratified_image_folds(image_ids: ArrayLike, labels: ArrayLike, *, n_splits: int = 5,
                           seed: int | None = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold split over unique images.

    Parameters
    ----------
    image_ids : array-like of str, shape (n_images,)
        Unique image identifiers.
    labels : array-like, shape (n_images,)
        The attribute to stratify on, one value per image.
    n_splits : int, default 5
        Number of folds.
    seed : int, default 0
        Seed of the shuffle; the same seed gives the same folds.

    Returns
    -------
    list of (ndarray, ndarray)
        ``(train_ids, test_ids)`` per fold, as arrays of image ids.

    Examples
    --------
    >>> folds = stratified_image_folds(["a", "b", "c", "d"], [0, 0, 1, 1], n_splits=2)
    >>> sorted(len(test) for _, test in folds)
    [2, 2]
    """
    from sklearn.model_selection import StratifiedKFold  # imported on use: keeps CLI start-up short

    image_ids = np.asarray(image_ids).astype(str)
    labels = np.asarray(labels)
    if len(np.unique(image_ids)) != len(image_ids):
        raise ValueError("image_ids must be unique: give one label per image")
    order = np.argsort(image_ids, kind="stable")  # fold content must not depend on input order
    ids_sorted, labels_sorted = image_ids[order], labels[order]
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return [
        (ids_sorted[train], ids_sorted[test])
        for train, test in splitter.split(ids_sorted, labels_sorted)
    ]
