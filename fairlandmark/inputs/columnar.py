"""Columnar access to a predictions table: ids as integer codes, numbers as float64 arrays.

A predictions file of a whole archive has tens of millions of rows. Holding
each id cell as a Python string and hashing tuples of them costs minutes and
tens of GB, so ids are dictionary-encoded once: a column becomes an integer
code per row plus its distinct labels (in order of first appearance), and
every check afterwards works on integers. Files are read with pyarrow
(Parquet; CSV in 64 MB slices, each parsed by the multi-threaded ``read_csv``,
only the needed columns); a CSV whose number columns pyarrow cannot parse as
numbers (a stray word, a date, True/False), a ragged line, a trailing comma,
an invalid UTF-8 byte or per-axis spacing columns is read again with pandas
(:func:`fairlandmark.inputs.schema.read_table`) so that the messages about the
offending cell and its guarantees stay those of the pandas reader. As there,
only an empty cell is missing in an id column ('NA', 'None', 'NULL' are ids);
number columns take pandas' NA spellings as missing.

The same :class:`ColumnTable` wraps a pandas DataFrame, so the validators in
:mod:`fairlandmark.inputs.schema` have one code path for files and frames.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd

from fairlandmark.exceptions import InputError

__all__ = ["ColumnTable", "EncodedColumn", "read_columns", "frame_columns", "first_appearance_codes", "pooled_empty",
           "NA_STRINGS"]

# Strings read as missing in number columns (schema.NUMERIC_NA_STRINGS, pandas' defaults); in id columns only an
# empty cell is missing.
NA_STRINGS = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                        "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})
# Columns the pandas reader reads as text, not numbers (so 'NA' there is not a number): CSVs with them go to pandas.
_PANDAS_ONLY_COLUMNS = frozenset({"spacing_x_mm", "spacing_y_mm"})
# Bytes of CSV parsed per read_csv call (one slice of the file in flight).
CSV_BLOCK_BYTES = 64 << 20
MSG_COLUMN_UNREADABLE = "{src}: column '{col}' cannot be read ({detail}); the file is damaged or cut short: write it again"
MSG_FILE_CHANGED = "{src}: the file changed while it was being read; audit a copy that nothing writes to"
MSG_NESTED_ID = "{src}: column '{col}' holds nested values ({kind}), not ids; give ids as text or whole numbers"
# A Parquet file whose columns hold at most this many bytes (8 per value) is read in one piece, a larger one
# a column at a time.
WHOLE_PARQUET_BYTES = 64 << 20
# Key spaces up to this many times the number of rows are counted with dense arrays; larger ones are sorted.
_DENSE_FACTOR = 4


def reading_pool() -> Any:
    """The pyarrow memory pool that files are read into: jemalloc where pyarrow has it, else the system's.

    pyarrow's default pool (mimalloc in its wheels) spent 4-10 s of system time on first touches of the
    1.7 GB a million-image Parquet file decodes to, on a 2-core VM; jemalloc read it in 1.1 s (system
    malloc 1.5-2.8 s). Only this package's reads use it: pyarrow's default pool, which other code in the
    process may use, is left as it is, and so are jemalloc's settings (it returns a released column's pages
    to the system after its decay time). A user who names a pool in ``ARROW_DEFAULT_MEMORY_POOL`` gets that one.
    """
    import pyarrow as pa

    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return pa.default_memory_pool()
    try:
        return pa.jemalloc_memory_pool()
    except NotImplementedError:  # a pyarrow built without jemalloc (e.g. some macOS and Windows wheels)
        return pa.system_memory_pool()


def pooled_empty(shape: tuple[int, ...], dtype: Any = np.float64) -> np.ndarray:
    """An uninitialised array in the reading pool (:func:`reading_pool`), like ``np.empty``.

    For the study's large arrays, made right after the columns they come from were read and freed: the pool
    hands out those columns' pages again. A fresh numpy array of that size is new pages, each first touch
    a fault (on the VM of BENCHMARKS.md, a 2 MB huge page at a time, slowest of all); at a million images
    the dense coordinates alone are 1.2 GB. The numbers are the same: only where the memory comes from
    changes.

    Parameters
    ----------
    shape : tuple of int
    dtype : numpy dtype, default float64

    Returns
    -------
    ndarray
        Writable and C-contiguous; it keeps its pyarrow buffer alive.

    Examples
    --------
    >>> a = pooled_empty((2, 3))
    >>> a[:] = 1.0
    >>> a.shape, a.dtype.name, float(a.sum())
    ((2, 3), 'float64', 6.0)
    """
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - pyarrow is a core dependency
        return np.empty(shape, dtype=dtype)
    kind = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    buffer = pa.allocate_buffer(max(1, count * kind.itemsize), memory_pool=reading_pool())
    return np.frombuffer(buffer, dtype=kind, count=count).reshape(shape)


@dataclass(frozen=True)
class EncodedColumn:
    """An id column as integer codes.

    Attributes
    ----------
    codes : ndarray of int32, shape (n,)
        Index into ``labels`` for each row; -1 for an empty cell.
    labels : ndarray of object (str), shape (U,)
        Distinct labels, stripped of surrounding spaces, in order of first
        appearance. Two raw spellings that strip alike share one label.
    """

    codes: np.ndarray
    labels: np.ndarray

    def first_blank(self) -> int | None:
        """Row index of the first empty cell, or None."""
        blank = np.flatnonzero(self.codes < 0)
        return int(blank[0]) if len(blank) else None


@dataclass
class ColumnTable:
    """Column names, row count and per-column accessors of a table.

    Attributes
    ----------
    names : list of str
        Column names, stripped of surrounding spaces.
    n_rows : int
    encode : callable
        ``encode(name) -> EncodedColumn``.
    numbers : callable
        ``numbers(name) -> ndarray of float64 or None``: the column as numbers
        when its storage is numeric (NaN for an empty cell), else None.
    series : callable
        ``series(name) -> pandas.Series``: the raw column, for checks of text
        cells and for messages.
    release : callable
        ``release(name)``: the caller is done with a column; a column held in
        memory is freed at once, which keeps the peak memory down (a large
        Parquet file's columns are read one at a time, when asked for, and
        held by nobody).

    A large Parquet file's accessors read from the file, so they raise
    :class:`fairlandmark.exceptions.InputError` for a damaged column or a
    file written again while it is read.
    """

    names: list
    n_rows: int
    encode: Callable[[str], EncodedColumn]
    numbers: Callable[[str], "np.ndarray | None"]
    series: Callable[[str], pd.Series]
    release: Callable[[str], None] = lambda name: None


def first_appearance_codes(keys: np.ndarray, space: int) -> tuple[np.ndarray, np.ndarray]:
    """Renumber integer keys by order of first appearance.

    Parameters
    ----------
    keys : ndarray of int, shape (n,)
        Values in ``[0, space)``.
    space : int
        Upper bound of the keys.

    Returns
    -------
    codes : ndarray of int32 (int64 beyond 2**31 rows), shape (n,)
        ``codes[i]`` is the rank of ``keys[i]`` among the distinct keys
        ordered by their first row.
    first_row : ndarray of int64, shape (U,)
        First row of each code.

    Examples
    --------
    >>> codes, first = first_appearance_codes(np.array([7, 3, 7, 5]), 8)
    >>> codes.tolist(), first.tolist()
    ([0, 1, 0, 2], [0, 1, 3])
    """
    keys = np.asarray(keys)
    n = len(keys)
    index = np.int32 if max(n, space) < 2**31 - 1 else np.int64  # half the memory for up to 2e9 lines
    if space <= _DENSE_FACTOR * n + 1024:
        first: np.ndarray = np.full(space, n, dtype=index)
        first[keys[::-1]] = np.arange(n - 1, -1, -1, dtype=index)  # the last write, the first row, wins
        used = np.flatnonzero(first < n)
        order = np.argsort(first[used], kind="stable")
        rank = np.zeros(space, dtype=index)
        rank[used[order]] = np.arange(len(used), dtype=index)
        return rank[keys], first[used[order]].astype(np.int64)
    distinct, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(distinct), dtype=index)
    rank[order] = np.arange(len(distinct), dtype=index)
    return rank[inverse.ravel()], first[order].astype(np.int64)


def _merge_labels(codes: np.ndarray, raw_labels: Iterable[object]) -> EncodedColumn:
    """Strip labels, merge those that strip alike, and code empty ones as -1 (only an empty id is missing).

    The raw labels are in order of first appearance, so the merged labels,
    numbered in order of their first raw label, are too.
    """
    stripped = ["" if v is None else str(v).strip() for v in raw_labels]
    keep = [None if s == "" else s for s in stripped]
    merged, labels = pd.factorize(np.asarray(keep, dtype=object), use_na_sentinel=True)
    codes = np.asarray(codes)
    if np.array_equal(merged, np.arange(len(merged))) and codes.dtype == np.int32:
        out = codes  # no label merged or emptied: the codes stand (a million images: no 37 M-line gather)
    else:
        lookup = np.append(merged.astype(np.int32), np.int32(-1))  # code -1 (an empty cell) looks up the last entry
        out = lookup[codes]
    return EncodedColumn(codes=out.astype(np.int32, copy=False), labels=np.asarray(labels, dtype=object))


def _arrow_labels(dictionary: Any) -> np.ndarray:
    """Labels of an arrow dictionary as a numpy object array (strings stripped by arrow, no Python loop)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_string(dictionary.type) or pa.types.is_large_string(dictionary.type):
        dictionary = pc.utf8_trim_whitespace(dictionary)
    return dictionary.to_numpy(zero_copy_only=False)


