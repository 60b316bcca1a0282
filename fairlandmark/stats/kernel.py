"""Per-keypoint metrics kernel: MRE, SDR and parity gaps, vectorised.

Layout. Errors arrive as an (N, K) matrix, one row per (run, image). They are
turned into a *value matrix* V of shape (N, M) whose columns are, per keypoint,
the indicator "prediction present", the error (0 where missing) and one hit
indicator per SDR threshold. Every metric is a ratio of sums of V over the
rows of a group, so one matrix product per run gives all of them:

    S[b, r, c, :] = sum over rows n of run r of  A[b, c, n] * V[n, :]

where ``A[b]`` assigns rows to labels (a one-hot of labels, possibly permuted,
or bootstrap multiplicities). ``b`` indexes resamples, so observed values,
permutations, bootstraps and the randomized baseline all share this kernel and
give bit-identical numbers for identical assignments: hit counts are integers,
exact in floating point, so the SDRs of a permutation equal to the identity
reproduce the observed SDRs exactly.

Unlabelled ground truth. When some (image, keypoint) has no ground truth
(COCO ``v = 0``), :func:`build_values` receives a ``labelled`` mask and appends
one more block, the indicator "labelled", after the hit blocks (so the other
slices do not move). SDR denominators are then the per-(group, keypoint) sums
of that block instead of the group's image count, and "present" means labelled
and predicted: an unlabelled point is neither a hit, a miss nor an MRE term.
Without unlabelled points the block is absent and every number is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, overload

import threading
import warnings

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

__all__ = [
    "mean_std_over_runs",
    "ValueLayout",
    "build_values",
    "RunKernel",
    "label_sums",
    "aggregate",
    "sdr_from_sums",
    "labelled_from_sums",
    "without_thin_groups",
    "mre_from_sums",
    "parity_gap",
    "parity_gap_value",
    "single_threaded_blas",
    "nan_mean",
    "spread",
    "cell_packs",
    "PackedCellCounts",
    "count_dtype",
]


def nan_mean(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """``np.nanmean(x, axis)``, the same numbers, without its "Mean of empty slice" warning (NaN there).

    Silencing that warning with ``warnings.catch_warnings`` is not safe on worker threads (it swaps the
    process-wide filters), so the resampling loops use this instead: NaN replaced by 0, summed, divided by
    the count of values, as numpy does.

    Examples
    --------
    >>> nan_mean(np.array([[1.0, np.nan], [3.0, np.nan]]))
    array([ 2., nan])
    """
    if not np.isnan(x).any():
        return x.mean(axis=axis)
    present = ~np.isnan(x)
    count = np.sum(present, axis=axis, dtype=np.intp)
    total = np.sum(np.where(present, x, 0.0), axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.true_divide(total, count)


def spread(values: Sequence[np.ndarray]) -> np.ndarray:
    """Elementwise largest minus smallest of two or more equal-shape arrays (a new array).

    Max and min are exact, so this is ``np.max(stack) - np.min(stack)`` bit for bit, without stacking copies.

    Examples
    --------
    >>> spread([np.array([0.2, 0.5]), np.array([0.4, 0.1]), np.array([0.3, 0.3])])
    array([0.2, 0.4])
    """
    high, low = np.maximum(values[0], values[1]), np.minimum(values[0], values[1])
    for more in values[2:]:
        np.maximum(high, more, out=high)
        np.minimum(low, more, out=low)
    return np.subtract(high, low, out=high)


def cell_packs(sizes: np.ndarray, bits: int = 24) -> list[list[tuple[int, int]]]:
    """Cells (all but the last) packed into bit fields of one float32 product, as (cell, shift) per pack.

    A cell's hit count in a run is at most its size, so it fits ``ceil(log2(size + 1))`` bits; a pack's fields
    together stay within the 24 bits that float32 holds exactly, so the product of the weights ``2**shift``
    with the 0/1 hits sums exact integers in any order and unpacks exactly. Three cells of 75 images
    share one product where one-hot rows took three. (Public as the layout of ``PackedCellCounts.packs``.)

    Examples
    --------
    >>> cell_packs(np.array([75, 80, 70, 75]))
    [[(0, 0), (1, 7), (2, 14)]]
    >>> cell_packs(np.array([3000, 4000, 5000, 100]))
    [[(0, 0), (1, 12)], [(2, 0)]]
    """
    packs: list[list[tuple[int, int]]] = []
    used = bits
    for cell, size in enumerate(sizes[:-1]):
        width = max(1, int(size).bit_length())  # = ceil(log2(size + 1))
        if used + width > bits:
            packs.append([])
            used = 0
        packs[-1].append((cell, used))
        used += width
    return packs


class PackedCellCounts:
    """Per-cell counts of 0/1 columns under many label assignments, from packed float32 products.

    One product row per label row (per pack, :func:`cell_packs`) instead of one one-hot row per cell: each
    label weighs ``2**shift`` of its cell's bit field, the float32 product sums exact integers, integer
    shifts and masks unpack them, and the last cell's counts are the column totals minus the others'.
    The counts are exactly those of the one-hot product.

    Parameters
    ----------
    max_cell_sizes : ndarray of int, shape (cells,)
        The largest size of each cell in any run (every field must hold it).

    Examples
    --------
    >>> counter = PackedCellCounts(np.array([2, 2, 1]))
    >>> values = np.array([[1, 0], [1, 1], [0, 1], [1, 1], [1, 0]], dtype=np.float32)
    >>> labels = np.array([[0, 1, 0, 2, 1]], dtype=np.int8)
    >>> [c.tolist() for c in counter.counts(labels, values, np.array([4, 3], dtype=np.int32))]
    [[[1, 1]], [[2, 1]], [[1, 1]]]
    """

    def __init__(self, max_cell_sizes: np.ndarray) -> None:
        self.n_cells = len(max_cell_sizes)
        self.packs = cell_packs(np.asarray(max_cell_sizes))
        # Per pack, each label's weight in the product: 2**shift for the pack's cells, 0 for the others.
        self.weights = np.zeros((len(self.packs), self.n_cells), dtype=np.float32)
        for p, pack in enumerate(self.packs):
            for cell, shift in pack:
                self.weights[p, cell] = 2.0 ** shift

    def counts(self, labels: np.ndarray, values: np.ndarray, totals: np.ndarray) -> list[np.ndarray]:
        """Counts of every cell, each (n, columns) in ``totals``' dtype (int32, or int16 where every count fits:
        half the bytes for the steps after), for label rows (n, rows) of the 0/1 float32 ``values`` (rows,
        columns) whose column sums are ``totals``."""
        n = labels.shape[0]
        if not self.packs:  # one cell: it holds every row
            return [np.broadcast_to(totals, (n, len(totals))).copy()]
        if len(self.packs) == 1:  # the common case: one product row per label row, no transpose
            rows = self.weights[0].take(labels)
        else:
            rows = self.weights[:, labels].transpose(1, 0, 2).reshape(n * len(self.packs), -1)
        packed = (rows @ values).reshape(n, len(self.packs), -1).astype(np.int32)
        dtype = totals.dtype
        out: list[np.ndarray] = [np.empty(0, dtype)] * self.n_cells
        rest: np.ndarray | None = None
        for p, pack in enumerate(self.packs):
            value = packed[:, p]
            for i, (cell, shift) in enumerate(pack):
                # Each field fits ``dtype`` (the casts below are exact).
                if i + 1 < len(pack):  # below the next field: mask it off
                    field = np.right_shift(value, shift) if shift else value
                    mask = (1 << (pack[i + 1][1] - shift)) - 1
                    narrow = field if shift and dtype == np.int32 else np.empty(field.shape, dtype)
                    field = np.bitwise_and(field, mask, out=narrow, casting="unsafe")
                elif dtype == np.int32:
                    field = np.right_shift(value, shift) if shift else value
                else:
                    field = np.right_shift(value, shift, out=np.empty(value.shape, dtype), casting="unsafe")
                out[cell] = field
                rest = field.copy() if rest is None else np.add(rest, field, out=rest)
        assert rest is not None
        out[-1] = np.subtract(totals, rest, out=rest)
        return out


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run the enclosed resampling loops, or the label sums of the point estimates, with one BLAS thread.

    Their products are many and small (one batch of resamples x one run, or one block of rows): BLAS
    threads cost more in synchronisation than they gain, and on a shared machine their spinning doubles or
    triples the CPU time of the whole audit (measured on the 2-core CI VM, docs in BENCHMARKS.md). Hit
    counts are exact either way; a sum of errors can differ in its last bit from a threaded product's
    (OpenBLAS then picks other kernels), and on one thread it is the same on every machine, whatever its
    cores. Without threadpoolctl (a scikit-learn dependency) nothing changes.

    Examples
    --------
    >>> with single_threaded_blas():
    ...     float((np.ones((2, 3)) @ np.ones(3))[0])
    3.0
    """
    with _ONE_BLAS_THREAD:
        yield


