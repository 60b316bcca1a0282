"""Convert wide annotation files into the long predictions format.

Public landmark data sets ship one row per image, ``id,x1,y1,...,xK,yK``
(the ISBI 2015 cephalograms and the Digital Hand Atlas in ``../shared/data``
have no header row). An audit needs one row per (run, image, keypoint)::

    [run,] image_id, keypoint, pred_x, pred_y, true_x, true_y [, spacing_mm]

:func:`read_wide` reads and validates one wide file, :func:`wide_to_long`
pairs a prediction file with the ground truth, :func:`convert` does both for
one or several runs, and :func:`write_long` writes the result atomically.
Keypoints are numbered ``1..K`` in column order. Image ids stay strings, so
``"001"`` keeps its zeros.
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fairlandmark.exceptions import FairlandmarkWarning, InputError
from fairlandmark.files import atomic_write_bytes, atomic_write_text
from fairlandmark.inputs.schema import detect_encoding, encoding_error

__all__ = [
    "WideTable",
    "read_wide",
    "wide_to_long",
    "convert",
    "write_long",
    "metadata_template",
    "LONG_COLUMNS",
]

LONG_COLUMNS = ("image_id", "keypoint", "pred_x", "pred_y", "true_x", "true_y")
PARQUET_EXTENSIONS = (".parquet", ".pq")
# Cells read as "no value": a missing prediction in a prediction file.
BLANK_TOKENS = frozenset({"", "nan", "na", "n/a", "null", "none"})

MSG_NO_FILE = "{src}: file not found; check the path"
MSG_EMPTY = "{src}: the file is empty; give one row per image: id,x1,y1,...,xK,yK"
MSG_UNREADABLE = "{src}: cannot be read ({detail}); give a CSV (id,x1,y1,...,xK,yK) or a Parquet file"
MSG_NO_COORDS = "{src}: row {row} has only {n} column(s); give one row per image: id,x1,y1,...,xK,yK"
MSG_RAGGED = (
    "{src}: row {row} has {n} columns but row {first} has {m}; "
    "give every row the same columns: id,x1,y1,...,xK,yK (leave cells empty, do not drop them)"
)
MSG_ODD = (
    "{src}: row {row} has {n} coordinate columns after the id, an odd number; "
    "give an x and a y for each keypoint: id,x1,y1,...,xK,yK"
)
MSG_NOT_NUMBER = "{src}: row {row}, column {col} ({name}): {value!r} is not a number; fix that cell"
MSG_TRUTH_EMPTY = (
    "{src}: row {row}, column {col} ({name}) is empty; the ground truth needs every coordinate: "
    "fill it in or remove the image"
)
MSG_EMPTY_ID = "{src}: row {row}, column 1 (id) is empty; every row needs an image id"
MSG_DUP_ID = "{src}: row {row} repeats id {image!r} first seen on row {first}; keep one row per image"
MSG_K_MISMATCH = (
    "{pred}: {k_pred} keypoint(s) per row (row {row}, {n_pred} columns) but the ground truth {truth} has "
    "{k_true} ({n_true} columns); both files must list the same keypoints in the same order"
)
MSG_UNKNOWN_IDS = (
    "{src}: {n} image id(s) are not in the ground truth {truth} (e.g. {examples}, first on row {row}); "
    "add them to the ground truth or remove them from the predictions"
)
MSG_UNPREDICTED = (
    "{src}: {n} image(s) of the ground truth {truth} have no prediction (e.g. {examples}); "
    "they are written with empty pred_x/pred_y and count as misses{hint}"
)
MSG_UNPREDICTED_HINT = " (use «predicted_only» if each run predicts only its own test images)"
MSG_NO_PRED = "convert: give at least one predictions file"
MSG_RUN_COUNT = "«runs»: {n_run} label(s) for {n_pred} predictions file(s); give one run label per predictions file («pred_paths»), in the same order"
MSG_RUN_NEEDED = "«runs»: {n_pred} predictions files need one run label each, in the same order as «pred_paths»"
MSG_RUN_DUP = "«runs»: label {label!r} is given twice; give each run its own label"
MSG_RUN_EMPTY = "«runs»: an empty label; give each run a name such as holdout1"
MSG_SPACING = "«spacing_mm» {value!r}: must be a positive number of mm per pixel"
MSG_TEMPLATE_EXISTS = "{path}: already exists; a metadata template never overwrites a file, choose another path"
MSG_TEMPLATE_COLUMN = ("metadata template: column name {col!r} is empty, reserved, repeated or holds & or ,; "
                       "give names such as sex,age")


@dataclass(frozen=True)
class WideTable:
    """One validated wide file.

    Attributes
    ----------
    source : str
        File name, for messages.
    ids : ndarray of str, shape (N,)
        Image ids as written (stripped), in file order.
    coords : ndarray of float, shape (N, K, 2)
        (x, y) of every keypoint; NaN marks an empty cell.
    rows : ndarray of int, shape (N,)
        Line number of each image in the file (1-based, header counted).
    has_header : bool
        Whether the first line was a header row.
    """

    source: str
    ids: np.ndarray
    coords: np.ndarray
    rows: np.ndarray
    has_header: bool

    @property
    def n_keypoints(self) -> int:
        return self.coords.shape[1]


def _column_name(j: int) -> str:
    # j is the 0-based position among the coordinate columns.
    return f"{'xy'[j % 2]}{j // 2 + 1}"


def _read_cells(src: str, encoding: str | None = None) -> tuple[list[Any], list[int], bool | None]:
    """Rows of stripped string cells with their line numbers; header not yet detected."""
    ext = os.path.splitext(src)[1].lower()
    if ext in PARQUET_EXTENSIONS:
        try:
            frame = pd.read_parquet(src)
        except (ValueError, OSError, ImportError) as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(MSG_UNREADABLE.format(src=src, detail=detail)) from None
        # Parquet always has column names: give them as a header line.
        header = [str(c).strip() for c in frame.columns]
        body = frame.astype("string").fillna("").to_numpy(dtype=object)
        lines = [header] + [[str(v).strip() for v in row] for row in body]
        return lines, list(range(1, len(lines) + 1)), True
    encoding = detect_encoding(src, encoding)
    try:
        with open(src, newline="", encoding="utf-8-sig" if encoding == "utf-8" else encoding) as handle:
            reader = csv.reader(handle)
            lines, numbers = [], []
            for cells in reader:
                if not cells or all(not c.strip() for c in cells):
                    continue  # blank line
                lines.append([c.strip() for c in cells])
                numbers.append(reader.line_num)
    except UnicodeDecodeError as exc:
        raise encoding_error(src, exc, encoding) from None
    except (csv.Error, OSError) as exc:
        raise InputError(MSG_UNREADABLE.format(src=src, detail=str(exc).strip() or type(exc).__name__)) from None
    return _without_trailing_comma(lines), numbers, None


def _without_trailing_comma(lines: list[list[str]]) -> list[list[str]]:
    """Rows written with a comma at the end of every line: drop that empty last cell.

    Only when every row ends with an empty cell that leaves an odd count of coordinates (id,x1,y1,...,yK,):
    a row of x,y pairs cannot end in half a pair.
    """
    if lines and all(len(row) > 1 and row[-1] == "" and (len(row) - 1) % 2 == 1 for row in lines):
        return [row[:-1] for row in lines]
    return lines


def _is_number(text: str) -> bool:
    return not np.isnan(pd.to_numeric(pd.Series([text]), errors="coerce").iloc[0])


def read_wide(path: str | os.PathLike[str], *, truth: bool = False, encoding: str | None = None) -> WideTable:
    """Read a wide landmark file, ``id,x1,y1,...,xK,yK``, header optional.

    The first line is a header when none of its coordinate cells is a number
    and some of them hold text (such as ``x1``).

    Parameters
    ----------
    path : str or path-like
        CSV (any extension) or Parquet (``.parquet``/``.pq``).
    truth : bool, default False
        Ground truth: every coordinate must be present. In a prediction file
        an empty cell (or ``nan``) is a missing prediction.
    encoding : str, optional
        Text encoding of a CSV file; default UTF-8, or UTF-16 when the file
        starts with its byte-order mark (e.g. ``"latin-1"``).

    Returns
    -------
    WideTable

    Raises
    ------
    InputError
        Empty file, ragged rows, an odd number of coordinate columns, a
        non-numeric cell, an empty or repeated id, or an empty ground-truth
        cell; the message names the file, the row and the column.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "truth.csv")
    >>> _ = open(path, "w").write("001,1,2,3,4\\n002,5,6,7,8\\n")
    >>> table = read_wide(path, truth=True)
    >>> list(table.ids), table.coords.shape, table.has_header
    (['001', '002'], (2, 2, 2), False)
    """
    src = os.fspath(path)
    if not os.path.exists(src):
        raise InputError(MSG_NO_FILE.format(src=src))
    if os.path.getsize(src) == 0:
        raise InputError(MSG_EMPTY.format(src=src))
    lines, numbers, has_header = _read_cells(src, encoding)
    if not lines:
        raise InputError(MSG_EMPTY.format(src=src))
    width = len(lines[0])
    for cells, row in zip(lines, numbers):
        if len(cells) < 2:
            raise InputError(MSG_NO_COORDS.format(src=src, row=row, n=len(cells)))
        if len(cells) != width:
            raise InputError(MSG_RAGGED.format(src=src, row=row, n=len(cells), first=numbers[0], m=width))
    if (width - 1) % 2:
        raise InputError(MSG_ODD.format(src=src, row=numbers[0], n=width - 1))
    if has_header is None:
        # A header names its columns: no coordinate cell is a number and some
        # are text (a first row of empty cells is a missing prediction).
        coords = lines[0][1:]
        has_header = not any(_is_number(c) for c in coords) and any(c.lower() not in BLANK_TOKENS for c in coords)
    if has_header:
        lines, numbers = lines[1:], numbers[1:]
    if not lines:
        raise InputError(MSG_EMPTY.format(src=src))

    cells = np.asarray(lines, dtype=object)
    rows = np.asarray(numbers, dtype=np.int64)
    ids = cells[:, 0]
    empty_id = np.asarray([c == "" for c in ids])
    if empty_id.any():
        raise InputError(MSG_EMPTY_ID.format(src=src, row=rows[np.flatnonzero(empty_id)[0]]))
    dup = pd.Series(ids).duplicated().to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero(ids == ids[i])[0])
        raise InputError(MSG_DUP_ID.format(src=src, row=rows[i], image=ids[i], first=rows[first]))

    raw = cells[:, 1:]
    flat = pd.Series(raw.ravel())
    values = pd.to_numeric(flat, errors="coerce").to_numpy(dtype=float, copy=True).reshape(raw.shape)
    blank = np.asarray([c.lower() in BLANK_TOKENS for c in flat], dtype=bool).reshape(raw.shape)
    bad = (np.isnan(values) & ~blank) | np.isinf(values)
    if truth:
        bad |= blank  # reported below with its own message
    if bad.any():
        # Row-major: the first bad cell in file order.
        i, j = (int(v) for v in np.argwhere(bad)[0])
        msg = MSG_TRUTH_EMPTY if blank[i, j] else MSG_NOT_NUMBER
        raise InputError(msg.format(src=src, row=rows[i], col=j + 2, name=_column_name(j), value=raw[i, j]))
    values[blank] = np.nan
    coords = values.reshape(len(ids), -1, 2)
    return WideTable(source=src, ids=ids.astype(object), coords=coords, rows=rows, has_header=bool(has_header))


def _examples(ids: Iterable[object], n: int = 3) -> str:
    return ", ".join(repr(str(i)) for i in list(ids)[:n])


def _check_spacing(spacing_mm: float | None) -> float | None:
    if spacing_mm is None:
        return None
    try:
        value = float(spacing_mm)
    except (TypeError, ValueError):
        raise InputError(MSG_SPACING.format(value=spacing_mm)) from None
    if not (np.isfinite(value) and value > 0):
        raise InputError(MSG_SPACING.format(value=spacing_mm))
    return value


def wide_to_long(pred: WideTable | str | os.PathLike[str], truth: WideTable | str | os.PathLike[str], *,
                 run: str | None = None, spacing_mm: float | None = None,
                 predicted_only: bool = False) -> tuple[pd.DataFrame, int]:
    """Pair a wide prediction table with the wide ground truth, in long format.

    Parameters
    ----------
    pred, truth : WideTable or path
        Predictions and ground truth (``truth`` is read with ``truth=True``).
    run : str, optional
        Adds a first column ``run`` with this label.
    spacing_mm : float, optional
        Adds a column ``spacing_mm`` (mm per pixel) with this value.
    predicted_only : bool, default False
        Write only images that have a prediction. By default every image of
        the ground truth is written, those without a prediction with empty
        ``pred_x``/``pred_y`` (a missing prediction, a miss at every threshold).

    Returns
    -------
    frame : pandas.DataFrame
        One row per (image, keypoint), images in ground-truth order,
        keypoints ``1..K``.
    n_unpredicted : int
        Ground-truth images with no row in the predictions.

    Raises
    ------
    InputError
        When the files differ in their number of keypoints, or the
        predictions hold an id that the ground truth lacks.

    Examples
    --------
    >>> import tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> p, t = os.path.join(folder, "p.csv"), os.path.join(folder, "t.csv")
    >>> _ = open(p, "w").write("001,1,2\\n")
    >>> _ = open(t, "w").write("001,1,3\\n002,4,4\\n")
    >>> frame, n = wide_to_long(p, t)
    >>> frame.to_dict("list")["pred_y"], n
    ([2.0, nan], 1)
    """
    pred = pred if isinstance(pred, WideTable) else read_wide(pred)
    truth = truth if isinstance(truth, WideTable) else read_wide(truth, truth=True)
    spacing_mm = _check_spacing(spacing_mm)
    if pred.n_keypoints != truth.n_keypoints:
        raise InputError(MSG_K_MISMATCH.format(
            pred=pred.source, k_pred=pred.n_keypoints, row=int(pred.rows[0]), n_pred=1 + 2 * pred.n_keypoints,
            truth=truth.source, k_true=truth.n_keypoints, n_true=1 + 2 * truth.n_keypoints))
    truth_index = pd.Index(truth.ids)
    where = truth_index.get_indexer(pred.ids)
    unknown = where < 0
    if unknown.any():
        first = int(np.flatnonzero(unknown)[0])
        raise InputError(MSG_UNKNOWN_IDS.format(src=pred.source, n=int(unknown.sum()), truth=truth.source,
                                                examples=_examples(pred.ids[unknown]), row=int(pred.rows[first])))
    n_true, k = len(truth.ids), truth.n_keypoints
    aligned = np.full((n_true, k, 2), np.nan)
    aligned[where] = pred.coords
    has_pred = np.zeros(n_true, dtype=bool)
    has_pred[where] = True
    n_unpredicted = int((~has_pred).sum())
    keep = has_pred if predicted_only else np.ones(n_true, dtype=bool)

    n = int(keep.sum())
    columns = {}
    if run is not None:
        columns["run"] = np.full(n * k, str(run), dtype=object)
    columns["image_id"] = np.repeat(truth.ids[keep], k).astype(object)
    columns["keypoint"] = np.tile(np.arange(1, k + 1, dtype=np.int64), n)
    columns["pred_x"] = aligned[keep, :, 0].ravel()
    columns["pred_y"] = aligned[keep, :, 1].ravel()
    columns["true_x"] = truth.coords[keep, :, 0].ravel()
    columns["true_y"] = truth.coords[keep, :, 1].ravel()
    if spacing_mm is not None:
        columns["spacing_mm"] = np.full(n * k, spacing_mm)
    return pd.DataFrame(columns), n_unpredicted


def _run_labels(n_pred: int, runs: Sequence[str] | None) -> Sequence[str | None]:
    if runs is None or len(runs) == 0:
        if n_pred > 1:
            raise InputError(MSG_RUN_NEEDED.format(n_pred=n_pred))
        return [None]
    runs = [str(r).strip() for r in runs]
    if len(runs) != n_pred:
        raise InputError(MSG_RUN_COUNT.format(n_run=len(runs), n_pred=n_pred))
    for i, label in enumerate(runs):
        if not label:
            raise InputError(MSG_RUN_EMPTY)
        if label in runs[:i]:
            raise InputError(MSG_RUN_DUP.format(label=label))
    return runs


def convert(pred: WideTable | str | os.PathLike[str] | Sequence[WideTable | str | os.PathLike[str]],
            truth: WideTable | str | os.PathLike[str], *,
            runs: Sequence[str] | None = None, spacing_mm: float | None = None,
            predicted_only: bool = False, encoding: str | None = None) -> pd.DataFrame:
    """Wide prediction file(s) plus wide ground truth to one long table.

    Parameters
    ----------
    pred : path or list of paths
        One wide prediction file per run.
    truth : path
        Wide ground truth (every image, every coordinate).
    runs : list of str, optional
        One label per prediction file, written to a ``run`` column; required
        with more than one file. With one file and no label there is no
        ``run`` column.
    spacing_mm : float, optional
        Write a ``spacing_mm`` column with this mm-per-pixel value.
    predicted_only : bool, default False
        Skip ground-truth images a run did not predict (hold-out runs that
        each predict their own test images). By default they are written as
        missing predictions, with a :class:`FairlandmarkWarning` giving the count.
    encoding : str, optional
        Text encoding of CSV inputs (see :func:`read_wide`).

    Returns
    -------
    pandas.DataFrame
        Columns ``[run,] image_id, keypoint, pred_x, pred_y, true_x, true_y
        [, spacing_mm]``; the input of :func:`fairlandmark.audit`.

    Examples
    --------
    >>> import tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> t = os.path.join(folder, "t.csv"); _ = open(t, "w").write("a,0,0\\nb,0,0\\n")
    >>> p1 = os.path.join(folder, "p1.csv"); _ = open(p1, "w").write("a,1,0\\nb,0,3\\n")
    >>> p2 = os.path.join(folder, "p2.csv"); _ = open(p2, "w").write("a,0,2\\nb,4,0\\n")
    >>> long = convert([p1, p2], t, runs=["h1", "h2"], spacing_mm=0.1)
    >>> list(long.columns)
    ['run', 'image_id', 'keypoint', 'pred_x', 'pred_y', 'true_x', 'true_y', 'spacing_mm']
    >>> len(long)
    4
    """
    paths = [pred] if isinstance(pred, (str, os.PathLike, WideTable)) else list(pred)
    if not paths:
        raise InputError(MSG_NO_PRED)
    labels = _run_labels(len(paths), runs)
    spacing_mm = _check_spacing(spacing_mm)
    truth = truth if isinstance(truth, WideTable) else read_wide(truth, truth=True, encoding=encoding)
    frames = []
    for path, label in zip(paths, labels):
        table = path if isinstance(path, WideTable) else read_wide(path, encoding=encoding)
        frame, n_unpredicted = wide_to_long(table, truth, run=label, spacing_mm=spacing_mm,
                                            predicted_only=predicted_only)
        if n_unpredicted and not predicted_only:
            absent = truth.ids[~pd.Index(truth.ids).isin(table.ids)]
            hint = MSG_UNPREDICTED_HINT if len(paths) > 1 else ""
            warnings.warn(MSG_UNPREDICTED.format(src=table.source, n=n_unpredicted, truth=truth.source,
                                                 examples=_examples(absent), hint=hint),
                          FairlandmarkWarning, stacklevel=2)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


# Public names of the two rules other readers (fairlandmark.inputs.coco) share.
run_labels = _run_labels
check_spacing = _check_spacing


def write_long(frame: pd.DataFrame, out: str | os.PathLike[str]) -> None:
    """Write a long table atomically: Parquet for ``.parquet``/``.pq``, else CSV.

    Floats are written with the shortest text that reads back to the same
    number; a missing prediction is an empty cell.
    """
    out = os.fspath(out)
    if os.path.splitext(out)[1].lower() in PARQUET_EXTENSIONS:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        atomic_write_bytes(out, buffer.getvalue())
    else:
        atomic_write_text(out, frame.to_csv(index=False))


def check_template_columns(columns: Iterable[str]) -> list[str]:
    """The attribute names of a metadata template, stripped; InputError for an unusable or repeated one."""
    columns = [str(c).strip() for c in columns]
    for i, col in enumerate(columns):
        if not col or col == "image_id" or "&" in col or "," in col or col in columns[:i]:
            raise InputError(MSG_TEMPLATE_COLUMN.format(col=col))
    return columns


def metadata_template(truth: WideTable | str | os.PathLike[str], out: str | os.PathLike[str], *,
                      columns: Sequence[str] = ("sex", "age")) -> int:
    """Write a metadata file to fill in: ``image_id`` and one empty column per attribute.

    Never overwrites an existing file, which may hold filled-in attributes.

    Parameters
    ----------
    truth : WideTable or path
        Ground truth whose ids (in file order) become the rows.
    out : path
        CSV to create.
    columns : sequence of str
        Attribute columns, left empty.

    Returns
    -------
    int
        Number of rows written.

    Examples
    --------
    >>> import tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> t = os.path.join(folder, "t.csv"); _ = open(t, "w").write("001,0,0\\n002,1,1\\n")
    >>> metadata_template(t, os.path.join(folder, "meta.csv"), columns=["sex"])
    2
    >>> open(os.path.join(folder, "meta.csv")).read().splitlines()
    ['image_id,sex', '001,', '002,']
    """
    out = os.fspath(out)
    if os.path.exists(out):
        raise InputError(MSG_TEMPLATE_EXISTS.format(path=out))
    columns = check_template_columns(columns)
    truth = truth if isinstance(truth, WideTable) else read_wide(truth, truth=True)
    frame = pd.DataFrame({"image_id": truth.ids, **{c: "" for c in columns}})
    atomic_write_text(out, frame.to_csv(index=False))
    return len(frame)