def _merge_arrow_labels(codes: np.ndarray, dictionary: Any) -> EncodedColumn:
    """:func:`_merge_labels` for the dictionary of ``pc.dictionary_encode`` (distinct values, no null),
    skipping the Python pass when no label needs merging."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not (pa.types.is_string(dictionary.type) or pa.types.is_large_string(dictionary.type)):
        return _merge_labels(codes, _arrow_labels(dictionary))
    # Checked on arrow strings, not on Python ones turned back into arrow (a million ids: 0.2 s). Distinct values
    # that stripping leaves as they are stay distinct: only then is the hashing count (0.25 s) skipped.
    trimmed = pc.utf8_trim_whitespace(dictionary)
    labels = trimmed.to_numpy(zero_copy_only=False)
    clash = ((pc.any(pc.not_equal(trimmed, dictionary)).as_py()
              and pc.count_distinct(trimmed).as_py() != len(trimmed))
             or pc.any(pc.equal(trimmed, "")).as_py())
    if clash:
        return _merge_labels(codes, labels)
    return EncodedColumn(codes=np.asarray(codes, dtype=np.int32), labels=labels.astype(object))


def _dictionary_key(dictionary: Any) -> tuple[int, ...]:
    """What identifies an arrow array's contents without reading them: its buffers' addresses, offset and
    length. Slices of one array (the batches of a row group) share it; equal keys mean equal contents."""
    return tuple(b.address if b is not None else 0 for b in dictionary.buffers()) + (dictionary.offset,
                                                                                      len(dictionary))


def _encode_arrow(column: Any) -> EncodedColumn:
    import pyarrow as pa
    import pyarrow.compute as pc

    if not column.num_chunks:
        return EncodedColumn(np.zeros(0, np.int32), np.zeros(0, object))
    if not pa.types.is_dictionary(column.type):
        chunks = pc.dictionary_encode(column).chunks
        # The hash table of dictionary_encode persists across chunks: each chunk's dictionary extends the one
        # before, so the last is the dictionary of every chunk, in order of first appearance.
        indices = pa.chunked_array([c.indices for c in chunks], type=chunks[0].indices.type)
        codes = pc.fill_null(indices, -1).to_numpy().astype(np.int32, copy=False)
        return _merge_arrow_labels(codes, chunks[-1].dictionary)
    # Already dictionary-encoded (Parquet read with read_dictionary, CSV slices): one dictionary per chunk. Map
    # each distinct dictionary into one global numbering, then renumber by first appearance. The chunks are the
    # reader's batches, and the batches of one row group share its whole dictionary (a million-image file:
    # 283 chunks, 36 dictionaries of 28,000 ids), so each dictionary is hashed once, not once per batch.
    chunks = column.chunks
    position: dict[tuple[int, ...], int] = {}
    dictionaries: list[Any] = []
    which: list[int] = []
    for c in chunks:
        key = _dictionary_key(c.dictionary)
        if key not in position:
            position[key] = len(dictionaries)
            dictionaries.append(c.dictionary)
        which.append(position[key])
    combined = pc.dictionary_encode(pa.concat_arrays(dictionaries))
    uniques = combined.dictionary
    empty = len(uniques)  # the code of an empty cell (a null index, or a null in a dictionary) until the end
    global_codes = pc.fill_null(combined.indices, empty).to_numpy()
    starts = np.cumsum([0] + [len(d) for d in dictionaries])
    # Each dictionary's entries as global codes, and one more entry for a null index (-1 looks up the last).
    lookups = [np.append(global_codes[starts[i]:starts[i + 1]], empty) for i in range(len(dictionaries))]
    indices = [pc.fill_null(c.indices, -1).to_numpy() for c in chunks]
    # First appearances on the dictionaries, not on every line: the chunks from the last to the first, each
    # scattering its (reversed) line numbers into its dictionary's entries, so the last write, the earliest
    # line, wins; then the earliest over the dictionaries that hold a label. At a million images this keeps
    # three full-length temporaries (the joined codes, the keys to rank, their ranks) out: fresh pages that
    # cost more than the arithmetic.
    n = len(column)
    first_of_entry = [np.full(len(lookup), n, dtype=np.int64) for lookup in lookups]
    hi = n
    for i, x in zip(reversed(which), reversed(indices)):
        lo = hi - len(x)
        first_of_entry[i][x[::-1]] = np.arange(hi - 1, lo - 1, -1, dtype=np.int64)
        hi = lo
    first = np.full(empty + 1, n, dtype=np.int64)
    for lookup, entry_first in zip(lookups, first_of_entry):
        np.minimum.at(first, lookup, entry_first)
    in_order = np.flatnonzero(first < n)
    in_order = in_order[np.argsort(first[in_order], kind="stable")]  # global codes by first appearance
    rank = np.zeros(empty + 1, dtype=np.int32)
    rank[in_order] = np.arange(len(in_order), dtype=np.int32)
    codes = np.empty(n, dtype=np.int32)
    lo = 0
    ranked_lookups = [rank[lookup] for lookup in lookups]
    for i, x in zip(which, indices):
        codes[lo:lo + len(x)] = ranked_lookups[i][x]
        lo += len(x)
    del indices
    if (in_order == empty).any():  # empty cells: back to -1, through the generic path
        labels = np.append(_arrow_labels(uniques).astype(object), np.array([None], dtype=object))[in_order]
        return _merge_labels(codes, list(labels))
    return _merge_arrow_labels(codes, uniques.take(pa.array(in_order)))


def _arrow_numbers(column: Any) -> np.ndarray | None:
    import pyarrow as pa

    kind = column.type
    if pa.types.is_null(kind):
        return np.full(len(column), np.nan)
    if not (pa.types.is_floating(kind) or pa.types.is_integer(kind)):
        return None
    if pa.types.is_float64(kind) and column.num_chunks > 1 and column.null_count == 0:
        # One array in the reading pool, seen by numpy without a copy: the pool reuses the pages of the
        # column read before, where numpy's own array would be fresh pages.
        return pa.concat_arrays(column.chunks, memory_pool=reading_pool()).to_numpy()
    return column.to_numpy().astype(np.float64, copy=False)


def _table_columns(table: Any) -> ColumnTable:
    names = [str(n).strip() for n in table.column_names]
    columns = dict(zip(names, table.columns))
    n_rows = table.num_rows
    del table

    return ColumnTable(
        names=names,
        n_rows=n_rows,
        encode=lambda name: _encode_arrow(columns[name]),
        numbers=lambda name: _arrow_numbers(columns[name]),
        series=lambda name: columns[name].to_pandas(),
        release=lambda name: columns.pop(name, None) and None,
    )


def frame_columns(frame: pd.DataFrame) -> ColumnTable:
    """Wrap a DataFrame as a :class:`ColumnTable` (ids via ``pandas.factorize``).

    The caller has checked that the stripped column names are distinct.

    Examples
    --------
    >>> cols = frame_columns(pd.DataFrame({"image_id": ["a", " a", "b", None]}))
    >>> enc = cols.encode("image_id")
    >>> enc.codes.tolist(), enc.labels.tolist()
    ([0, 0, 1, -1], ['a', 'b'])
    """
    names = [str(c).strip() for c in frame.columns]

    def encode(name: str) -> EncodedColumn:
        raw = frame.iloc[:, names.index(name)]
        codes, uniques = pd.factorize(raw, use_na_sentinel=True)
        return _merge_labels(codes, list(uniques))

    def numbers(name: str) -> np.ndarray | None:
        raw = frame.iloc[:, names.index(name)]
        if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
            return raw.to_numpy(dtype=float, na_value=np.nan)
        return None

    return ColumnTable(names=names, n_rows=len(frame), encode=encode, numbers=numbers,
                       series=lambda name: frame.iloc[:, names.index(name)])


def _read_csv(src: str, header: list[str], stripped: list[str], id_columns: tuple[str, ...],
              numeric_columns: tuple[str, ...]) -> Any:
    """The CSV's id and number columns, read in slices of CSV_BLOCK_BYTES, each parsed by read_csv's threads.

    One slice in flight keeps the peak near the size of the table (reading the whole file at once costs
    about four times that); every slice is parsed multi-threaded (the streaming reader is single-threaded).
    Ids come out as dictionaries, never null (an empty cell is an empty label, coded -1 later; 'NA' is an id),
    numbers as float64 from the first line on, with pandas' NA spellings as missing: text in a number column,
    a ragged line or invalid UTF-8 raises here, and pandas reads the file instead.
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv

    wanted = [h for h, s in zip(header, stripped) if s in id_columns or s in numeric_columns]
    types = {h: (pa.dictionary(pa.int32(), pa.string()) if s in id_columns else pa.float64())
             for h, s in zip(header, stripped) if h in wanted}
    read_options = pcsv.ReadOptions(column_names=header, use_threads=True)
    parse_options = pcsv.ParseOptions(newlines_in_values=False)
    convert_options = pcsv.ConvertOptions(column_types=types, include_columns=wanted,
                                          null_values=sorted(NA_STRINGS), strings_can_be_null=False,
                                          quoted_strings_can_be_null=False)
    tables = []
    pool = reading_pool()

    def parse(lines: memoryview) -> None:
        # read_csv copies what it parses: the buffer is free again afterwards.
        tables.append(pcsv.read_csv(pa.py_buffer(lines), read_options=read_options, parse_options=parse_options,
                                    convert_options=convert_options, memory_pool=pool))

    # One buffer, filled again for every slice: a fresh 64 MB of bytes per slice (and another for joining on
    # the slice's last line) cost a million-image CSV about 10 s of page faults. The unfinished line at the
    # end of a slice moves to the buffer's start. A small file gets a buffer of its own size (zeroing 64 MB
    # cost every read 45 ms); a line longer than the buffer (which pyarrow's parser, with blocks of 1 MB,
    # could not take either) sends the file to pandas.
    buffer = bytearray(max(1, min(CSV_BLOCK_BYTES, os.path.getsize(src))))
    carried = 0
    with open(src, "rb") as handle:
        header_line = handle.readline()  # the header, already parsed
        if b"\r" in header_line.rstrip(b"\n").removesuffix(b"\r"):
            raise ValueError("lines that end in a carriage return alone: pandas reads them")
        while True:
            with memoryview(buffer) as view:
                got = handle.readinto(view[carried:])
                end = carried + got
                cut = buffer.rfind(b"\n", 0, end) + 1 if got else end  # after the last whole line; all at the end
                if cut:
                    parse(view[:cut])
            if not got:
                break
            carried = end - cut
            if carried == len(buffer):
                raise ValueError("a line longer than a CSV slice: pandas reads the file")
            buffer[:carried] = buffer[cut:end]  # the same length: moved in place
    if not tables:
        return pa.table({h: pa.array([], type=types[h]) for h in wanted})
    return pa.concat_tables(tables)


