"""Input schema: read and validate predictions and metadata.

Predictions are long format, one row per (run, image, keypoint). Metadata has
one row per image and one column per sensitive attribute. Everything here
either returns clean, typed frames or raises :class:`InputError` with one line
naming the file, the row or column, and the fix.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fairlandmark.exceptions import InputError, note
from fairlandmark.progress import Step, no_step
from fairlandmark.inputs.columnar import (ColumnTable, EncodedColumn, first_appearance_codes, frame_columns,
                                          pooled_empty, read_columns)

__all__ = [
    "COORD_COLUMNS",
    "read_table",
    "csv_read_options",
    "detect_encoding",
    "encoding_error",
    "drop_trailing_empty_columns",
    "NUMERIC_COLUMNS",
    "NUMERIC_NA_STRINGS",
    "check_predictions",
    "check_metadata",
    "Predictions",
    "check_unlabelled",
    "check_axis_spacing",
]

COORD_COLUMNS = ("pred_x", "pred_y", "true_x", "true_y")
ID_COLUMN = "image_id"
KEYPOINT_COLUMN = "keypoint"
RUN_COLUMN = "run"
SPACING_COLUMN = "spacing_mm"
ERROR_COLUMN = "error_mm"
DEFAULT_RUN = "0"

MSG_NO_FILE = "{src}: file not found; check the path"
MSG_ERROR_OVERRIDES = ("{src}: has both 'error_mm' and predicted coordinates; the audit uses error_mm as given "
                       "and ignores the coordinates; drop one of them to silence this")
MSG_DUP_COLUMN = "{src}: column '{col}' appears twice in the header; keep one, or rename the other"
MSG_EMPTY = "{src}: the file is empty; it needs a header row and at least one data row"
MSG_UNREADABLE = "{src}: cannot be read as {kind} ({detail}); give a .csv or .parquet file"
MSG_ENCODING = ("{src}: not {encoding} text (byte 0x{byte:02x}{where}){guess}; save the file as UTF-8 "
                "or give its «encoding»")
MSG_GUESS_LATIN1 = ", it looks like Latin-1 / Windows-1252 (try «encoding» latin-1)"
MSG_GUESS_UTF16 = ", it looks like UTF-16 without a byte-order mark (try «encoding» utf-16-le)"
MSG_UNKNOWN_ENCODING = "«encoding» {value!r}: not an encoding Python knows; give e.g. utf-8, latin-1 or utf-16"
MSG_NOT_TABLE = "{kind}: expected a pandas DataFrame or the path of a CSV or Parquet file, got {type}"
MSG_BOOLEAN = "{src}: column '{col}' holds True/False values, not numbers; give coordinates and errors as numbers"
MSG_RAGGED = ("{src}: line {line} has {n} fields where the header has {m}; remove the extra fields (a trailing comma "
              "at the end of the header or of every line is accepted)")
MSG_MISSING_COLUMN = "{src}: missing column '{col}'{hint}; the columns found are: {found}"
MSG_NEED_COORDS_OR_ERROR = (
    "{src}: needs either the coordinate columns pred_x, pred_y, true_x, true_y "
    "or a precomputed 'error_mm' column{hint}; the columns found are: {found}"
)
MSG_NOT_NUMBER = "{src}: row {row}, column '{col}': '{value}' is not a number; fix or empty that cell"
MSG_EMPTY_CELL = "{src}: row {row}, column '{col}' is empty; every row needs {what}"
MSG_DUPLICATE = (
    "{src}: row {row} repeats (run={run}, image_id={image}, keypoint={kp}) first seen on row {first}; "
    "keep one row per run, image and keypoint"
)
MSG_INCOMPLETE = (
    "{src}: image '{image}' (run {run}) has {n_have} of {n_all} keypoints, keypoint {kp} is missing; "
    "give every image all keypoints (leave pred_x/pred_y empty for a missing prediction)"
)
MSG_KP_SPELLING = (
    "{src}: keypoint labels {a!r} and {b!r} name the same keypoint; write each keypoint one way in column 'keypoint'"
)
MSG_NEGATIVE = "{src}: row {row}, column '{col}': {value} must be {rule}"
MSG_META_DUP = "{src}: row {row} repeats image_id '{image}' first seen on row {first}; keep one row per image"
MSG_META_NAN = "{src}: row {row}, column '{col}' is empty; give every image a value for each audited attribute"
MSG_NOT_IN_META = (
    "{src}: {n} image id(s) of the predictions are not in the metadata (e.g. {examples}); "
    "add them to the metadata file"
)
MSG_META_UNUSED = "{src}: {n} metadata row(s) have no predictions (e.g. {examples}); they are ignored"
MSG_BAD_ATTRIBUTE = "«attributes» {col}: {why}, not an attribute to audit; give each attribute column once"
MSG_NO_ATTRIBUTE = "{src}: no attribute column to audit; add one column per sensitive attribute beside image_id"
# Checks that touch every value go block by block: a full-length mask is fresh pages (a million images: 37 MB
# per column and check), a block's stays in cache.
_LINE_BLOCK = 1 << 16  # lines of one column (512 KB of float64)
_ROW_BLOCK = 1 << 12  # (run, image) rows of the dense (rows, keypoints, 2) arrays
# The steps of a long check, as the progress line names them.
MSG_STEP_READ = "Reading {src}"
MSG_STEP_IDS = "Checking the ids of {n:,} lines (duplicates, missing keypoints)"
MSG_STEP_VALUES = "Arranging the coordinates of {n_rows:,} rows"  # short: the line fits 80 columns


@dataclass(frozen=True)
class Predictions:
    """Validated predictions, pivoted to a dense (rows, keypoints) layout.

    A row is one (run, image) pair; every row has all ``K`` keypoints.

    Attributes
    ----------
    runs : ndarray of str, shape (R,)
        Run labels in order of appearance.
    keypoints : ndarray, shape (K,)
        Keypoint labels (int when all labels are integers, else str), sorted.
    row_run : ndarray of int, shape (N,)
        Run index of each row.
    row_image : ndarray of str, shape (N,)
        Image id of each row.
    pred, true : ndarray of float, shape (N, K, 2) or None
        Coordinates in pixels; NaN in ``pred`` marks a missing prediction.
    spacing : ndarray of float, shape (N, K) or None
        mm per pixel from the ``spacing_mm`` column.
    error : ndarray of float, shape (N, K) or None
        Precomputed radial error in mm from ``error_mm`` (NaN = missing).
    source : str
        Name of the file (or "predictions") for messages.
    labelled : ndarray of bool, shape (N, K) or None
        False where ``true_x`` and ``true_y`` are both empty: the image has no
        ground truth for that keypoint (not a miss). None when all are labelled.
    spacing_xy : ndarray of float, shape (N, K, 2) or None
        mm per pixel along x and y from ``spacing_x_mm``/``spacing_y_mm``
        (anisotropic pixels, e.g. from DICOM PixelSpacing).
    row_image_code : ndarray of int32, shape (N,) or None
        An integer per image id, one to one (the same id, the same code; one
        id per code): what counting images hashes instead of ``row_image``'s
        strings. Replace it together with ``row_image``, or set it to None.
    """

    runs: np.ndarray
    keypoints: np.ndarray
    row_run: np.ndarray
    row_image: np.ndarray
    pred: np.ndarray | None
    true: np.ndarray | None
    spacing: np.ndarray | None
    error: np.ndarray | None
    source: str
    labelled: np.ndarray | None = None
    spacing_xy: np.ndarray | None = None
    row_image_code: np.ndarray | None = None


def _source_name(obj: object, default: str) -> str:
    return os.fspath(obj) if isinstance(obj, (str, os.PathLike)) else default


# -- what any CSV reader of predictions or metadata must guarantee (the pandas reader below; a faster reader
# must call these same helpers or match them):
#   1. only an empty cell is missing in id and attribute columns: 'NA' (North America), 'None', 'NULL', 'n/a'
#      are values; numeric columns keep pandas' usual NA spellings (NaN, NA, null, ...) as missing;
#   2. a trailing comma at the end of every line (or of the header) adds no column and shifts nothing;
#   3. the encoding is UTF-8 (with or without BOM) or UTF-16 with a BOM, detected; another one is given
#      explicitly («encoding»); a file that does not decode is one line naming the encoding and the byte.
NUMERIC_COLUMNS = COORD_COLUMNS + (ERROR_COLUMN, SPACING_COLUMN)
NUMERIC_NA_STRINGS = ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                      "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null")
_BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


def _head_bytes(path: str, n: int = 1 << 16) -> bytes:
    """The first ``n`` bytes of the file, decompressed for ``.gz``."""
    if path.lower().endswith(".gz"):
        import gzip

        with gzip.open(path, "rb") as handle:
            return handle.read(n)
    with open(path, "rb") as handle:
        return handle.read(n)


def detect_encoding(path: str | os.PathLike[str], encoding: str | None = None) -> str:
    """The text encoding to read ``path`` with: ``encoding`` if given, else from the byte-order mark, else UTF-8.

    Raises
    ------
    InputError
        ``encoding`` is not a codec Python knows.

    Examples
    --------
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "t.csv")
    >>> _ = open(p, "w", encoding="utf-16").write("image_id,sex\\na,F\\n")
    >>> detect_encoding(p)
    'utf-16'
    """
    if encoding is not None:
        import codecs

        try:
            return codecs.lookup(encoding).name
        except (LookupError, TypeError):
            raise InputError(MSG_UNKNOWN_ENCODING.format(value=encoding)) from None
    head = _head_bytes(os.fspath(path), 4)
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name
    return "utf-8"


def encoding_error(src: str, exc: UnicodeDecodeError, encoding: str) -> InputError:
    """One line naming the encoding, the first byte that does not decode (and its line), and a guess."""
    try:
        head = _head_bytes(src, 1 << 22)
    except OSError:
        head = b""
    where, byte = "", exc.object[exc.start] if exc.start < len(exc.object) else 0
    try:
        head.decode(encoding)
    except UnicodeDecodeError as local:
        byte = head[local.start]
        line = head[:local.start].count(b"\n") + 1
        where = f" on line {line}"
    except LookupError:
        pass
    guess = ""
    if head.count(b"\x00") > len(head) // 4:
        guess = MSG_GUESS_UTF16
    elif encoding.replace("_", "-") in ("utf-8", "utf-8-sig"):
        guess = MSG_GUESS_LATIN1
    return InputError(MSG_ENCODING.format(src=src, encoding=encoding.upper(), byte=byte, where=where, guess=guess))


def csv_read_options(*, string_columns: Sequence[str] | None = (), encoding: str = "utf-8") -> dict[str, Any]:
    """Keyword arguments for :func:`pandas.read_csv` that keep the reader's guarantees (see above).

    Only an empty cell is missing, except in the numeric columns; no column is taken as the index (so a
    trailing comma adds a field instead of shifting every column); ``string_columns`` stay text (None:
    every column, as for metadata, whose groups are named as written: ``1`` and ``1.0`` are two groups).
    """
    dtype = str if string_columns is None else {c: str for c in string_columns}
    return dict(dtype=dtype, skipinitialspace=True, keep_default_na=False,
                na_values={c: list(NUMERIC_NA_STRINGS) for c in NUMERIC_COLUMNS}, index_col=False,
                encoding=encoding)


def drop_trailing_empty_columns(frame: pd.DataFrame, header: list[Any]) -> tuple[pd.DataFrame, list[Any]]:
    """Drop columns made by a trailing comma on the header line: no name and no value in any row.

    Returns the frame and the header without them.
    """
    keep = len(header)
    while keep > 0 and (header[keep - 1] is None or str(header[keep - 1]).strip() in ("", "nan")):
        column = frame.iloc[:, keep - 1]
        if not (column.isna() | column.astype(str).str.strip().eq("")).all():
            break
        keep -= 1
    if keep == len(header):
        return frame, header
    return frame.iloc[:, :keep], header[:keep]


def read_table(path: str | os.PathLike[str], *, kind: str = "table",
               string_columns: Sequence[str] | None = (ID_COLUMN, RUN_COLUMN, KEYPOINT_COLUMN),
               encoding: str | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet file into a DataFrame, ids kept as strings.

    Parameters
    ----------
    path : str or path-like
        ``.parquet``/``.pq`` files are read with pandas' Parquet reader; every
        other file is read as CSV.
    kind : str
        What the file is, for messages ("predictions", "metadata").
    string_columns : tuple of str or None
        Columns read as strings so ids such as ``"001"`` keep their zeros (None: every column of a CSV).
    encoding : str, optional
        Text encoding of a CSV; default UTF-8, or UTF-16 when the file starts with its byte-order mark.

    Returns
    -------
    pandas.DataFrame
    """
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(MSG_NOT_TABLE.format(kind=kind, type=type(path).__name__))
    src = os.fspath(path)
    if not os.path.exists(src):
        raise InputError(MSG_NO_FILE.format(src=src))
    if os.path.getsize(src) == 0:
        raise InputError(MSG_EMPTY.format(src=src))
    ext = os.path.splitext(src)[1].lower()
    text_encoding = "utf-8"
    try:
        if ext in (".parquet", ".pq"):
            frame = pd.read_parquet(src)
            for col in string_columns if string_columns is not None else (ID_COLUMN,):
                if col in frame.columns:
                    frame[col] = frame[col].astype("string").astype(object)
        else:
            text_encoding = detect_encoding(src, encoding)
            options = csv_read_options(string_columns=string_columns, encoding=text_encoding)
            frame = pd.read_csv(src, **options)
            # pandas renames a repeated header name ('sex', 'sex.1'); the raw header row shows the repeat.
            header = pd.read_csv(src, header=None, nrows=1, dtype=str, skipinitialspace=True, keep_default_na=False,
                                 encoding=text_encoding).iloc[0].tolist()
            frame, header = drop_trailing_empty_columns(frame, header)
    except pd.errors.EmptyDataError:
        raise InputError(MSG_EMPTY.format(src=src)) from None
    except UnicodeDecodeError as exc:
        raise encoding_error(src, exc, text_encoding) from None
    except InputError:
        raise
    except pd.errors.ParserError as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        import re

        ragged = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", detail)
        if ragged:
            raise InputError(MSG_RAGGED.format(src=src, line=ragged.group(2), n=ragged.group(3),
                                               m=ragged.group(1))) from None
        raise InputError(MSG_UNREADABLE.format(src=src, kind=kind, detail=detail)) from None
    except (UnicodeError, ValueError, OSError, ImportError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(MSG_UNREADABLE.format(src=src, kind=kind, detail=detail)) from None
    if ext not in (".parquet", ".pq"):
        _stripped_columns(header, src)
    frame.columns = _stripped_columns(frame.columns, src)
    if len(frame) == 0:
        raise InputError(MSG_EMPTY.format(src=src))
    return frame


def _stripped_columns(names: Iterable[object], src: str) -> list[str]:
    """Column names without surrounding spaces; InputError when two are then the same."""
    stripped = [str(c).strip() for c in names]
    seen = set()
    for name in stripped:
        if name in seen:
            raise InputError(MSG_DUP_COLUMN.format(src=src, col=name))
        seen.add(name)
    return stripped


def _hint(col: str, columns: Iterable[object]) -> str:
    close = difflib.get_close_matches(col, [str(c) for c in columns], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _require(frame: pd.DataFrame, col: str, src: str) -> None:
    if col not in frame.columns:
        raise InputError(
            MSG_MISSING_COLUMN.format(
                src=src, col=col, hint=_hint(col, frame.columns), found=", ".join(map(str, frame.columns))
            )
        )


def _file_row(index: int) -> int:
    # Line number in the file: one header line, 1-based.
    return int(index) + 2


def refuse_booleans(raw: pd.Series, col: str, src: str) -> None:
    """InputError when a column holds True/False (a bool dtype, or bools among objects): never read as 0/1."""
    if pd.api.types.is_bool_dtype(raw):
        raise InputError(MSG_BOOLEAN.format(src=src, col=col))
    if raw.dtype == object and pd.api.types.infer_dtype(raw, skipna=True) in ("boolean", "mixed", "mixed-integer"):
        if raw.map(type).isin([bool, np.bool_]).any():
            raise InputError(MSG_BOOLEAN.format(src=src, col=col))


def _numeric(cols: ColumnTable, col: str, src: str, *, allow_empty: bool, what: str = "a value") -> np.ndarray:
    """Column ``col`` as float64 (NaN = empty); InputError on text, infinity or a forbidden empty cell."""
    values = cols.numbers(col)
    if values is not None:  # stored as numbers: no text to check, and no full-length masks (fresh pages)
        i = _first_where(np.isinf, values)
        if i is not None:
            raise InputError(MSG_NOT_NUMBER.format(src=src, row=_file_row(i), col=col, value=str(values[i])))
        i = None if allow_empty else _first_where(np.isnan, values)
        if i is not None:
            raise InputError(MSG_EMPTY_CELL.format(src=src, row=_file_row(i), col=col, what=what))
        return values
    raw = cols.series(col)
    refuse_booleans(raw, col, src)
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    blank = raw.isna().to_numpy() | raw.astype(str).str.strip().eq("").to_numpy()
    bad = (np.isnan(values) & ~blank) | np.isinf(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(MSG_NOT_NUMBER.format(src=src, row=_file_row(i), col=col, value=str(raw.iloc[i]).strip()))
    if not allow_empty and blank.any():
        i = int(np.flatnonzero(blank)[0])
        raise InputError(MSG_EMPTY_CELL.format(src=src, row=_file_row(i), col=col, what=what))
    return values


def _first_where(test: Callable[[np.ndarray], np.ndarray], values: np.ndarray) -> int | None:
    """First index where ``test(values)`` holds, or None; checked block by block (no full-length mask)."""
    for lo in range(0, len(values), _LINE_BLOCK):
        hit = test(values[lo:lo + _LINE_BLOCK])
        if hit.any():
            return lo + int(np.flatnonzero(hit)[0])
    return None


def _id_column(frame: pd.DataFrame, col: str, src: str) -> np.ndarray:
    raw = frame[col]
    stripped = raw.astype(str).str.strip()
    blank = raw.isna().to_numpy() | stripped.eq("").to_numpy()
    if blank.any():
        i = int(np.flatnonzero(blank)[0])
        raise InputError(MSG_EMPTY_CELL.format(src=src, row=_file_row(i), col=col, what=f"a {col}"))
    return stripped.to_numpy(dtype=object)


def _keypoint_labels(values: object) -> np.ndarray:
    """Integer labels when every label is an integer, else strings."""
    as_num = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
    numbers = as_num.to_numpy()
    if as_num.dtype == np.int64:  # every label an integer that int64 holds: parsed exactly
        return numbers.astype(np.int64)
    # Parsed as floats: "inf" is a number to pandas but no integer label (and np.mod would warn on it), and a
    # whole number from 2**53 on ("1e20", or "9007199254740993" beside "2.0") may have been rounded: strings then.
    if (as_num.notna().all() and np.isfinite(numbers).all() and np.all(np.abs(numbers) < 2.0**53)
            and np.all(np.mod(numbers, 1) == 0)):
        return numbers.astype(np.int64)
    return np.asarray(values, dtype=object)


# -- check_predictions, step by step ------------------------------------------------------------
# Ids become integer codes once (dictionary encoding); duplicates, completeness and the pivot then work
# on integer keys, so no Python object is made per row.

@dataclass(frozen=True)
class _Ids:
    run: EncodedColumn
    image: EncodedColumn
    keypoint: EncodedColumn


@dataclass(frozen=True)
class _Rows:
    """One row per (run, image) pair, numbered in order of first appearance."""

    row_key: np.ndarray  # (n,) row of each input line
    first_line: np.ndarray  # (n_rows,) first input line of each row

    @property
    def n_rows(self) -> int:
        return len(self.first_line)


def _predictions_columns(data: pd.DataFrame | str | os.PathLike[str], src: str,
                         encoding: str | None = None) -> ColumnTable:
    """Step 1: the table as a ColumnTable (pyarrow for files, pandas when pyarrow cannot type it).

    The pyarrow reader takes plain UTF-8 CSV (and Parquet); a compressed file, another encoding (or a BOM), a
    ragged line or a trailing comma go to :func:`read_table`, whose guarantees the fast reader matches.
    """
    if isinstance(data, pd.DataFrame):
        if len(data) == 0:
            raise InputError(MSG_EMPTY.format(src=src))
        _stripped_columns(data.columns, src)
        return frame_columns(data.reset_index(drop=True))
    if not isinstance(data, (str, os.PathLike)):
        read_table(data, kind="predictions")  # raises: not a table
    path = os.fspath(data)
    if not os.path.exists(path):
        raise InputError(MSG_NO_FILE.format(src=path))
    if os.path.getsize(path) == 0:
        raise InputError(MSG_EMPTY.format(src=path))
    ext = os.path.splitext(path)[1].lower()
    fast = ext in (".parquet", ".pq") or (ext != ".gz" and detect_encoding(path, encoding) == "utf-8")
    cols = (read_columns(path, id_columns=(ID_COLUMN, RUN_COLUMN, KEYPOINT_COLUMN),
                         numeric_columns=NUMERIC_COLUMNS + (SPACING_X_COLUMN, SPACING_Y_COLUMN), source=src)
            if fast else None)
    if cols is None:
        frame = read_table(path, kind="predictions", encoding=encoding)
        if len(frame) == 0:
            raise InputError(MSG_EMPTY.format(src=src))
        return frame_columns(frame.reset_index(drop=True))
    if cols.n_rows == 0:
        raise InputError(MSG_EMPTY.format(src=path))
    return cols


def _check_columns(cols: ColumnTable, src: str) -> tuple[bool, bool]:
    """Step 2: required columns; returns (has_error, has_coords)."""
    for col in (ID_COLUMN, KEYPOINT_COLUMN):
        if col not in cols.names:
            raise InputError(MSG_MISSING_COLUMN.format(src=src, col=col, hint=_hint(col, cols.names),
                                                       found=", ".join(cols.names)))
    has_error = ERROR_COLUMN in cols.names
    has_coords = all(c in cols.names for c in COORD_COLUMNS)
    if not has_error and not has_coords:
        missing = [c for c in COORD_COLUMNS if c not in cols.names]
        hint = _hint(missing[0], cols.names) or _hint(ERROR_COLUMN, cols.names)
        raise InputError(MSG_NEED_COORDS_OR_ERROR.format(src=src, hint=hint, found=", ".join(cols.names)))
    return has_error, has_coords


def _encode_ids(cols: ColumnTable, src: str) -> _Ids:
    """Step 3: run, image and keypoint as integer codes; InputError on an empty id."""
    encoded = {}
    for col in (ID_COLUMN, KEYPOINT_COLUMN, RUN_COLUMN):
        if col == RUN_COLUMN and col not in cols.names:
            enc = EncodedColumn(np.zeros(cols.n_rows, dtype=np.int32), np.asarray([DEFAULT_RUN], dtype=object))
        else:
            enc = cols.encode(col)
            cols.release(col)
        blank = enc.first_blank()
        if blank is not None:
            raise InputError(MSG_EMPTY_CELL.format(src=src, row=_file_row(blank), col=col, what=f"a {col}"))
        encoded[col] = enc
    return _Ids(run=encoded[RUN_COLUMN], image=encoded[ID_COLUMN], keypoint=encoded[KEYPOINT_COLUMN])


def _row_index(ids: _Ids) -> _Rows:
    """Step 4: (run, image) pairs as rows in order of first appearance."""
    pair = ids.run.codes.astype(np.int64) * len(ids.image.labels) + ids.image.codes
    row_key, first_line = first_appearance_codes(pair, len(ids.run.labels) * len(ids.image.labels))
    del pair
    return _Rows(row_key=row_key, first_line=first_line)


def _check_duplicates(ids: _Ids, rows: _Rows, src: str) -> None:
    """Step 5: one line per (run, image, keypoint), checked on one combined integer key."""
    n_kp = len(ids.keypoint.labels)
    key = rows.row_key.astype(np.int64) * n_kp + ids.keypoint.codes
    n = len(key)
    space = rows.n_rows * n_kp
    if space <= 4 * n + 1024:
        index_type = np.int32 if n < 2**31 - 1 else np.int64
        first = np.full(space, n, dtype=index_type)
        first[key[::-1]] = np.arange(n - 1, -1, -1, dtype=index_type)  # the last write, the first line, wins
        first_of_line = first[key]
    else:
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        first_of_line = first[inverse.ravel()]
    repeat = first_of_line != np.arange(n, dtype=first_of_line.dtype)
    if repeat.any():
        i = int(np.flatnonzero(repeat)[0])
        raise InputError(MSG_DUPLICATE.format(
            src=src, row=_file_row(i), run=ids.run.labels[ids.run.codes[i]], image=ids.image.labels[ids.image.codes[i]],
            kp=ids.keypoint.labels[ids.keypoint.codes[i]], first=_file_row(first_of_line[i])))


def _keypoint_order(ids: _Ids, src: str) -> tuple[np.ndarray, np.ndarray]:
    """Step 6: keypoint labels (int when all are integers, sorted) and each line's keypoint column."""
    kp_uniques = ids.keypoint.labels
    kp_labels = _keypoint_labels(kp_uniques)
    _, first_of_label, label_count = np.unique(kp_labels.astype(str), return_index=True, return_counts=True)
    if (label_count > 1).any():
        # e.g. "1" and "1.0": one keypoint written two ways would become two columns.
        j = int(first_of_label[np.flatnonzero(label_count > 1)[0]])
        twin = next(u for i, u in enumerate(kp_uniques) if i != j and str(kp_labels[i]) == str(kp_labels[j]))
        raise InputError(MSG_KP_SPELLING.format(src=src, a=kp_uniques[j], b=twin))
    order = np.argsort(kp_labels, kind="stable") if kp_labels.dtype != object else np.arange(len(kp_labels))
    kp_rank = np.empty(len(order), dtype=np.int32)
    kp_rank[order] = np.arange(len(order))
    return kp_labels[order], kp_rank[ids.keypoint.codes]


def _check_complete(ids: _Ids, rows: _Rows, kp_index: np.ndarray, keypoints: np.ndarray, src: str) -> None:
    """Step 7: every (run, image) row has every keypoint (counted with bincount)."""
    n_kp = len(keypoints)
    counts = np.bincount(rows.row_key, minlength=rows.n_rows)
    if (counts != n_kp).any():
        bad_row = int(np.flatnonzero(counts != n_kp)[0])
        first = int(rows.first_line[bad_row])
        have = set(kp_index[rows.row_key == bad_row].tolist())
        missing_kp = keypoints[min(set(range(n_kp)) - have)]
        raise InputError(MSG_INCOMPLETE.format(
            src=src, image=ids.image.labels[ids.image.codes[first]], run=ids.run.labels[ids.run.codes[first]],
            n_have=len(have), n_all=n_kp, kp=missing_kp))


def _in_row_order(ids: _Ids, rows: _Rows, block: int = 1 << 16) -> bool:
    """Whether line i holds row ``i // K`` and keypoint code ``i % K`` (K keypoints), as most writers order them.

    Then every (row, keypoint) appears exactly once: no duplicate, no image short of a keypoint, and the
    pivot is a reshape. Checked block by block, with no full-size temporary.
    """
    n_kp = len(ids.keypoint.labels)
    n = len(rows.row_key)
    if n != rows.n_rows * n_kp:
        return False
    for start in range(0, n, block):
        line = np.arange(start, min(n, start + block))
        if not (np.array_equal(rows.row_key[line[0]:line[-1] + 1], line // n_kp)
                and np.array_equal(ids.keypoint.codes[line[0]:line[-1] + 1], line % n_kp)):
            return False
    return True


class _Pivot:
    """Step 8: scatter per-line values into a dense (rows, keypoints) array."""

    def __init__(self, rows: _Rows, kp_index: np.ndarray, n_kp: int, in_row_order: bool) -> None:
        self.shape = (rows.n_rows, n_kp)
        self.position: np.ndarray | None = None
        self.columns: np.ndarray | None = None
        if in_row_order:  # a reshape, then keypoints in label order (a view when already sorted)
            columns = np.argsort(kp_index[:n_kp], kind="stable")
            self.columns = None if np.array_equal(columns, np.arange(n_kp)) else columns
        else:
            self.position = rows.row_key.astype(np.int64) * n_kp + kp_index

    def __call__(self, values: np.ndarray) -> np.ndarray:
        if self.position is None:
            dense = values.reshape(self.shape)
            if self.columns is not None:
                return dense[:, self.columns]
            # A view of an array made here, else a copy (never alias the caller's data).
            return dense if values.flags.writeable and values.flags.owndata else dense.copy()
        out = np.full(self.shape[0] * self.shape[1], np.nan)
        out[self.position] = values
        return out.reshape(self.shape)

    def into(self, values: np.ndarray, out: np.ndarray) -> None:
        """Write the pivot of ``values`` into ``out`` (shape ``self.shape``, any strides).

        Lines in row order with keypoints in label order (what most writers produce) make no full-size
        temporary: at a million images each would be 0.3 GB of fresh pages. Keypoints in another order go
        through one (``np.take`` into a strided ``out``), lines in any order through the scatter's own array.
        """
        if self.position is not None:
            out[...] = self(values)
        elif self.columns is not None:
            np.take(values.reshape(self.shape), self.columns, axis=1, out=out)
        else:
            out[...] = values.reshape(self.shape)


@dataclass
class _Values:
    pred: np.ndarray | None = None
    true: np.ndarray | None = None
    spacing: np.ndarray | None = None
    error: np.ndarray | None = None
    labelled: np.ndarray | None = None
    spacing_xy: np.ndarray | None = None


def _values(cols: ColumnTable, pivot: _Pivot, has_coords: bool, has_error: bool, src: str,
            notes: list[str] | None) -> _Values:
    """Step 9: coordinates, errors, spacings and the labelled mask as dense arrays, checked.

    Each column is pivoted as soon as it is read and then freed, so the peak
    memory holds one long column (two for the ground truth) beside the dense arrays.
    """
    pred = true = spacing = error = labelled = spacing_xy = None
    any_pred = False
    if has_coords:
        pred = pooled_empty(pivot.shape + (2,))
        for axis, col in enumerate(("pred_x", "pred_y")):
            pivot.into(_numeric(cols, col, src, allow_empty=True), pred[..., axis])
            cols.release(col)
        for lo in range(0, len(pred), _ROW_BLOCK):  # blocks of rows: no full-length masks
            block = pred[lo:lo + _ROW_BLOCK]
            missing = np.isnan(block).any(axis=-1)  # a prediction needs both coordinates
            if missing.any():
                block[missing] = np.nan
            any_pred = any_pred or not missing.all()
        tx = _numeric(cols, "true_x", src, allow_empty=True)
        cols.release("true_x")
        ty = _numeric(cols, "true_y", src, allow_empty=True)
        cols.release("true_y")
        line_labelled = check_unlabelled(tx, ty, src, allow_empty=has_error)
        true = pooled_empty(pivot.shape + (2,))
        pivot.into(tx, true[..., 0])
        del tx
        pivot.into(ty, true[..., 1])
        del ty
        if not line_labelled.all():
            labelled = pivot(line_labelled.astype(float)).astype(bool)
        del line_labelled
    if has_error:
        if has_coords and any_pred:
            note(MSG_ERROR_OVERRIDES.format(src=src), notes, stacklevel=3)
        err = _numeric(cols, ERROR_COLUMN, src, allow_empty=True)
        neg = err < 0
        if neg.any():
            i = int(np.flatnonzero(neg)[0])
            raise InputError(MSG_NEGATIVE.format(src=src, row=_file_row(i), col=ERROR_COLUMN, value=err[i], rule=">= 0"))
        error = pivot(err)
    if SPACING_COLUMN in cols.names:
        sp = _numeric(cols, SPACING_COLUMN, src, allow_empty=False, what="a pixel spacing in mm")
        bad = ~(sp > 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(MSG_NEGATIVE.format(src=src, row=_file_row(i), col=SPACING_COLUMN, value=sp[i], rule="> 0"))
        spacing = pivot(sp)
    axis_spacing = check_axis_spacing(cols, src)
    if axis_spacing is not None:
        spacing_xy = np.stack([pivot(a) for a in axis_spacing], axis=-1)
    return _Values(pred=pred, true=true, spacing=spacing, error=error, labelled=labelled, spacing_xy=spacing_xy)


def check_predictions(data: pd.DataFrame | str | os.PathLike[str], *, source: str | None = None,
                      encoding: str | None = None, notes: list[str] | None = None,
                      step: Step | None = None) -> Predictions:
    """Validate a predictions table and pivot it to (rows, keypoints).

    Parameters
    ----------
    data : pandas.DataFrame or path
        Long-format predictions (see README, "Input schema"). Files are read
        with pyarrow (CSV multi-threaded, or Parquet).
    source : str, optional
        Name used in messages; defaults to the path or "predictions".
    encoding : str, optional
        Text encoding of a CSV file (default: UTF-8, or UTF-16 with a byte-order mark).
    notes : list of str, optional
        Where to append notes for the user (an ``error_mm`` column beside
        coordinates); without it they are warnings.
    step : callable, optional
        Called with the name of each step as it starts (reading, checking
        ids, arranging coordinates): see :func:`fairlandmark.progress.progress_steps`.

    Returns
    -------
    Predictions

    Raises
    ------
    InputError
        On a missing/misspelt column, a non-number, a duplicate row or an
        image that lacks a keypoint.

    Notes
    -----
    Ids are turned into integer codes once; every later check works on
    integer keys (duplicates by one combined key, completeness by
    ``bincount``), so a million images x 37 keypoints validate in seconds.
    """
    src = source or _source_name(data, "predictions")
    step = step or no_step
    step(MSG_STEP_READ.format(src=os.path.basename(src)))  # the line is short: the file, not its folders
    cols = _predictions_columns(data, src, encoding)
    has_error, has_coords = _check_columns(cols, src)
    step(MSG_STEP_IDS.format(n=cols.n_rows))
    ids = _encode_ids(cols, src)
    rows = _row_index(ids)
    in_row_order = _in_row_order(ids, rows)  # implies no duplicate and no missing keypoint
    if not in_row_order:
        _check_duplicates(ids, rows, src)
    keypoints, kp_index = _keypoint_order(ids, src)
    if not in_row_order:
        _check_complete(ids, rows, kp_index, keypoints, src)
    pivot = _Pivot(rows, kp_index, len(keypoints), in_row_order)
    runs, first = ids.run.labels, rows.first_line
    row_run = ids.run.codes[first].astype(np.int64)
    row_image_code = ids.image.codes[first]
    row_image = np.asarray(ids.image.labels[row_image_code], dtype=object)
    del ids, rows, kp_index  # per-line codes: not needed any more
    step(MSG_STEP_VALUES.format(n_rows=len(row_run)))
    values = _values(cols, pivot, has_coords, has_error, src, notes)
    return Predictions(
        runs=np.asarray(runs, dtype=object),
        keypoints=keypoints,
        row_run=row_run,
        row_image=row_image,
        pred=values.pred,
        true=values.true,
        spacing=values.spacing,
        error=values.error,
        source=src,
        labelled=values.labelled,
        spacing_xy=values.spacing_xy,
        row_image_code=row_image_code,
    )


def check_metadata(data: pd.DataFrame | str | os.PathLike[str], *, image_ids: Iterable[str],
                   attributes: Sequence[str] | None = None, source: str | None = None,
                   encoding: str | None = None, notes: list[str] | None = None) -> pd.DataFrame:
    """Validate metadata and align it to the predictions' images.

    Parameters
    ----------
    data : pandas.DataFrame or path
        ``image_id`` plus one column per sensitive attribute.
    image_ids : array-like of str
        Image ids used by the predictions; each must be in the metadata.
    attributes : list of str, optional
        Columns to audit; default: every column except ``image_id``.
    source : str, optional
        Name used in messages.
    encoding : str, optional
        Text encoding of a CSV file (default: UTF-8, or UTF-16 with a byte-order mark).

    Returns
    -------
    pandas.DataFrame
        Indexed by image id (str), holding the requested attribute columns.
        Metadata rows with no predictions are dropped with a warning.
    """
    src = source or _source_name(data, "metadata")
    frame = (read_table(data, kind="metadata", string_columns=None, encoding=encoding)
             if not isinstance(data, pd.DataFrame) else data)
    if len(frame) == 0:
        raise InputError(MSG_EMPTY.format(src=src))
    frame = frame.reset_index(drop=True)
    frame.columns = _stripped_columns(frame.columns, src)
    _require(frame, ID_COLUMN, src)
    ids = _id_column(frame, ID_COLUMN, src)
    index = pd.Index(ids, name=ID_COLUMN)  # its hash table, built here, serves the matching below too
    if not index.is_unique:
        i = int(np.flatnonzero(index.duplicated())[0])
        first = int(np.flatnonzero(ids == ids[i])[0])
        raise InputError(MSG_META_DUP.format(src=src, row=_file_row(i), image=ids[i], first=_file_row(first)))
    if attributes is None:
        attributes = [c for c in frame.columns if c != ID_COLUMN]
        if not attributes:
            raise InputError(MSG_NO_ATTRIBUTE.format(src=src))
    for i, col in enumerate(attributes):
        if col == ID_COLUMN or col in attributes[:i]:
            why = "is the image key" if col == ID_COLUMN else "is given twice"
            raise InputError(MSG_BAD_ATTRIBUTE.format(col=col, why=why))
        _require(frame, col, src)
        blank = frame[col].isna().to_numpy() | frame[col].astype(str).str.strip().eq("").to_numpy()
        if blank.any():
            i = int(np.flatnonzero(blank)[0])
            raise InputError(MSG_META_NAN.format(src=src, row=_file_row(i), col=col))
    meta = frame[list(attributes)]  # a new frame already: the caller's is never changed
    meta.index = index

    wanted = pd.Index(pd.unique(np.asarray(image_ids, dtype=object)))
    absent = wanted.difference(meta.index)
    if len(absent):
        examples = ", ".join(map(repr, list(absent[:3])))
        raise InputError(MSG_NOT_IN_META.format(src=src, n=len(absent), examples=examples))
    unused = meta.index.difference(wanted)
    if len(unused):
        examples = ", ".join(map(repr, list(unused[:3])))
        note(MSG_META_UNUSED.format(src=src, n=len(unused), examples=examples), notes)
    return meta.loc[meta.index.intersection(wanted, sort=False)]


# -- Unlabelled ground truth and per-axis spacing (issue 18). Kept apart from check_predictions so the two can be
# -- merged independently: check_predictions calls these two helpers and stores what they return.

SPACING_X_COLUMN = "spacing_x_mm"
SPACING_Y_COLUMN = "spacing_y_mm"
MSG_HALF_UNLABELLED = (
    "{src}: row {row}, column '{col}' is empty; every row needs a ground-truth coordinate "
    "(leave both true_x and true_y empty for a keypoint without ground truth)"
)
MSG_AXIS_PAIR = "{src}: has '{have}' but not '{missing}'; give both spacing_x_mm and spacing_y_mm, or neither"
MSG_AXIS_AND_ISO = "{src}: has both 'spacing_mm' and spacing_x_mm/spacing_y_mm; keep one pixel-to-mm scale"


def check_unlabelled(true_x: np.ndarray, true_y: np.ndarray, src: str, *, allow_empty: bool = False) -> np.ndarray:
    """Labelled mask of the rows: False where both true coordinates are empty.

    Parameters
    ----------
    true_x, true_y : ndarray of float, shape (n_rows,)
        Parsed ``true_x``/``true_y`` (NaN = empty cell).
    src : str
        File name for messages.
    allow_empty : bool
        True when ``error_mm`` is given: the coordinates are then not used
        and an empty one is no error (every row counts as labelled).

    Returns
    -------
    ndarray of bool, shape (n_rows,)

    Raises
    ------
    InputError
        When exactly one of the two coordinates of a row is empty.

    Examples
    --------
    >>> check_unlabelled(np.array([1.0, np.nan]), np.array([2.0, np.nan]), "p.csv")
    array([ True, False])
    """
    if allow_empty:
        return np.ones(len(true_x), dtype=bool)
    empty_x, empty_y = np.isnan(true_x), np.isnan(true_y)
    half = empty_x != empty_y
    if half.any():
        i = int(np.flatnonzero(half)[0])
        col = "true_x" if empty_x[i] else "true_y"
        raise InputError(MSG_HALF_UNLABELLED.format(src=src, row=_file_row(i), col=col))
    return ~empty_x


def check_axis_spacing(frame: pd.DataFrame | ColumnTable, src: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-axis mm per pixel from ``spacing_x_mm``/``spacing_y_mm``, or None.

    Parameters
    ----------
    frame : pandas.DataFrame or ColumnTable
        The predictions table (column names stripped).
    src : str
        File name for messages.

    Returns
    -------
    (ndarray, ndarray) or None
        x and y spacing per row, each > 0.
    """
    cols = frame_columns(frame) if isinstance(frame, pd.DataFrame) else frame
    have = [c for c in (SPACING_X_COLUMN, SPACING_Y_COLUMN) if c in cols.names]
    if not have:
        return None
    if len(have) == 1:
        missing = SPACING_Y_COLUMN if have[0] == SPACING_X_COLUMN else SPACING_X_COLUMN
        raise InputError(MSG_AXIS_PAIR.format(src=src, have=have[0], missing=missing))
    if SPACING_COLUMN in cols.names:
        raise InputError(MSG_AXIS_AND_ISO.format(src=src))
    out = []
    for col in (SPACING_X_COLUMN, SPACING_Y_COLUMN):
        sp = _numeric(cols, col, src, allow_empty=False, what="a pixel spacing in mm")
        cols.release(col)
        bad = ~(sp > 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(MSG_NEGATIVE.format(src=src, row=_file_row(i), col=col, value=sp[i], rule="> 0"))
        out.append(sp)
    return out[0], out[1]