class _OneBlasThread:
    """The process's one-BLAS-thread state: the first block to enter sets the limit, the last to leave lifts it.

    BLAS thread counts are process-wide. With a limit set and lifted by each block, two blocks on different
    threads that overlap without nesting (audits in a user's threads, or significance workers) would leave
    the process at one thread for good: the second restores the limit it found, the first's. A count under a
    lock lifts it only when no block is left.

    The threadpoolctl controller is built once: ``threadpool_limits`` scans the loaded libraries on every call,
    1-7 ms each on the CI VM, more than a small audit's products. numpy's BLAS, the one these products use, is
    loaded with numpy, so it is always among the libraries it found.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inside = 0
        self._limiter: Any = None
        self._controller: Any = None
        self._looked = False

    def __enter__(self) -> None:
        with self._lock:
            if not self._looked:
                self._looked = True
                try:
                    from threadpoolctl import ThreadpoolController
                except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
                    pass
                else:
                    self._controller = ThreadpoolController()
            if self._controller is not None and self._inside == 0:
                self._limiter = self._controller.limit(limits=1, user_api="blas")
            self._inside += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._inside -= 1
            if self._inside == 0 and self._limiter is not None:
                self._limiter.restore_original_limits()
                self._limiter = None


_ONE_BLAS_THREAD = _OneBlasThread()


@dataclass(frozen=True)
class ValueLayout:
    """Column slices of the value matrix for K keypoints and T thresholds."""

    n_keypoints: int
    thresholds: tuple[float, ...]
    has_present: bool = True
    has_error: bool = True
    has_labelled: bool = False

    @property
    def n_columns(self) -> int:
        k = self.n_keypoints
        return k * (int(self.has_present) + int(self.has_error) + len(self.thresholds) + int(self.has_labelled))

    @property
    def labelled(self) -> slice | None:
        """Slice of the "labelled" block (last), or None when every point is labelled."""
        if not self.has_labelled:
            return None
        start = self.n_keypoints * (int(self.has_present) + int(self.has_error) + len(self.thresholds))
        return slice(start, start + self.n_keypoints)

    @property
    def present(self) -> slice | None:
        return slice(0, self.n_keypoints) if self.has_present else None

    @property
    def error(self) -> slice | None:
        if not self.has_error:
            return None
        start = self.n_keypoints * int(self.has_present)
        return slice(start, start + self.n_keypoints)

    def hits(self, t: int) -> slice:
        start = self.n_keypoints * (int(self.has_present) + int(self.has_error) + t)
        return slice(start, start + self.n_keypoints)


def build_values(errors: ArrayLike, thresholds: Iterable[float], *, present: bool = True, error: bool = True,
                 labelled: ArrayLike | None = None, keep_labelled: bool = False,
                 dtype: DTypeLike = np.float64, out: np.ndarray | None = None) -> tuple[np.ndarray, ValueLayout]:
    """Value matrix of indicators and errors for the kernel.

    Parameters
    ----------
    errors : ndarray, shape (N, K)
        Radial errors; NaN marks a missing prediction.
    thresholds : sequence of float
        SDR thresholds (inclusive: an error equal to the threshold is a hit).
    present, error : bool
        Whether to include the presence indicators and the errors.
    labelled : ndarray of bool, shape (N, K), optional
        False where the image has no ground truth for the keypoint (its error
        must be NaN). When some entry is False a "labelled" block is appended
        and becomes the SDR denominator; None or all True adds nothing.
    keep_labelled : bool, default False
        Append the "labelled" block even when ``labelled`` is all True: for
        rows of a study that has unlabelled points in other rows.
    dtype : numpy dtype
        float64 for reported numbers; float32 is exact for hit counts below
        2**24 and halves the cost of resampling.
    out : ndarray, shape (N, M), optional
        Where to write the values (of ``dtype``), say a buffer reused from
        block to block: its pages are touched once, not once per block.

    Returns
    -------
    values : ndarray, shape (N, M)
    layout : ValueLayout
    """
    errors = np.asarray(errors, dtype=np.float64)
    has_labelled = labelled is not None and (keep_labelled or not np.all(labelled))
    layout = ValueLayout(errors.shape[1], tuple(float(t) for t in thresholds), present, error, has_labelled)
    shape = (errors.shape[0], layout.n_columns)
    if out is not None and (out.shape != shape or out.dtype != np.dtype(dtype)):
        raise ValueError(f"build_values: out must be {np.dtype(dtype)} of shape {shape}, got {out.dtype} {out.shape}")
    values = np.empty(shape, dtype=dtype) if out is None else out
    is_present = ~np.isnan(errors)
    if present:
        values[:, layout.present] = is_present
    if error:
        where = values[:, layout.error]
        np.copyto(where, errors)
        np.copyto(where, 0.0, where=~is_present)
    hit = np.empty_like(is_present)
    for t, threshold in enumerate(layout.thresholds):
        np.less_equal(errors, threshold, out=hit)
        values[:, layout.hits(t)] = np.logical_and(hit, is_present, out=hit)  # a missing prediction never hits
    if has_labelled:
        values[:, layout.labelled] = np.asarray(labelled, dtype=bool)
    return values, layout


def count_dtype(row_run: ArrayLike) -> type[np.float32] | type[np.float64]:
    """The value dtype whose sums of 0/1 columns over a run's rows are exact: float32 (half the cost) while
    every run has fewer than 2**24 rows, float64 beyond.

    Examples
    --------
    >>> count_dtype(np.array([0, 0, 1]))
    <class 'numpy.float32'>
    """
    largest_run = int(np.bincount(np.asarray(row_run), minlength=1).max(initial=0))
    return np.float32 if largest_run < 2**24 else np.float64


def _runs_in_order(row_run: ArrayLike, n_runs: int) -> tuple[np.ndarray, list[slice], bool]:
    """Rows grouped by run: the stable order, each run's slice of it, and whether the rows already are."""
    row_run = np.asarray(row_run)
    order = np.argsort(row_run, kind="stable")
    bounds = np.searchsorted(row_run[order], np.arange(n_runs + 1))
    slices = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
    return order, slices, bool(np.array_equal(order, np.arange(len(row_run))))