def read_columns(path: str | os.PathLike[str], *, id_columns: tuple[str, ...],
                 numeric_columns: tuple[str, ...], source: str | None = None) -> ColumnTable | None:
    """Read a CSV or Parquet file with pyarrow; None when pandas must read it.

    Parameters
    ----------
    path : str or path-like
        An existing, non-empty file.
    id_columns : tuple of str
        Columns read as text (ids such as ``"001"`` keep their zeros).
    numeric_columns : tuple of str
        Columns that must come out numeric; if pyarrow types one of them
        otherwise, or cannot parse the file at all, the caller reads it with
        pandas, whose messages name the offending cell.
    source : str, optional
        The file's name in messages (default: the path).

    Returns
    -------
    ColumnTable or None
        A large Parquet file's columns are read when they are asked for (see
        :class:`ColumnTable` for what that can raise).

    Raises
    ------
    InputError
        A Parquet id column of nested values (a struct, list or map).
    """
    try:
        import pyarrow as pa
        import pyarrow.csv as pcsv
    except ImportError:  # pragma: no cover - pyarrow is a core dependency
        return None
    src = os.fspath(path)
    ext = os.path.splitext(src)[1].lower()
    if ext == ".gz":
        return None  # compressed: pandas decompresses
    if ext in (".parquet", ".pq"):
        return _parquet_columns(src, id_columns, numeric_columns, source or src)
    try:
        with pcsv.open_csv(src, read_options=pcsv.ReadOptions(block_size=1 << 16)) as head:
            header = head.schema.names
        stripped = [h.strip() for h in header]
        if len(set(stripped)) != len(stripped) or len(set(header)) != len(header):
            return None  # a repeated column: pandas' reader names it in the message
        if "" in stripped or _PANDAS_ONLY_COLUMNS.intersection(stripped):
            return None  # a trailing comma on the header, or columns pandas reads as text
        # Ids as dictionaries and numbers as float64 (see _read_csv): no column to send back to pandas here.
        table = _read_csv(src, header, stripped, id_columns, numeric_columns)
    except (pa.ArrowException, OSError, ValueError):
        return None
    cols = _table_columns(table)
    cols.names = stripped  # every column of the file, for messages; only the needed ones were parsed
    return cols


