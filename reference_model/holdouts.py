"""Hold-out splits balanced over demographic groups (numpy/sklearn only; no torch).

The paper uses 10 hold-outs, each stratified over the demographic groups
(so every group keeps its share in train, validation and test) and each with
a validation subset for early stopping. Strata are the combinations of the
given attributes; a numeric attribute with many values is cut into quartiles
for stratification, and strata too small to split are pooled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from reference_model.errors import InputError

__all__ = ["Holdout", "balanced_holdouts", "strata_labels", "train_val_split"]

ERR_ATTRIBUTE = "meta: no column {name!r}; available: {available}"
ERR_TOO_FEW = "only {n} image(s) with landmarks and metadata: too few to split into train, validation and test"
ERR_FRACTIONS = "test_fraction and val_fraction must be in (0, 1) and sum below 1; got {test} and {val}"
_MIN_STRATUM = 3  # a stratum needs a member in each of train, validation and test


@dataclass(frozen=True)
class Holdout:
    """Image ids of one hold-out's train, validation and test sets."""

    index: int
    train_ids: tuple[str, ...]
    val_ids: tuple[str, ...]
    test_ids: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"index": self.index, "train": list(self.train_ids), "val": list(self.val_ids),
                "test": list(self.test_ids)}


def strata_labels(meta: pd.DataFrame, attributes: list[str]) -> np.ndarray:
    """One stratum label per row: the attributes' values joined, numeric ones binned in quartiles."""
    parts = []
    for name in attributes:
        if name not in meta.columns:
            raise InputError(ERR_ATTRIBUTE.format(name=name, available=", ".join(map(str, meta.columns))))
        column = meta[name]
        if pd.api.types.is_numeric_dtype(column) and column.nunique() > 10:
            column = pd.qcut(column, 4, labels=False, duplicates="drop")
        parts.append(column.astype(str).to_numpy())
    if not parts:
        return np.zeros(len(meta), dtype=object).astype(str)
    labels = parts[0].astype(object)
    for part in parts[1:]:
        labels = labels + "|" + part
    labels = labels.astype(str)
    values, counts = np.unique(labels, return_counts=True)
    rare = set(values[counts < _MIN_STRATUM])
    return np.array(["(pooled)" if label in rare else label for label in labels])


def balanced_holdouts(meta: pd.DataFrame, attributes: list[str], *, n_splits: int = 10,
                      test_fraction: float = 0.2, val_fraction: float = 0.1, seed: int = 0) -> list[Holdout]:
    """``n_splits`` random hold-outs, each stratified over the attributes' groups.

    Parameters
    ----------
    meta : DataFrame
        ``image_id`` plus the attribute columns.
    attributes : list of str
    n_splits : int, default 10
    test_fraction, val_fraction : float
        Shares of all images in the test and validation sets.
    seed : int
        Hold-out ``i`` uses seed ``seed + i``; the same seed gives the same splits.
    """
    if not (0 < test_fraction < 1 and 0 < val_fraction < 1 and test_fraction + val_fraction < 1):
        raise InputError(ERR_FRACTIONS.format(test=test_fraction, val=val_fraction))
    image_ids = meta["image_id"].astype(str).to_numpy()
    if len(image_ids) < _MIN_STRATUM:
        raise InputError(ERR_TOO_FEW.format(n=len(image_ids)))
    labels = strata_labels(meta, attributes)
    stratify_ok = np.unique(labels, return_counts=True)[1].min() >= _MIN_STRATUM
    holdouts = []
    for index in range(n_splits):
        rest, test = train_test_split(np.arange(len(image_ids)), test_size=test_fraction, random_state=seed + index,
                                      stratify=_stratify(labels, test_fraction) if stratify_ok else None)
        val_share = val_fraction / (1 - test_fraction)
        train, val = train_test_split(rest, test_size=val_share, random_state=seed + index,
                                      stratify=_stratify(labels[rest], val_share) if stratify_ok else None)
        holdouts.append(Holdout(index, tuple(image_ids[np.sort(train)]), tuple(image_ids[np.sort(val)]),
                                tuple(image_ids[np.sort(test)])))
    return holdouts


def _stratify(labels: np.ndarray, test_share: float) -> np.ndarray | None:
    """The labels when a stratified split can honour them, else None (sklearn's own conditions)."""
    values, counts = np.unique(labels, return_counts=True)
    n_test = math.ceil(test_share * len(labels))
    if len(values) < 2 or counts.min() < 2 or min(n_test, len(labels) - n_test) < len(values):
        return None
    return labels


def train_val_split(meta: pd.DataFrame, attributes: list[str], *, val_fraction: float = 0.1,
                    seed: int = 0) -> tuple[list[str], list[str]]:
    """One stratified train/validation split of the images in ``meta``."""
    if not 0 < val_fraction < 1:
        raise InputError(f"val_fraction must be in (0, 1); got {val_fraction}")
    image_ids = meta["image_id"].astype(str).to_numpy()
    if len(image_ids) < 2:
        raise InputError(ERR_TOO_FEW.format(n=len(image_ids)))
    labels = strata_labels(meta, attributes)
    train, val = train_test_split(np.arange(len(image_ids)), test_size=val_fraction, random_state=seed,
                                  stratify=_stratify(labels, val_fraction))
    return list(image_ids[np.sort(train)]), list(image_ids[np.sort(val)])
