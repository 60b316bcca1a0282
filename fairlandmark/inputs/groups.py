"""Demographic groups as integer codes.

All audited attributes (and their intersection) are functions of one finest
partition of the images, the *cells*: one cell per combination of attribute
values present. Each attribute maps cells to its groups. The metrics kernel
sums over cells once and aggregates to every attribute with a small 0/1
matrix, so adding the intersection costs almost nothing, and one permutation
of cell labels permutes every attribute at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pandas as pd

from fairlandmark.exceptions import InputError

__all__ = ["GroupCoding", "parse_bin", "encode_groups", "INTERSECTION_SEP"]

INTERSECTION_SEP = "&"

MSG_BIN_CUTS = "«bins» {value!r}: the cut points must be finite and different from each other, e.g. age=10,14"
MSG_BIN_FORMAT = "«bins» {value!r}: expected COLUMN=CUT[,CUT...] such as age=14"
MSG_BIN_NOT_NUMERIC = "{src}: image '{image}', column '{col}': {value!r} is not a number, so it cannot be binned; fix it or drop «bins» {col}"
MSG_BIN_UNKNOWN = "«bins» {col}: no such attribute; add {col!r} to «attributes» or fix the name"
MSG_SINGLE_GROUP = (
    "{src}: attribute '{col}' has a single group ({group!r}) among the audited images; "
    "a parity gap needs two or more groups: drop «attributes» {col} or check the metadata"
)
MSG_ROW_NOT_IN_META = (
    "{src}: image {image!r} has predictions but no row in the metadata; add its row or drop its predictions"
)
MSG_SEP_IN_NAME = "attribute name {col!r} contains '{sep}', which names intersections; rename the column"


@dataclass(frozen=True)
class GroupCoding:
    """Integer coding of every audited attribute.

    Attributes
    ----------
    attributes : list of str
        Audited attributes, base ones first, then the intersection
        (e.g. ``["sex", "age_group", "sex&age_group"]``).
    groups : dict of str -> list of str
        Group labels of each attribute, in a stable order.
    cell : ndarray of int, shape (N,)
        Finest-partition cell of each row.
    n_cells : int
        Number of cells.
    cell_to_group : dict of str -> ndarray of int, shape (n_cells,)
        Group index of each cell, per attribute.
    base_codes : dict of str -> ndarray of int, shape (N,)
        Group index of each row for the base (non-intersection) attributes.
    """

    attributes: list[str]
    groups: dict[str, list[str]]
    cell: np.ndarray
    n_cells: int
    cell_to_group: dict[str, np.ndarray]
    base_codes: dict[str, np.ndarray]

    def aggregation(self, attribute: str) -> np.ndarray:
        """0/1 matrix of shape (n_cells, n_groups) mapping cells to groups."""
        to_group = self.cell_to_group[attribute]
        out = np.zeros((self.n_cells, len(self.groups[attribute])))
        out[np.arange(self.n_cells), to_group] = 1.0
        return out

    def row_codes(self, attribute: str) -> np.ndarray:
        """Group index of each row for ``attribute``."""
        return self.cell_to_group[attribute][self.cell]


def parse_bin(text: str) -> tuple[str, list[float]]:
    """Parse ``"age=14"`` or ``"age=10,14"`` into ``("age", [14.0])``.

    Examples
    --------
    >>> parse_bin("age=10,14")
    ('age', [10.0, 14.0])
    """
    col, sep, cuts = str(text).partition("=")
    if not sep or not col.strip() or not cuts.strip():
        raise InputError(MSG_BIN_FORMAT.format(value=text))
    try:
        values = sorted(float(c) for c in cuts.split(","))
    except ValueError:
        raise InputError(MSG_BIN_FORMAT.format(value=text)) from None
    if not all(np.isfinite(values)) or len(set(values)) != len(values):
        raise InputError(MSG_BIN_CUTS.format(value=text))
    return col.strip(), values


def _fmt(x: float) -> str:
    return f"{x:g}"


def _bin_labels(col: str, values: np.ndarray, image_ids: pd.Index, cuts: Sequence[float],
                src: str) -> tuple[np.ndarray, list[str]]:
    numeric = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    bad = np.isnan(numeric)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(MSG_BIN_NOT_NUMERIC.format(src=src, image=image_ids[i], col=col, value=values[i]))
    names = [f"{col}<{_fmt(cuts[0])}"]
    names += [f"{_fmt(lo)}<={col}<{_fmt(hi)}" for lo, hi in zip(cuts[:-1], cuts[1:])]
    names += [f"{col}>={_fmt(cuts[-1])}"]
    index = np.searchsorted(np.asarray(cuts), numeric, side="right")
    return np.asarray(names, dtype=object)[index], names


def encode_groups(meta: pd.DataFrame, row_image: np.ndarray, *, attributes: Sequence[str],
                  bins: Mapping[str, Sequence[float]] | None = None, intersection: bool = True,
                  source: str = "metadata") -> GroupCoding:
    """Encode attributes of each (run, image) row as integer groups.

    Parameters
    ----------
    meta : pandas.DataFrame
        Indexed by image id, one column per attribute.
    row_image : ndarray of str, shape (N,)
        Image id of each row.
    attributes : list of str
        Attributes to audit.
    bins : dict of str -> list of float, optional
        Cut points for numeric attributes: ``{"age": [14]}`` gives the groups
        ``age<14`` and ``age>=14``.
    intersection : bool, default True
        With two or more attributes, also audit their combination, named by
        joining the attribute names with ``&``.
    source : str
        Metadata file name for messages.

    Returns
    -------
    GroupCoding
    """
    bins = dict(bins or {})
    for col in bins:
        if col not in attributes:
            raise InputError(MSG_BIN_UNKNOWN.format(col=col))
    groups: dict[str, list[str]] = {}
    codes: dict[str, np.ndarray] = {}
    # Each row's metadata row, found once for every attribute: the ids are hashed once, and each attribute's
    # groups are coded per image and gathered to the rows as integers.
    position = meta.index.get_indexer(cast(Any, row_image))  # an array of ids, as pandas takes it
    if (position < 0).any():  # prepare_study has checked this (MSG_NOT_IN_META); a direct call gets one line too
        raise InputError(MSG_ROW_NOT_IN_META.format(src=source, image=row_image[int(np.argmax(position < 0))]))
    for col in attributes:
        if INTERSECTION_SEP in col:
            raise InputError(MSG_SEP_IN_NAME.format(col=col, sep=INTERSECTION_SEP))
        values = meta[col].to_numpy()
        if col in bins:
            image_values, order = _bin_labels(col, values, meta.index, bins[col], source)
        else:
            image_values = np.asarray([str(v).strip() for v in values], dtype=object)
            order = sorted(set(image_values.tolist()), key=_natural_key)
        value_code, uniques = pd.factorize(image_values)
        row_value = value_code[position]
        present = set(uniques[np.bincount(row_value, minlength=len(uniques)) > 0].tolist())
        order = [g for g in order if g in present]
        if len(order) < 2:
            raise InputError(MSG_SINGLE_GROUP.format(src=source, col=col, group=order[0] if order else None))
        group_of = {g: i for i, g in enumerate(order)}
        codes[col] = np.array([group_of.get(u, -1) for u in uniques.tolist()], dtype=np.int64)[row_value]
        groups[col] = order

    sizes = [len(groups[c]) for c in attributes]
    # Finest partition: mixed-radix code over all attributes, then compacted.
    full = np.zeros(len(row_image), dtype=np.int64)
    for col, size in zip(attributes, sizes):
        full = full * size + codes[col]
    present_cells, cell = np.unique(full, return_inverse=True)
    cell = cell.astype(np.int64)
    n_cells = len(present_cells)

    cell_digits = {}
    rest = present_cells.copy()
    for col, size in reversed(list(zip(attributes, sizes))):
        cell_digits[col] = rest % size
        rest = rest // size
    cell_to_group = {col: cell_digits[col].astype(np.int64) for col in attributes}
    out_attributes = list(attributes)
    if intersection and len(attributes) >= 2:
        name = INTERSECTION_SEP.join(attributes)
        out_attributes.append(name)
        groups[name] = [
            INTERSECTION_SEP.join(groups[col][cell_digits[col][c]] for col in attributes) for c in range(n_cells)
        ]
        cell_to_group[name] = np.arange(n_cells, dtype=np.int64)
    return GroupCoding(
        attributes=out_attributes,
        groups={a: list(groups[a]) for a in out_attributes},
        cell=cell,
        n_cells=n_cells,
        cell_to_group=cell_to_group,
        base_codes=codes,
    )


def _natural_key(text: str) -> list[tuple[int, int, str]]:
    parts = []
    for chunk in pd.Series([text]).str.split(r"(\d+)", regex=True).iloc[0]:
        parts.append((0, int(chunk), "") if chunk.isdecimal() else (1, 0, chunk))
    return parts