def _parquet_columns(src: str, id_columns: tuple[str, ...], numeric_columns: tuple[str, ...],
                     name_in_messages: str) -> ColumnTable | None:
    """A Parquet file's needed columns: in one read for a small file, else each when it is asked for; None
    when pandas must read the file.

    A large file is read one column at a time, not as a whole table: the pool reuses a freed column's pages
    for the next one, where the table as a whole (1.7 GB at a million images) was all fresh pages. Columns
    the audit does not use are never read. The file is opened once, so every column comes from the same file
    even if its name is given to another one meanwhile; a file written again in place is refused.
    """
    try:
        import pyarrow as pa
        import pyarrow.dataset as pds
        import pyarrow.parquet as pq
    except ImportError:  # a pyarrow built without Parquet datasets (e.g. conda's pyarrow-core): pandas reads it
        return None

    try:
        handle = pa.OSFile(src)
        opened = _file_state(handle.fileno())
        footer = pq.read_metadata(handle)
        schema = footer.schema.to_arrow_schema()
    except (pa.ArrowException, OSError):  # not Parquet, or cut short: pandas' reader says so in its words
        return None
    names = [str(n).strip() for n in schema.names]
    if len(set(names)) != len(names):
        return None  # a repeated column: pandas' reader names it in the message
    for name, kind in zip(names, schema.types):
        if name in numeric_columns and _arrow_numbers(pa.chunked_array([], type=kind)) is None:
            return None
        if name in id_columns and pa.types.is_nested(kind):
            raise InputError(MSG_NESTED_ID.format(src=name_in_messages, col=name,
                                                  kind=_printable(str(kind).split("<")[0])))
    # Ids read as dictionaries: no Python string per row, and far less memory.
    text_ids = [raw for raw, name, kind in zip(schema.names, names, schema.types)
                if name in id_columns and (pa.types.is_string(kind) or pa.types.is_large_string(kind))]
    fragment = pds.ParquetFileFormat(read_options=pds.ParquetReadOptions(dictionary_columns=text_ids)).make_fragment(
        handle)
    raw_name = dict(zip(names, schema.names))
    needed = [raw_name[n] for n in names if n in id_columns or n in numeric_columns]
    if footer.num_rows * 8 * len(needed) <= WHOLE_PARQUET_BYTES:
        # A small file: its needed columns in one read (a read per column costs about 0.5 ms more each).
        try:
            cols = _table_columns(fragment.to_table(columns=needed, memory_pool=reading_pool()))
        except (pa.ArrowException, OSError):
            pass  # a damaged column: read one at a time below, so the message can name it
        else:
            cols.names = names  # every column of the file, for messages; only the needed ones were read
            return cols

    def refuse(message: str) -> InputError:
        handle.close()  # the file is free at once: the message may say to write it again
        return InputError(message)

    def column(name: str) -> Any:
        nonlocal opened
        state = _file_state(handle.fileno())
        if state != opened:  # touched, or written again: the footer says which
            try:
                same = state[0] == opened[0] and pq.read_metadata(handle).equals(footer)
            except (pa.ArrowException, OSError):
                same = False
            if not same:
                raise refuse(MSG_FILE_CHANGED.format(src=name_in_messages))
            opened = state
        try:
            return fragment.to_table(columns=[raw_name[name]], memory_pool=reading_pool()).column(0)
        except (pa.ArrowException, OSError) as exc:  # a damaged column chunk: the footer was fine
            raise refuse(MSG_COLUMN_UNREADABLE.format(src=name_in_messages, col=name,
                                                      detail=_printable(str(exc)))) from None

    return ColumnTable(names=names, n_rows=footer.num_rows,
                       encode=lambda name: _encode_arrow(column(name)),
                       numbers=lambda name: _arrow_numbers(column(name)),
                       series=lambda name: column(name).to_pandas())


def _file_state(fd: int) -> tuple[int, int]:
    """Size and modification time of an open file: what changes when it is written again in place."""
    state = os.fstat(fd)
    return state.st_size, state.st_mtime_ns


def _printable(text: str) -> str:
    """The first line of ``text``, at most 200 characters, without control characters (a damaged file's bytes
    and a user's field names can end up in pyarrow's texts)."""
    text = text.strip().splitlines()[0] if text.strip() else "no detail"
    return "".join(c if c.isprintable() else "?" for c in text[:200])