class RunKernel:
    """Sums of value rows per label within each run, for many assignments.

    Parameters
    ----------
    values : ndarray, shape (N, M)
    row_run : ndarray of int, shape (N,)
        Run index of each row, in ``[0, n_runs)``.
    n_runs : int

    Notes
    -----
    Rows are grouped by run once; each call then does one (B*L, n_r) x (n_r, M)
    matrix product per run, with B assignments at a time.
    """

    def __init__(self, values: np.ndarray, row_run: ArrayLike, n_runs: int) -> None:
        self.n_runs = int(n_runs)
        self.order, self.slices, grouped = _runs_in_order(row_run, self.n_runs)
        if grouped:  # rows already grouped by run: views, no copy
            self.values = [np.ascontiguousarray(values[s]) for s in self.slices]
        else:
            self.values = [np.ascontiguousarray(values[self.order[s]]) for s in self.slices]
        self.n_columns = values.shape[1]

    @overload
    def sums(self, labels_by_run: Sequence[np.ndarray], n_labels: int,
             weights_by_run: Sequence[np.ndarray] | None = None, *,
             with_counts: Literal[True] = True) -> tuple[np.ndarray, np.ndarray]: ...

    @overload
    def sums(self, labels_by_run: Sequence[np.ndarray], n_labels: int,
             weights_by_run: Sequence[np.ndarray] | None = None, *,
             with_counts: bool) -> tuple[np.ndarray, np.ndarray | None]: ...

    def sums(self, labels_by_run: Sequence[np.ndarray], n_labels: int,
             weights_by_run: Sequence[np.ndarray] | None = None, *,
             with_counts: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Per-run, per-label sums and row counts.

        Parameters
        ----------
        labels_by_run : list of ndarray of int, each (B, n_r) or (n_r,)
            Label of each row of run r (kernel order), per assignment.
        n_labels : int
        weights_by_run : list of ndarray, each (B, n_r), optional
            Row multiplicities (bootstrap); default 1.
        with_counts : bool, default True
            Also return the weight per label; callers whose resampling keeps
            group sizes (permutations, stratified bootstrap) skip it.

        Returns
        -------
        sums : ndarray, shape (B, R, L, M)
        counts : ndarray, shape (B, R, L) or None
            Sum of weights (number of images) per label.
        """
        n_batch = max(np.atleast_2d(x).shape[0] for x in (weights_by_run or labels_by_run))
        dtype = self.values[0].dtype
        sums = np.zeros((n_batch, self.n_runs, n_labels, self.n_columns), dtype=np.float64)
        counts = np.zeros((n_batch, self.n_runs, n_labels), dtype=np.float64) if with_counts else None
        for r in range(self.n_runs):
            labels = np.atleast_2d(labels_by_run[r])
            if labels.shape[1] == 0:
                continue
            label_ids = np.arange(n_labels, dtype=labels.dtype)[None, :, None]
            assign = (labels[:, None, :] == label_ids).astype(dtype)  # (B or 1, L, n_r)
            if weights_by_run is not None:
                assign = assign * np.atleast_2d(weights_by_run[r])[:, None, :].astype(dtype)
            if counts is not None:
                counts[:, r, :] = assign.sum(axis=2, dtype=np.float64)
            assign = np.broadcast_to(assign, (n_batch,) + assign.shape[1:])
            flat = assign.reshape(n_batch * n_labels, -1) @ self.values[r]
            sums[:, r] = flat.reshape(n_batch, n_labels, -1)
        return sums, counts

    def labels_by_run(self, labels: ArrayLike) -> list[np.ndarray]:
        """Split row labels, shape (N,) or (B, N), into per-run blocks in kernel order."""
        labels = np.asarray(labels)
        return [labels[..., self.order[s]] for s in self.slices]


# Rows per step of label_sums: a value block of about 3.6 MB at K = 37 and one threshold, small enough that the
# allocator reuses it from step to step instead of asking the system for fresh pages each time.
LABEL_SUM_BLOCK_ROWS = 1 << 12


def label_sums(errors: ArrayLike, thresholds: Iterable[float], row_run: ArrayLike, n_runs: int,
               labels: ArrayLike, n_labels: int, *, labelled: ArrayLike | None = None,
               block_rows: int | None = None) -> tuple[np.ndarray, np.ndarray, ValueLayout]:
    """Per-run, per-label sums of the value matrix, built block by block.

    The same numbers as ``RunKernel(build_values(errors, thresholds, labelled=labelled)[0], row_run,
    n_runs).sums(..., labels, n_labels)`` for one assignment, without the (N, M) value matrix: at a
    million images x 37 keypoints that matrix alone is 0.9 GB. A run of at most ``block_rows`` rows is
    one product, the kernel's own, so its sums are the kernel's bit for bit on as many BLAS threads (the
    audit runs both on one: :func:`single_threaded_blas`); longer runs add their blocks' products in row
    order (hit counts stay exact; error sums agree to rounding).

    Parameters
    ----------
    errors : ndarray, shape (N, K)
    thresholds : sequence of float
    row_run : ndarray of int, shape (N,)
    n_runs : int
    labels : ndarray of int, shape (N,)
        Label of each row, in ``[0, n_labels)``.
    n_labels : int
    labelled : ndarray of bool, shape (N, K), optional
        As in :func:`build_values`.
    block_rows : int, optional
        Rows per product (default LABEL_SUM_BLOCK_ROWS).

    Returns
    -------
    sums : ndarray, shape (1, R, L, M)
    counts : ndarray, shape (1, R, L)
    layout : ValueLayout

    Examples
    --------
    >>> errors = np.array([[1.0], [3.0], [np.nan], [0.5]])
    >>> sums, counts, layout = label_sums(errors, [2.0], np.zeros(4, int), 1, np.array([0, 0, 1, 1]), 2)
    >>> sums[0, 0, :, layout.hits(0)].ravel().tolist(), counts.ravel().tolist()
    ([1.0, 1.0], [2.0, 2.0])
    """
    errors = np.asarray(errors, dtype=np.float64)
    thresholds = [float(t) for t in thresholds]
    block_rows = LABEL_SUM_BLOCK_ROWS if block_rows is None else int(block_rows)
    labels = np.asarray(labels)
    has_labelled = labelled is not None and not np.all(labelled)
    mask = np.asarray(labelled, dtype=bool) if has_labelled else None
    layout = ValueLayout(errors.shape[1], tuple(thresholds), True, True, has_labelled)
    order, run_slices, grouped = _runs_in_order(row_run, n_runs)
    sums = np.zeros((1, n_runs, n_labels, layout.n_columns), dtype=np.float64)
    counts = np.zeros((1, n_runs, n_labels), dtype=np.float64)
    label_ids = np.arange(n_labels, dtype=labels.dtype)[:, None]
    # One buffer for every block's values: fresh pages for each block cost more than filling them.
    buffer = np.empty((min(block_rows, max((run.stop - run.start for run in run_slices), default=0)),
                       layout.n_columns))
    for r, run in enumerate(run_slices):
        for lo in range(run.start, run.stop, block_rows):
            hi = min(lo + block_rows, run.stop)
            rows = slice(lo, hi) if grouped else order[lo:hi]
            # A block all labelled in a study that is not keeps the "labelled" block: one layout for all.
            values = build_values(errors[rows], thresholds, labelled=None if mask is None else mask[rows],
                                  keep_labelled=True, out=buffer[:hi - lo])[0]
            assign = (labels[rows][None, :] == label_ids).astype(np.float64)  # (L, rows)
            product = assign @ values
            if lo == run.start:
                sums[0, r], counts[0, r] = product, assign.sum(axis=1, dtype=np.float64)
            else:
                sums[0, r] += product
                counts[0, r] += assign.sum(axis=1, dtype=np.float64)
    return sums, counts, layout


def aggregate(sums: np.ndarray, counts: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Aggregate label sums to groups with a 0/1 (L, G) matrix.

    Returns group sums (..., G, M) and counts (..., G). Sums of integers stay
    exact. Each group adds up its few cells; with G and L at most a handful
    this beats a BLAS call with an inner dimension of 2-4.
    """
    if matrix.shape[0] == matrix.shape[1] and np.array_equal(matrix, np.eye(len(matrix))):
        return sums, counts  # the finest partition itself (an intersection)
    members = [np.flatnonzero(matrix[:, g]) for g in range(matrix.shape[1])]
    group_sums = np.stack([sums[..., idx, :].sum(axis=-2) for idx in members], axis=-2)
    group_counts = np.stack([counts[..., idx].sum(axis=-1) for idx in members], axis=-1)
    return group_sums, group_counts


def labelled_from_sums(sums: np.ndarray, counts: np.ndarray, layout: ValueLayout) -> np.ndarray:
    """Labelled images per group and keypoint, shape (..., G, K): the SDR denominators.

    The image count of the group for every keypoint when nothing is unlabelled.
    """
    if layout.has_labelled:
        return sums[..., layout.labelled]
    return counts[..., None]


def without_thin_groups(values: np.ndarray, sums: np.ndarray, layout: ValueLayout,
                        min_group_size: int) -> np.ndarray:
    """Per-(group, keypoint) values with NaN where a group has too few labelled images for the keypoint.

    A group can be large enough (``min_group_size`` images) yet have few
    images with ground truth for one keypoint; such a (group, keypoint) stays
    out of that keypoint's parity gap. ``values`` is returned unchanged when
    every point is labelled.

    Parameters
    ----------
    values : ndarray, shape (..., G, K)
        SDR or MRE per group and keypoint.
    sums : ndarray, shape (..., G, M)
        The group sums they come from.
    layout : ValueLayout
    min_group_size : int
    """
    if not layout.has_labelled:
        return values
    return np.where(sums[..., layout.labelled] < min_group_size, np.nan, values)


def sdr_from_sums(sums: np.ndarray, counts: np.ndarray, layout: ValueLayout, t: int = 0) -> np.ndarray:
    """SDR per group and keypoint: hits / labelled images (missing predictions are misses).

    Returns an array (..., G, K); NaN where a group has no (labelled) image.
    """
    hits = sums[..., layout.hits(t)]
    with np.errstate(invalid="ignore", divide="ignore"):
        return hits / labelled_from_sums(sums, counts, layout)


def mre_from_sums(sums: np.ndarray, layout: ValueLayout) -> np.ndarray:
    """MRE per group and keypoint over present predictions; NaN if none."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums[..., layout.error] / sums[..., layout.present]


def parity_gap(values: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Largest absolute gap between any two valid groups.

    The largest pairwise ``|v_g - v_h|`` is ``max_g v_g - min_g v_g``.

    Parameters
    ----------
    values : ndarray, shape (..., G, K)
    valid : ndarray of bool, shape (..., G)
        Groups that take part (large enough, with a value).

    Returns
    -------
    gap : ndarray, shape (..., K)
        NaN where fewer than two groups are valid.
    high, low : ndarray of int, shape (..., K)
        Group index of the largest value (first on ties) and the smallest
        (last on ties), so the pair is two distinct groups even at a gap of 0.
    """
    ok = valid[..., None] & ~np.isnan(values)
    top = np.where(ok, values, -np.inf)
    bottom = np.where(ok, values, np.inf)
    high = np.argmax(top, axis=-2)
    # Last minimum, so that with all values tied the pair is two distinct groups.
    n_groups = values.shape[-2]
    low = n_groups - 1 - np.argmin(np.flip(bottom, axis=-2), axis=-2)
    gap = np.take_along_axis(top, high[..., None, :], -2)[..., 0, :] - np.take_along_axis(
        bottom, low[..., None, :], -2
    )[..., 0, :]
    enough = ok.sum(axis=-2) >= 2
    return np.where(enough, gap, np.nan), high, low


def parity_gap_value(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """:func:`parity_gap` without the pair, for resampling loops.

    Uses plain max/min (no argmax) and skips masking when every group is
    valid and has a value, which is the common case under permutation.
    """
    if valid.all() and not np.isnan(values).any():
        return values.max(axis=-2) - values.min(axis=-2)
    ok = valid[..., None] & ~np.isnan(values)
    gap = np.where(ok, values, -np.inf).max(axis=-2) - np.where(ok, values, np.inf).min(axis=-2)
    return np.where(ok.sum(axis=-2) >= 2, gap, np.nan)


def mean_std_over_runs(x: np.ndarray | list, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample std (ddof=1) along ``axis``, ignoring NaN and infinities; std is NaN below two values.

    This is how every number "over runs" (or over folds) is summarised, as the
    paper reports mean ± std over its 10 hold-outs.

    Examples
    --------
    >>> m, s = mean_std_over_runs([0.1, 0.3, np.nan])
    >>> float(m), round(float(s), 4)
    (0.2, 0.1414)
    """
    x = np.asarray(x, dtype=float)
    x = np.where(np.isfinite(x), x, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(x, axis=axis)
        n = np.sum(~np.isnan(x), axis=axis)
        std = np.where(n >= 2, np.nanstd(x, axis=axis, ddof=1) if x.shape[axis] >= 2 else np.nan, np.nan)
    return mean, std
