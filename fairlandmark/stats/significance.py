"""Significance of per-keypoint parity gaps.

Four questions per (attribute, keypoint), all answered with the metrics kernel
(:mod:`fairlandmark.stats.kernel`) over batches of resamples, with no Python loop
per keypoint or per resample:

1. *Is the DP larger than chance?* A label-permutation test. The labels of the
   *images* are permuted, all keypoints of an image moving together (so the
   correlation between keypoints is kept), and one permutation of the finest
   cells permutes every attribute at once. An image evaluated in several
   runs keeps one label: it is permuted once, and its rows in every run
   follow it. Labels are exchanged between images that appear in the same
   runs (:func:`image_strata`): within each run for disjoint hold-outs,
   across all images for repeated runs of the same test set. The statistic
   is the mean DP over runs: a valid test of "no group effect in any run",
   one p-value per keypoint. ``p = (1 + #{T_perm >= T_obs}) / (1 + B)``.
2. *What does the paper's randomized-attribute baseline give?* Each image's
   attribute is exchanged with probability 0.5 (to a uniformly drawn other
   level), the intersection follows from the randomized base attributes; mean
   and std of the resulting DP over repeats.
3. *How uncertain are DP, SDR and MRE?* A stratified bootstrap: images are
   resampled with replacement within each (stratum of images, finest cell),
   an image's rows in every run together, so no group of any attribute
   vanishes; percentile intervals.
4. *Which gaps survive multiple testing?* Benjamini-Hochberg and Holm
   (statsmodels) and the Westfall-Young step-down minP adjustment computed
   from the same permutations, over all attributes x keypoints.

A threshold-free test runs on the same permutations: the largest pairwise MRE
gap, so a bias just past the SDR threshold is not missed.

Random streams: one :class:`numpy.random.SeedSequence` per task and stratum of
images (per run for disjoint runs), so a ``seed`` gives the same draws whatever
the batch size, and the same numbers bit for bit on one machine. Hit counts are
whole numbers, exact in float32 in any order, so DP, SDR and the baseline do
not depend on the batch size anywhere; the error sums (MRE, MRE gap) are
float32 products whose last bits can follow the product's shape on some BLAS
builds (OpenBLAS 0.3.31 on an AMD EPYC: up to 1e-7 relative). Where a permuted
MRE gap equals the observed one in exact arithmetic (errors on a coarse grid,
such as whole pixels, make that common), those bits decide the tie, and the
tie tolerance below (1e-9, sized for float64) does not absorb them: the MRE-gap
p-value can then move with the batch size and the CPU (by one permutation in
4,000 at 300 integer-pixel images, by up to 0.035 at 10-12). The batch size
follows from the options and the study, and from the available memory only
when that is short.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from fairlandmark.exceptions import InputError
from fairlandmark.progress import check_progress, progress_bar
from fairlandmark.stats.intervals import reported_gap_interval
from fairlandmark.stats.kernel import (RunKernel, aggregate, build_values, count_dtype, mre_from_sums, nan_mean,
                                       parity_gap_value, sdr_from_sums, single_threaded_blas, spread,
                                       without_thin_groups)
from fairlandmark.stats.workers import (Background, TaskQueue, batch_pool, check_n_jobs, run_all, run_parts,
                                       workers_for)

if TYPE_CHECKING:
    import pandas as pd

    from fairlandmark.inputs.study import Study

__all__ = [
    "SignificanceOptions",
    "SignificanceResult",
    "run_significance",
    "NormalNull",
    "permutation_batches",
    "westfall_young_minp",
    "benjamini_hochberg",
    "holm",
    "permutation_pvalue",
    "CORRECTIONS",
    "METHODS",
    "resolve_method",
    "ImageStrata",
    "image_strata",
    "draw_permutations",
    "permuted_labels",
]

CORRECTIONS = ("bh", "holm", "westfall-young")
METHODS = ("auto", "permutation", "normal")
# "auto" draws exact permutations up to this many (run, image) rows, and the large-sample normal null above it
# when every group in DP has at least LARGE_SAMPLE_MIN_GROUP images in every run (docs/scale.md).
LARGE_SAMPLE_ROWS = 50_000
LARGE_SAMPLE_MIN_GROUP = 1_000
# Memory of one batch of resamples is kept under this many bytes whatever batch_size says (same draws: the
# random streams do not depend on the batch size; see the module docstring for the float32 error sums).
BATCH_BYTES = 256 * 2**20
# The permuted image labels of the DP test are kept for the curve test (the very same permutations, drawn once)
# when they take at most this many bytes.
SHARED_PERMUTATION_BYTES = 64 * 2**20
# Random keys of permuted labels are drawn and sorted in blocks of about this many bytes, which stay in cache
# (a block of 10,000 x 300 keys took 60% longer than blocks of 218 rows; same keys either way).
_DRAW_BLOCK_BYTES = 2**18
# Statistics of a permutation equal to the observed one must count as ">=":
# exact for SDR gaps (integer hit counts), a relative tolerance for MRE gaps.
_TIE_TOLERANCE = 1e-9
# Westfall-Young works through the tests in blocks of about this many bytes per work array.
_WESTFALL_YOUNG_BLOCK_BYTES = 2**18

MSG_OPTION = "{name}: {rule}, got {value!r}"


MSG_UNKNOWN_OPTION = "«significance» has no option {key!r}; the options are: {known}"
MSG_IMAGE_TWICE = ("an image appears twice in one run: each (run, image) pair must be unique; "
                   "give repeated evaluations of an image different run names")


@dataclass(frozen=True)
class SignificanceOptions:
    """Options of the significance layer (all keyword-only in the API).

    Parameters
    ----------
    permutations : int, default 10000
        Label permutations for p-values (0 turns the test off).
    bootstrap : int, default 2000
        Stratified bootstrap resamples (0 turns intervals off).
    ci : float, default 0.95
        Coverage of the percentile intervals.
    alpha : float, default 0.05
        Significance level applied to the adjusted p-values.
    correction : {"bh", "holm", "westfall-young"}, default "bh"
        Multiple-testing adjustment used for ``p_adjusted`` and the flag; all
        three are reported.
    baseline_repeats : int, default 1000
        Repeats of the randomized-attribute baseline (0 turns it off).
    seed : int, default 0
    batch_size : int, default 500
        Resamples per kernel call; bounds memory, does not change results.
    progress : bool or rich.progress.Progress, default False
    method : {"auto", "permutation", "normal"}, default "auto"
        Null distribution of the p-values. "permutation": exact label
        permutations. "normal": the large-sample normal null of the per-cell
        sums (:mod:`fairlandmark.stats.asymptotic`), drawn ``permutations``
        times; its cost does not grow with the number of images. "auto":
        permutations up to ``LARGE_SAMPLE_ROWS`` (run, image) rows, the normal
        null above when every group in DP has ``LARGE_SAMPLE_MIN_GROUP``
        images or more in every run.
    n_jobs : int, default -1
        Worker threads for the resampling loops (-1 = all cores, 1 = none).
        The random draws stay in order on one thread, so the numbers are the
        same for any value. Give 1 when audits already run in parallel
        processes (one per core), or the threads compete for the cores.
    """

    permutations: int = 10000
    bootstrap: int = 2000
    ci: float = 0.95
    alpha: float = 0.05
    correction: str = "bh"
    baseline_repeats: int = 1000
    seed: int = 0
    batch_size: int = 500
    progress: object = False
    method: str = "auto"
    n_jobs: int = -1

    def __post_init__(self) -> None:
        for name in ("permutations", "bootstrap", "baseline_repeats", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise InputError(MSG_OPTION.format(name=name, rule="must be an integer >= 0", value=value))
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1:
            raise InputError(MSG_OPTION.format(name="batch_size", rule="must be an integer >= 1", value=self.batch_size))
        for name in ("ci", "alpha"):
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise InputError(MSG_OPTION.format(name=name, rule="must be a number between 0 and 1", value=value))
        if not 0 < self.ci < 1:
            raise InputError(MSG_OPTION.format(name="ci", rule="must be between 0 and 1, e.g. 0.95", value=self.ci))
        if not 0 < self.alpha < 1:
            raise InputError(MSG_OPTION.format(name="alpha", rule="must be between 0 and 1, e.g. 0.05", value=self.alpha))
        if self.method not in METHODS:
            raise InputError(MSG_OPTION.format(name="method", rule=f"must be one of {', '.join(METHODS)}",
                                               value=self.method))
        check_n_jobs(self.n_jobs)
        check_progress(self.progress)
        if self.correction not in CORRECTIONS:
            raise InputError(MSG_OPTION.format(name="correction", rule=f"must be one of {', '.join(CORRECTIONS)}",
                                               value=self.correction))

    @classmethod
    def coerce(cls, value: SignificanceOptions | Mapping[str, Any] | bool) -> SignificanceOptions:
        if isinstance(value, cls):
            return value
        if value is True:
            return cls()
        if isinstance(value, dict):
            known = [f.name for f in fields(cls)]
            unknown = [k for k in value if k not in known]
            if unknown:
                raise InputError(MSG_UNKNOWN_OPTION.format(key=unknown[0], known=", ".join(known)))
            return cls(**value)
        raise InputError(MSG_OPTION.format(name="significance", rule="must be SignificanceOptions, a dict or True",
                                           value=value))


# -- small exact helpers --------------------------------------------------------

def permutation_pvalue(null: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """``(1 + #{null >= observed}) / (1 + B)`` per test; NaN where observed is NaN.

    Parameters
    ----------
    null : ndarray, shape (B, m)
    observed : ndarray, shape (m,)

    Examples
    --------
    >>> permutation_pvalue(np.array([[0.1], [0.3], [0.5]]), np.array([0.3]))
    array([0.75])
    """
    null = np.asarray(null, dtype=float)
    observed = np.asarray(observed, dtype=float)
    tol = _TIE_TOLERANCE * np.maximum(1.0, np.abs(observed))
    count = np.sum(null >= observed - tol, axis=0)
    p = (1.0 + count) / (1.0 + null.shape[0])
    return np.where(np.isnan(observed), np.nan, p)


def westfall_young_minp(null: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Westfall-Young step-down minP adjusted p-values.

    Each permuted statistic gets its own permutation p-value within its test
    (the observed statistic counted among the B + 1), then the successive
    minima over tests ordered by raw p give the adjusted p-values, made
    monotone. Tests with a NaN statistic get NaN.

    Parameters
    ----------
    null : ndarray, shape (B, m)
        Permutation statistics (larger = more extreme), one column per test;
        NaN (no statistic for that permutation) counts as never extreme.
    observed : ndarray, shape (m,)

    Returns
    -------
    ndarray, shape (m,)

    Examples
    --------
    >>> null = np.array([[0.1, 0.2], [0.3, 0.1], [0.2, 0.4]])
    >>> westfall_young_minp(null, np.array([0.3, 0.5]))
    array([0.5 , 0.25])
    """
    null = np.asarray(null, dtype=float)
    observed = np.asarray(observed, dtype=float)
    out = np.full(observed.shape, np.nan)
    ok = ~np.isnan(observed)
    if not ok.any():
        return out
    tests = np.ascontiguousarray(null[:, ok].T)  # (m, B): one contiguous row per test
    obs = observed[ok]
    m, n_perm = tests.shape
    # Every p-value below is an integer count over n_perm + 1; counts are compared instead (the same order).
    raw_count = np.empty(m, dtype=np.int64)
    count_perm = np.empty((m, n_perm), dtype=np.int32)
    # A few tests at a time: each test's steps are its own, and a block's work arrays stay in the cache
    # (and are not allocated afresh at full size), the same numbers.
    block = max(1, _WESTFALL_YOUNG_BLOCK_BYTES // (8 * max(1, n_perm)))
    for lo in range(0, m, block):
        hi = min(m, lo + block)
        raw_count[lo:hi], count_perm[lo:hi] = _counts_within_tests(tests[lo:hi], obs[lo:hi])
    # Successive minima over the tests from the least significant (largest raw p) up, one row at a time:
    # a minimum.accumulate along the first axis is several times slower.
    by_raw = np.argsort(raw_count, kind="stable")
    exceed = np.empty(m, dtype=np.int64)
    smallest = count_perm[by_raw[-1]].copy()
    for i in range(m - 1, -1, -1):
        j = by_raw[i]
        np.minimum(smallest, count_perm[j], out=smallest)
        exceed[i] = np.count_nonzero(smallest <= raw_count[j])
    adjusted = np.maximum.accumulate((1.0 + exceed) / (n_perm + 1.0))
    result = np.empty_like(adjusted)
    result[by_raw] = np.minimum(adjusted, 1.0)
    out[ok] = result
    return out


def _counts_within_tests(tests: np.ndarray, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For tests (rows of permuted statistics, (m, B), NaN replaced in place) and their observed statistics:
    the observed count, (m,) int64 (1 + permuted statistics >= it, with the tie tolerance), and each permuted
    statistic's own count (values >= it among the B permutations plus the observed one), in permutation
    order, (m, B) int32."""
    # A permutation whose statistic is NaN (a permuted group too small for a keypoint) is never as extreme
    # as the observed one, as in permutation_pvalue; -inf sorts it first and gives it p = 1.
    tests[np.isnan(tests)] = -np.inf
    m, n_perm = tests.shape
    order = np.argsort(tests, axis=1)
    ascending = np.empty_like(tests)
    for j in range(m):  # row by row: several times faster than take_along_axis
        tests[j].take(order[j], out=ascending[j])
    low = np.abs(ascending)  # then ascending - _TIE_TOLERANCE * max(1, |ascending|), in place
    np.maximum(low, 1.0, out=low)
    low *= -_TIE_TOLERANCE
    low += ascending
    first = _first_at_least(ascending, low)
    obs_low = obs - _TIE_TOLERANCE * np.maximum(1.0, np.abs(obs))
    raw_count = 1 + n_perm - np.array([np.searchsorted(ascending[j], obs_low[j], side="left") for j in range(m)],
                                      dtype=np.int64).reshape(m)
    count_sorted = (n_perm - first + (obs[:, None] >= low)).astype(np.int32)
    count_perm = np.empty_like(count_sorted)
    for j in range(m):  # back to permutation order
        count_perm[j][order[j]] = count_sorted[j]
    return raw_count, count_perm


def _first_at_least(ascending: np.ndarray, low: np.ndarray) -> np.ndarray:
    """Per row of sorted ``ascending``, the first index whose value is >= ``low`` (``searchsorted`` left).

    Preconditions: rows of ``ascending`` sorted ascending; ``low`` each element's value less its tie
    tolerance, so non-decreasing along each row and <= ``ascending`` (NaN for +inf values).

    Values come in clusters of near-equal statistics (equal up to rounding): a cluster starts where the value
    before is below the element's band, and the answer is the start of the element's cluster whenever the
    cluster's first value is inside the element's band. Found for all elements at once; the few elements of
    wider clusters (chains of near-ties) are searched.
    """
    m, n = ascending.shape
    starts = np.zeros((m, n), dtype=np.int32)
    if n == 0:
        return starts
    new_cluster = ascending[:, :-1] < low[:, 1:]
    np.multiply(new_cluster, np.arange(1, n, dtype=np.int32), out=starts[:, 1:])
    np.maximum.accumulate(starts, axis=1, out=starts)
    first_value = np.empty_like(ascending)
    for j in range(m):  # row by row: several times faster than take_along_axis
        ascending[j].take(starts[j], out=first_value[j])
    outside = ~(first_value >= low)  # a NaN band (+inf values) is searched too
    for row in np.flatnonzero(outside.any(axis=1)):
        where = np.flatnonzero(outside[row])
        starts[row, where] = np.searchsorted(ascending[row], low[row, where], side="left")
    return starts


def benjamini_hochberg(p: ArrayLike) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (step-up, FDR).

    Same numbers as ``statsmodels.stats.multitest.multipletests(p,
    method="fdr_bh")`` (checked in the tests); written out because importing
    statsmodels costs more than the whole permutation test.

    Examples
    --------
    >>> benjamini_hochberg(np.array([0.01, 0.04, 0.03]))
    array([0.03, 0.04, 0.04])
    """
    p = np.asarray(p, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def holm(p: ArrayLike) -> np.ndarray:
    """Holm step-down adjusted p-values (FWER); equals statsmodels' ``holm``.

    Examples
    --------
    >>> holm(np.array([0.01, 0.04, 0.03]))
    array([0.03, 0.06, 0.06])
    """
    p = np.asarray(p, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (m - np.arange(m))
    adjusted = np.maximum.accumulate(scaled)
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out


_ADJUSTERS = {"bh": benjamini_hochberg, "holm": holm}


def _adjust(p: np.ndarray, method: str) -> np.ndarray:
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = _ADJUSTERS[method](p[ok])
    return out


def _random_permutations(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    """``n`` random permutations of ``range(m)``, as an (n, m) index array.

    Sorting 32-bit random keys is twice as fast as Fisher-Yates here; two equal
    keys in a row (probability about m**2 / 2**33, 1e-5 for m = 300) only fix
    the order of those two rows, a deviation far below Monte-Carlo error.
    """
    return np.argsort(_random_keys(rng, n, m), axis=1)


def _random_keys(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    return rng.integers(0, 2**32, size=(n, m), dtype=np.uint32)


def permuted_labels(rng: np.random.Generator, labels: np.ndarray, n: int,
                    out: np.ndarray | None = None) -> np.ndarray:
    """``n`` random permutations of small non-negative integer ``labels``, shape (n, len(labels)) (written into
    ``out`` when given, an (n, len(labels)) array of ``labels``' dtype).

    The very arrays of ``labels[_random_permutations(rng, n, len(labels))]`` (the same random keys, the same
    order), drawn faster: each label rides in the low bits of its key, so one sort of the keys gives the
    permuted labels without the sort indices (a sort is about twice as fast as an argsort, and no gather
    follows). The rare rows where two keys agree above those bits are sorted again by their full keys.

    Examples
    --------
    >>> labels = np.array([0, 0, 1, 2, 1], dtype=np.int8)
    >>> drawn = permuted_labels(np.random.default_rng(1), labels, 3)
    >>> drawn.shape
    (3, 5)
    >>> bool((np.sort(drawn, axis=1) == np.sort(labels)).all())
    True
    """
    labels = np.asarray(labels)
    m = len(labels)
    bits = int(labels.max(initial=0)).bit_length() if m else 0
    if out is None:
        out = np.empty((n, m), dtype=labels.dtype)
    if m < 2 or bits > 16 or int(labels.min()) < 0:
        out[...] = labels[_random_permutations(rng, n, m)]
        return out
    low = (1 << max(bits, 1)) - 1
    # In blocks of rows whose keys stay in cache (the stream goes on from block to block: the same keys).
    block = max(1, _DRAW_BLOCK_BYTES // (4 * m))
    for start in range(0, n, block):
        _permuted_block(rng, labels, low, out[start:start + block])
    return out


def _permuted_block(rng: np.random.Generator, labels: np.ndarray, low: int, out: np.ndarray) -> None:
    """:func:`permuted_labels` of ``len(out)`` rows, written into ``out``, for labels below ``low + 1`` (a power
    of two)."""
    keys = _random_keys(rng, len(out), len(labels))
    packed = np.bitwise_and(keys, np.uint32(~low & 0xFFFFFFFF))
    packed |= labels.astype(np.uint32)
    packed.sort(axis=1)
    # Neighbours equal above the label bits (key order unknown) differ by less than 2**bits; so do a few others
    # (sorted again too, for nothing).
    tied = np.subtract(packed[:, 1:], packed[:, :-1]).min(axis=1, initial=np.uint32(0xFFFFFFFF)) <= low
    out[...] = np.bitwise_and(packed, np.uint32(low), out=packed)  # the labels, which fit their dtype
    if tied.any():
        rows = np.flatnonzero(tied)
        out[rows] = labels[np.argsort(keys[rows], axis=1)]


def _quantiles(x: np.ndarray, q: Sequence[float]) -> np.ndarray:
    """``np.nanquantile(x, q, axis=0)``; without NaN the same numbers from the much faster ``np.quantile``."""
    return np.nanquantile(x, q, axis=0) if np.isnan(x).any() else np.quantile(x, q, axis=0)


def _run_mean(x: np.ndarray, axis: int = -2) -> np.ndarray:
    """Mean over the run axis, ignoring NaN (a run where a group is out of DP); no warnings (worker threads)."""
    return nan_mean(x, axis=axis)


# -- exchangeable strata of images -----------------------------------------------------

@dataclass(frozen=True)
class ImageStrata:
    """Images grouped into strata whose labels are exchangeable under "no group effect".

    An image may appear in several runs (repeated runs, cross-validation
    repeats that share test images); its rows in every run belong to one
    image and must keep one label. Under the null an image's label is
    exchangeable with that of any image that appears in the *same set of
    runs*: these images form a stratum. Permuting (or resampling) image
    labels within each stratum, every row following its image, keeps every
    run's group sizes. With disjoint runs (hold-outs) a stratum is a run's
    images, so this is the classical within-run permutation; with identical
    runs there is a single stratum and each image is permuted once for all
    runs.

    Attributes
    ----------
    starts, sizes : ndarray of int, shape (S,)
        Position of each stratum on the image axis (strata one after the
        other, in order of first appearance; images within a stratum in order
        of first appearance).
    rows_by_run : list of ndarray of int
        Image-axis position of each row of run r (kernel order).
    runs_by_stratum : list of ndarray of int
        The runs the images of each stratum appear in.
    by_run : bool
        True when each stratum is exactly one run's rows in kernel order
        (disjoint runs): row labels are then slices of the image axis.
    """

    starts: np.ndarray
    sizes: np.ndarray
    rows_by_run: list[np.ndarray]
    runs_by_stratum: list[np.ndarray]
    by_run: bool

    @property
    def n_images(self) -> int:
        return int(self.sizes.sum())

    @property
    def n_strata(self) -> int:
        return len(self.sizes)

    def stratum(self, s: int) -> slice:
        """Image-axis slice of stratum ``s``."""
        return slice(int(self.starts[s]), int(self.starts[s] + self.sizes[s]))

    def image_values(self, values_by_run: Sequence[np.ndarray]) -> np.ndarray:
        """One value per image (shape (n_images,)) from per-row values that agree across an image's rows."""
        first = next((v for v in values_by_run if len(v)), np.zeros(0))
        out = np.zeros(self.n_images, dtype=first.dtype)
        for rows, values in zip(self.rows_by_run, values_by_run):
            out[rows] = values
        return out

    def to_runs(self, per_image: np.ndarray) -> list[np.ndarray]:
        """Per-run row blocks (kernel order) of an (..., n_images) array: each row takes its image's value."""
        if self.by_run:
            return [per_image[..., self.stratum(r)] for r in range(len(self.rows_by_run))]
        return [per_image[..., rows] for rows in self.rows_by_run]


def image_strata(images_by_run: Sequence[ArrayLike]) -> ImageStrata:
    """The exchangeable strata of images (see :class:`ImageStrata`).

    Parameters
    ----------
    images_by_run : list of array-like, one per run
        Image id of each row of run r, in kernel order
        (:meth:`fairlandmark.stats.kernel.RunKernel.labels_by_run` of the
        study's ``row_image``). An image appears at most once per run.

    Returns
    -------
    ImageStrata

    Examples
    --------
    Two disjoint runs give one stratum per run; two runs of the same images one stratum:

    >>> image_strata([np.array(["a", "b"]), np.array(["c", "d"])]).sizes.tolist()
    [2, 2]
    >>> s = image_strata([np.array(["a", "b"]), np.array(["b", "a"])])
    >>> s.sizes.tolist(), [r.tolist() for r in s.rows_by_run]
    ([2], [[0, 1], [1, 0]])
    """
    import pandas as pd

    blocks = [np.asarray(x) for x in images_by_run]
    lengths = np.array([len(x) for x in blocks], dtype=np.int64)
    n_runs = len(blocks)
    flat = np.concatenate(blocks) if blocks else np.zeros(0)
    codes, uniques = pd.factorize(flat, sort=False)  # codes in order of first appearance
    codes = np.asarray(codes, dtype=np.int64)
    n_images = len(uniques)
    row_run = np.repeat(np.arange(n_runs), lengths)
    if np.bincount(codes * max(n_runs, 1) + row_run, minlength=n_images * max(n_runs, 1)).max(initial=0) > 1:
        raise InputError(MSG_IMAGE_TWICE)
    if n_images == 0:
        return ImageStrata(np.zeros(0, np.int64), np.zeros(0, np.int64), [np.zeros(0, np.int64) for _ in blocks], [],
                           n_runs == 0)
    member = np.zeros((n_images, n_runs), dtype=bool)
    member[codes, row_run] = True
    _, pattern = np.unique(np.packbits(member, axis=1), axis=0, return_inverse=True)
    pattern = np.asarray(pattern).ravel()
    n_patterns = int(pattern.max(initial=-1)) + 1
    # Strata in order of their first image (images are numbered in order of first appearance).
    first_image = np.full(n_patterns, n_images, dtype=np.int64)
    np.minimum.at(first_image, pattern, np.arange(n_images))
    rank = np.empty(n_patterns, dtype=np.int64)
    rank[np.argsort(first_image, kind="stable")] = np.arange(n_patterns)
    stratum_of_image = rank[pattern]
    order = np.argsort(stratum_of_image, kind="stable")  # image axis: stratum-major, first appearance within
    position = np.empty(n_images, dtype=np.int64)
    position[order] = np.arange(n_images)
    sizes = np.bincount(stratum_of_image, minlength=n_patterns).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    rows_by_run = [position[codes[bounds[r]:bounds[r + 1]]] for r in range(n_runs)]
    runs_by_stratum = [np.flatnonzero(member[order[starts[s]]]) for s in range(n_patterns)]
    by_run = n_patterns == n_runs and all(
        np.array_equal(rows_by_run[r], np.arange(starts[r], starts[r] + sizes[r])) for r in range(n_runs))
    return ImageStrata(starts, sizes, rows_by_run, runs_by_stratum, bool(by_run))


def _runs_as_strata(lengths: Sequence[int]) -> ImageStrata:
    """Every row its own image, each run one stratum (disjoint runs)."""
    sizes = np.asarray(lengths, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    rows = [np.arange(a, a + m) for a, m in zip(starts, sizes)]
    return ImageStrata(starts, sizes, rows, [np.array([r]) for r in range(len(sizes))], True)


# -- the computation -----------------------------------------------------------------

class _Context:
    """Prepared arrays shared by the resampling tasks."""

    def __init__(self, study: Study, thresholds: Sequence[float], min_group_size: int,
                 observed: Mapping[str, Any]) -> None:
        self.study = study
        self.coding = study.coding
        self.min_group_size = min_group_size
        self.method = "permutation"  # resolved by run_significance
        self.observed = observed
        # float32 halves the cost and keeps hit counts exact; presence columns
        # are needed only when some prediction is missing.
        self.any_missing = bool(np.isnan(study.errors).any())
        # Errors beyond float32's range (absurd, but finite) would turn into inf there: float64 then.
        dtype = np.float64 if bool((np.abs(study.errors) > np.finfo(np.float32).max).any()) else np.float32
        # Unlabelled points are NaN too, so they turn presence on; their mask gives per-keypoint SDR denominators.
        values, self.layout = build_values(study.errors, thresholds[:1], present=self.any_missing,
                                           labelled=getattr(study, "labelled", None), dtype=dtype)
        self.kernel = RunKernel(values, study.row_run, study.n_runs)
        small = np.int8 if self.coding.n_cells < 128 else np.int32  # cheaper comparisons
        self.cells_by_run = self.kernel.labels_by_run(self.coding.cell.astype(small))
        # Labels belong to images: resampling works on the image axis of these strata (one label per image).
        self.strata = image_strata(self.kernel.labels_by_run(study.row_image))
        self.image_cells = self.strata.image_values(self.cells_by_run)
        self.aggregations = {a: self.coding.aggregation(a) for a in self.coding.attributes}
        # The observed assignment through this kernel, once: its sums give the observed statistics for exact
        # comparison, its counts the cell sizes that permutations and the stratified bootstrap keep.
        self.identity_sums, counts = self.kernel.sums(self.cells_by_run, self.coding.n_cells)
        self.cell_counts = counts[0]

    def fixed_counts(self, n: int) -> np.ndarray:
        return np.broadcast_to(self.cell_counts, (n,) + self.cell_counts.shape)

    def stats(self, sums: np.ndarray, counts: np.ndarray, attribute: str,
              valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """DP and MRE gap (mean over runs) and run-mean SDR/MRE per group."""
        gsums, gcounts = aggregate(sums, counts, self.aggregations[attribute])
        if valid is None:
            valid = gcounts >= self.min_group_size
        sdr = sdr_from_sums(gsums, gcounts, self.layout, 0)
        mre = self.mre(gsums, gcounts)
        # A group with too few labelled images of a keypoint stays out of its gaps, in every resample as observed.
        sdr_dp = without_thin_groups(sdr, gsums, self.layout, self.min_group_size)
        mre_dp = without_thin_groups(mre, gsums, self.layout, self.min_group_size)
        return _run_mean(parity_gap_value(sdr_dp, valid)), _run_mean(parity_gap_value(mre_dp, valid)), sdr, mre

    def mre(self, gsums: np.ndarray, gcounts: np.ndarray) -> np.ndarray:
        if self.any_missing:
            return mre_from_sums(gsums, self.layout)
        with np.errstate(invalid="ignore", divide="ignore"):
            return gsums[..., self.layout.error] / gcounts[..., None]

    def identity_stats(self, attribute: str) -> tuple[np.ndarray, np.ndarray]:
        """Observed DP and MRE gap through this (float32) kernel, for exact comparisons."""
        dp, gap, _, _ = self.stats(self.identity_sums, self.fixed_counts(1), attribute,
                                   valid=self.observed[attribute].valid)
        return dp[0], gap[0]


def _streams(seed: int, task: int, n_runs: int) -> list[np.random.Generator]:
    """One generator per run for a task, independent of batch sizes."""
    root = np.random.SeedSequence([int(seed), task])
    return [np.random.default_rng(s) for s in root.spawn(n_runs)]


def _batches(total: int, size: int) -> Iterator[tuple[int, int]]:
    start = 0
    while start < total:
        yield start, min(size, total - start)
        start += size


def resolve_method(method: str, n_rows: int, min_group: int) -> str:
    """The null actually used: "permutation" or "normal" (see :class:`SignificanceOptions`).

    Parameters
    ----------
    method : {"auto", "permutation", "normal"}
    n_rows : int
        (run, image) rows of the study.
    min_group : int
        Smallest group in DP, over attributes and runs.

    Examples
    --------
    >>> resolve_method("auto", 3000, 150), resolve_method("auto", 10**6, 2000), resolve_method("auto", 10**6, 50)
    ('permutation', 'normal', 'permutation')
    """
    if method != "auto":
        return method
    return "normal" if n_rows > LARGE_SAMPLE_ROWS and min_group >= LARGE_SAMPLE_MIN_GROUP else "permutation"


def _batch_size(ctx: _Context, options: SignificanceOptions, bytes_per_row: int) -> int:
    """Resamples per batch: ``batch_size``, or fewer so that one batch stays under BATCH_BYTES."""
    largest_run = max((s.stop - s.start for s in ctx.kernel.slices), default=1)
    per_resample = max(1, largest_run) * (bytes_per_row + 4 * ctx.coding.n_cells)  # + float32 assignment rows
    return int(max(1, min(options.batch_size, BATCH_BYTES // per_resample)))


def permutation_batches(cells_by_run: list[np.ndarray], n_permutations: int, *, seed: int,
                        batch_size: int, strata: ImageStrata | None = None,
                        drawn: np.ndarray | None = None) -> Iterator[tuple[int, int, list[np.ndarray]]]:
    """The label permutations of the DP test, batch by batch.

    The labels of *images* are permuted within each stratum of
    :func:`image_strata` (images that appear in the same runs), once per
    permutation, and every row of an image, in every run, takes its image's
    permuted label. One random stream per stratum (task 1 of ``seed``), so
    the permutations do not depend on ``batch_size``. With disjoint runs a
    stratum is a run: labels permuted within each run, one stream per run.
    Other tests that must use the very same permutations (measurements,
    error curves) draw them here.

    Parameters
    ----------
    cells_by_run : list of ndarray of int, each (n_r,)
        Cell of each row of run r, in kernel order (:meth:`RunKernel.labels_by_run`).
    n_permutations : int
    seed : int
    batch_size : int
    strata : ImageStrata, optional
        The images of the rows; default every row its own image (disjoint runs).
    drawn : ndarray, shape (n_permutations, n_images), optional
        These permutations already drawn (:func:`draw_permutations` with the same cells, strata and seed,
        e.g. ``SignificanceResult.shared_permutations``): sliced instead of drawn again.

    Yields
    ------
    start : int
        Index of the batch's first permutation.
    n : int
        Permutations in the batch.
    labels : list of ndarray, each (n, n_r)
        Permuted cells per run.
    """
    if strata is None:
        strata = _runs_as_strata([len(c) for c in cells_by_run])
    if drawn is not None and drawn.shape == (n_permutations, strata.n_images):
        for start, n in _batches(n_permutations, batch_size):
            yield start, n, strata.to_runs(drawn[start:start + n])
        return
    image_cells = strata.image_values(cells_by_run)
    rngs = _streams(seed, 1, strata.n_strata)
    for start, n in _batches(n_permutations, batch_size):
        permuted = np.empty((n, strata.n_images), dtype=image_cells.dtype)
        for s, rng in enumerate(rngs):
            cells = image_cells[strata.stratum(s)]
            permuted_labels(rng, cells, n, out=permuted[:, strata.stratum(s)])
        yield start, n, strata.to_runs(permuted)


def draw_permutations(cells_by_run: list[np.ndarray], n_permutations: int, *, seed: int,
                      strata: ImageStrata | None = None, workers: int = 1) -> np.ndarray:
    """All permutations of :func:`permutation_batches` at once, on the image axis, shape (n_permutations, n_images).

    The random streams do not depend on the batch size, so these are the very permutations that
    :func:`permutation_batches` yields batch by batch. Strata (one stream each) are drawn on up to
    ``workers`` threads; the numbers do not depend on it.
    """
    if strata is None:
        strata = _runs_as_strata([len(c) for c in cells_by_run])
    image_cells = strata.image_values(cells_by_run)
    out = np.empty((n_permutations, strata.n_images), dtype=image_cells.dtype)
    rngs = _streams(seed, 1, strata.n_strata)

    def draw(s: int) -> None:
        cells = image_cells[strata.stratum(s)]
        # In batches (the argsort fallback of permuted_labels takes 12 bytes per label, random keys and sort
        # indices; the common path works in blocks of _DRAW_BLOCK_BYTES): the same draws, bounded memory.
        batch = max(1, BATCH_BYTES // (12 * max(1, len(cells))))
        for start, n in _batches(n_permutations, batch):
            permuted_labels(rngs[s], cells, n, out=out[start:start + n, strata.stratum(s)])

    run_parts(draw, range(strata.n_strata), workers)
    return out


def _permutations(ctx: _Context, options: SignificanceOptions, bar: Any, drawn: np.ndarray | None = None, *,
                  workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The DP and MRE-gap nulls, each (permutations, attributes x K), attribute by attribute as the tests are
    laid out (each attribute's batches written into its own columns: no copy to join them)."""
    attrs = ctx.coding.attributes
    K = len(ctx.study.keypoints)
    B = options.permutations
    whole_dp, whole_gap = np.empty((B, len(attrs) * K)), np.empty((B, len(attrs) * K))
    null_dp = {a: whole_dp[:, i * K:(i + 1) * K] for i, a in enumerate(attrs)}
    null_gap = {a: whole_gap[:, i * K:(i + 1) * K] for i, a in enumerate(attrs)}
    normal = ctx.method == "normal"
    batches: Iterator[tuple[int, int, list[np.ndarray] | None]]
    if normal:
        large_sample = NormalNull(ctx.kernel, ctx.cells_by_run, ctx.strata, ctx.coding.n_cells, seed=options.seed,
                                  task=5)
        batches = ((start, n, None) for start, n in _batches(B, options.batch_size))
    else:
        batches = permutation_batches(ctx.cells_by_run, B, seed=options.seed, strata=ctx.strata, drawn=drawn,
                                      batch_size=_batch_size(ctx, options, bytes_per_row=16))  # at most key, index, label
    task = bar.add_task("permutations" if not normal else "large-sample null", total=B) if bar else None
    fast = None if normal else _fast_null_plan(ctx)

    def compute(start: int, n: int, labels: list[np.ndarray] | None, sums: np.ndarray | None) -> None:
        if fast is not None and labels is not None:
            for a, (dp, gap) in _fast_null(ctx, fast, labels, n).items():
                null_dp[a][start:start + n] = dp
                null_gap[a][start:start + n] = gap
        else:
            if sums is None:
                sums, _ = ctx.kernel.sums(labels or [], ctx.coding.n_cells, with_counts=False)
            counts = ctx.fixed_counts(n)
            for a in attrs:
                # Permutations keep group sizes, so the observed validity applies.
                dp, gap, _, _ = ctx.stats(sums, counts, a, valid=ctx.observed[a].valid)
                null_dp[a][start:start + n] = dp
                null_gap[a][start:start + n] = gap
        if bar:
            bar.advance(task, n)

    with batch_pool(workers) as pool:
        for start, n, labels in batches:
            # The normal draws come from sequential streams: drawn here, in order, whatever the workers.
            sums = large_sample.draw(n) if normal or labels is None else None  # (n, R, L, M)
            pool.submit(compute, start, n, labels, sums)
    return whole_dp, whole_gap


def _fast_null_plan(ctx: _Context) -> dict[str, tuple[list[np.ndarray], np.ndarray]] | None:
    """The permutation null's plan, :func:`_common_case_groups` (a function of its own so that tests can force
    the general path, as with :func:`_fast_bootstrap_plan` and :func:`_fast_baseline_plan`)."""
    return _common_case_groups(ctx)


def _common_case_groups(ctx: _Context) -> dict[str, tuple[list[np.ndarray], np.ndarray]] | None:
    """Per attribute, the cells of each group and the group sizes per run (R, G), when the common case holds:
    no missing prediction or unlabelled point, every group in DP in every run and none empty, two or more
    groups, finite float32 values. None otherwise (the general path)."""
    if ctx.any_missing or ctx.layout.has_labelled or ctx.layout.present is not None:
        return None
    # A float32 overflow (inf) times a zero weight is NaN in the general path's products, which it masks.
    if not all(np.isfinite(values).all() for values in ctx.kernel.values):
        return None
    plan = {}
    for a in ctx.coding.attributes:
        matrix = ctx.aggregations[a]
        sizes = ctx.cell_counts @ matrix
        valid = np.asarray(ctx.observed[a].valid)
        if matrix.shape[1] < 2 or not valid.all() or valid.shape != sizes.shape or not (sizes > 0).all():
            return None
        plan[a] = ([np.flatnonzero(matrix[:, g]) for g in range(matrix.shape[1])], sizes)
    return plan


def _fast_null(ctx: _Context, plan: Mapping[str, tuple[list[np.ndarray], np.ndarray]], labels: list[np.ndarray],
               n: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """DP and MRE-gap nulls of a batch in the common case (:func:`_fast_null_plan`), per run without the
    (permutations, runs, cells, columns) array of the general path.

    The same product per run as :meth:`RunKernel.sums` (same operands, so the same float32 sums), then the
    same float64 operations in the same order: group sums of cells, SDR and MRE as sums / images, the gap
    as max - min, and the mean over runs in the general path's order (:class:`_RunGaps`). The same numbers;
    the hit and error columns side by side in each operation (elementwise, so the same bits in half the
    calls).
    """
    n_cells = ctx.coding.n_cells
    hits, error = ctx.layout.hits(0), ctx.layout.error
    assert error is not None  # the DP context always has its error columns
    R, K = ctx.study.n_runs, len(ctx.study.keypoints)
    run_gaps = _RunGaps(R, K)
    dp: dict[str, np.ndarray] = {}
    for r in range(R):
        cells = _cell_major(_one_hot_product(labels[r], n_cells, ctx.kernel.values[r]), n_cells)
        for a, (members, sizes) in plan.items():
            ratios = _group_ratio_list(cells, members, sizes[r])  # SDR in the hit columns, MRE in the error columns
            dp[a] = run_gaps.add(dp.get(a), _largest_gap(ratios), r)
    return {a: (run_gaps.mean(dp[a], hits), run_gaps.mean(dp[a], error)) for a in plan}


class _RunGaps:
    """Per-run gaps (resamples, columns) averaged over runs with the bits of the general path's ``_run_mean``
    of the (resamples, runs, K) array: numpy adds the runs one by one in run order when K > 1, so they are
    added here as they come (no such array, less memory traffic); with one keypoint it sums the contiguous
    run axis pairwise, so the gaps are kept and averaged by ``_run_mean`` itself. For the common case only:
    the gaps must be free of NaN (every group in DP in every run, finite values), which ``_run_mean`` would
    leave out and a running total would not."""

    def __init__(self, n_runs: int, n_keypoints: int) -> None:
        self.n_runs, self.n_keypoints = n_runs, n_keypoints

    def add(self, total: np.ndarray | None, gap: np.ndarray, r: int) -> np.ndarray:
        """Run ``r``'s gaps (a new array, which may be kept) added to ``total`` (None for the first run)."""
        if self.n_keypoints == 1:
            if total is None:
                total = np.empty((len(gap), self.n_runs, gap.shape[1]))
            total[:, r] = gap
        elif total is None:
            total = gap
        else:
            total += gap
        return total

    def mean(self, total: np.ndarray, columns: slice = slice(None)) -> np.ndarray:
        """The mean over runs of ``columns`` (K of them)."""
        if self.n_keypoints == 1:
            return _run_mean(total[:, :, columns], axis=1)
        return total[:, columns] / self.n_runs


def _one_hot_product(labels: np.ndarray, n_labels: int, values: np.ndarray) -> np.ndarray:
    """Sums of one run's ``values`` (rows, columns) per label, for label rows (n, rows): (n * labels, columns)
    in ``values``' dtype, row ``i * labels + l`` for label row i and label l; the same one-hot product as
    :meth:`RunKernel.sums` (the same operands and shape, so the same bits)."""
    run_labels = np.atleast_2d(labels)
    n = run_labels.shape[0]
    ids = np.arange(n_labels, dtype=run_labels.dtype)[None, :, None]
    assign = (run_labels[:, None, :] == ids).astype(values.dtype)
    return assign.reshape(n * n_labels, -1) @ values


def _one_hot_sums(labels: np.ndarray, n_labels: int, values: np.ndarray) -> np.ndarray:
    """:func:`_one_hot_product` as (n, labels, columns) float64."""
    return _one_hot_product(labels, n_labels, values).astype(np.float64).reshape(len(np.atleast_2d(labels)),
                                                                                  n_labels, -1)


def _cell_major(product: np.ndarray, n_cells: int) -> np.ndarray:
    """A one-hot product (n * cells, columns) as float64 (cells, n, columns): each cell's sums one contiguous
    block, so that the elementwise steps after it run over whole arrays instead of short strided rows (the
    cast does the reordering; the values are the same)."""
    n = len(product) // n_cells
    out = np.empty((n_cells, n, product.shape[1]))
    out[...] = product.reshape(n, n_cells, -1).transpose(1, 0, 2)
    return out


def _group_ratio_list(cells: np.ndarray, members: Sequence[np.ndarray], sizes: np.ndarray) -> list[np.ndarray]:
    """Per group, its cells' sums (cells, n, columns) added in order, as :func:`_group_sums` adds them, divided
    by its images ``sizes[g]``: SDR in hit columns, MRE in error columns, each (n, columns) (new arrays)."""
    out = []
    for g, idx in enumerate(members):
        if len(idx) == 1:
            group = np.divide(cells[idx[0]], sizes[g])
        else:
            group = _add_cells([cells[c] for c in idx])
            np.divide(group, sizes[g], out=group)
        out.append(group)
    return out


def _add_cells(parts: Sequence[np.ndarray], out: np.ndarray | None = None) -> np.ndarray:
    """A group's cell arrays (two or more) added in order, as :func:`fairlandmark.stats.kernel.aggregate` adds
    them; two without stacking them (the same bits as ``np.add.reduce``)."""
    if len(parts) == 2:
        return np.add(parts[0], parts[1], out=out)
    total = np.add.reduce(list(parts))
    if out is None:
        return total
    out[...] = total
    return out


def _largest_gap(values: Sequence[np.ndarray]) -> np.ndarray:
    """Largest minus smallest of the groups' values; ``|a - b|`` for two, the same bits with one pass fewer."""
    if len(values) == 2:
        gap = np.subtract(values[0], values[1])
        return np.abs(gap, out=gap)
    return spread(values)


class NormalNull:
    """Draws of every run's per-cell sums from the large-sample normal null of image-label permutations.

    One :func:`fairlandmark.stats.asymptotic.normal_sums_model` per stratum of images, over the value rows
    of all its runs side by side, so runs that share images are drawn jointly; one random stream per
    stratum (``task`` of ``seed``), so the draws do not depend on batch sizes. The DP test draws with task 5,
    the error-curve test with task 6.

    Parameters
    ----------
    kernel : RunKernel
        The value columns (hits, errors, ...) per run.
    cells_by_run : list of ndarray of int
        Cell of each row of run r, in kernel order.
    strata : ImageStrata
    n_cells : int
    seed, task : int
    """

    def __init__(self, kernel: RunKernel, cells_by_run: list[np.ndarray], strata: ImageStrata, n_cells: int, *,
                 seed: int, task: int) -> None:
        from fairlandmark.stats.asymptotic import normal_sums_model

        self.strata, self.n_runs, self.n_cells, self.n_columns = strata, kernel.n_runs, n_cells, kernel.n_columns
        if strata.by_run:  # disjoint runs: each stratum is a run's rows in kernel order, no copy
            values, cells = list(kernel.values), list(cells_by_run)
        else:
            image_cells = strata.image_values(cells_by_run)
            values, cells = [], []
            for s in range(strata.n_strata):
                lo = strata.starts[s]
                blocks = []
                for r in strata.runs_by_stratum[s]:
                    pos = strata.rows_by_run[r] - lo
                    inside = np.flatnonzero((pos >= 0) & (pos < strata.sizes[s]))
                    blocks.append(kernel.values[r][inside[np.argsort(pos[inside])]])
                values.append(blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1))
                cells.append(image_cells[strata.stratum(s)])
        self.models = [normal_sums_model(v, c, n_cells) for v, c in zip(values, cells)]
        self.rngs = _streams(seed, task, strata.n_strata)

    def draw(self, n: int) -> np.ndarray:
        """The next ``n`` draws of the sums, shape (n, runs, cells, columns), float64."""
        if self.strata.by_run:
            return np.stack([model.draw(rng, n) for model, rng in zip(self.models, self.rngs)], axis=1)
        M = self.n_columns
        sums = np.zeros((n, self.n_runs, self.n_cells, M))
        for s, (model, rng) in enumerate(zip(self.models, self.rngs)):
            draw = model.draw(rng, n)  # (n, L, runs * M)
            for j, r in enumerate(self.strata.runs_by_stratum[s]):
                sums[:, r] += draw[..., j * M:(j + 1) * M]
        return sums


def _bootstrap(ctx: _Context, options: SignificanceOptions, bar: Any, *,
               workers: int = 1) -> dict[str, dict[str, np.ndarray]]:
    attrs = ctx.coding.attributes
    K = len(ctx.study.keypoints)
    B = options.bootstrap
    out = {a: {"dp": np.empty((B, K)),
               "sdr": np.empty((B, len(ctx.coding.groups[a]), K)),
               "mre": np.empty((B, len(ctx.coding.groups[a]), K))} for a in attrs}
    # Images are resampled, every row of an image (in every run) with it: within each stratum of images
    # (a run's images when runs are disjoint), images sorted by cell, a replacement drawn from its own cell.
    strata = ctx.strata
    plans = []
    for s in range(strata.n_strata):
        cells = ctx.image_cells[strata.stratum(s)]
        order = np.argsort(cells, kind="stable")
        sizes = np.bincount(cells, minlength=ctx.coding.n_cells)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        # Cell sizes as float64: the very product the draws took with the integers, without a cast per batch.
        plans.append((order, starts[cells[order]], sizes[cells[order]].astype(np.float64)))
    rngs = _streams(options.seed, 2, strata.n_strata)
    task = bar.add_task("bootstrap", total=B) if bar else None
    fast = _fast_bootstrap_plan(ctx)

    def compute(start: int, n: int, weights: list[np.ndarray]) -> None:
        if fast is not None:
            for a, (dp, sdr, mre) in _fast_bootstrap(ctx, fast, weights, n).items():
                out[a]["dp"][start:start + n] = dp
                out[a]["sdr"][start:start + n] = sdr
                out[a]["mre"][start:start + n] = mre
        else:
            sums, _ = ctx.kernel.sums(ctx.cells_by_run, ctx.coding.n_cells, weights_by_run=weights,
                                      with_counts=False)
            counts = ctx.fixed_counts(n)
            for a in attrs:
                dp, _, sdr, mre = ctx.stats(sums, counts, a, valid=ctx.observed[a].valid)
                out[a]["dp"][start:start + n] = dp
                out[a]["sdr"][start:start + n] = _run_mean(sdr, axis=1)
                out[a]["mre"][start:start + n] = _run_mean(mre, axis=1)
        if bar:
            bar.advance(task, n)

    # The draws stay on this thread, in batch order; the sums of each batch go to a worker.
    with batch_pool(workers) as pool:
        for start, n in _batches(B, _batch_size(ctx, options, bytes_per_row=40)):
            # Multiplicities are small integers, exact in float32, the kernel's dtype.
            image_weights = np.empty((n, strata.n_images), dtype=np.float32)
            for s, (rng, (order, start_of, size_of)) in enumerate(zip(rngs, plans)):
                m = len(order)
                # Position in sorted order: start of the cell + floor(u * cell size) (truncation: u * size >= 0).
                scaled = rng.random((n, m))
                scaled *= size_of
                pick = scaled.astype(np.intp)
                pick += start_of
                image = order[pick]
                image += (np.arange(n, dtype=np.intp) * m)[:, None]
                image_weights[:, strata.stratum(s)] = np.bincount(image.ravel(), minlength=n * m).reshape(n, m)
            pool.submit(compute, start, n, strata.to_runs(image_weights))
    return out


def _group_sums(sums: np.ndarray, members: Sequence[np.ndarray]) -> np.ndarray:
    """Per-group sums of cell sums (resamples, cells, columns) -> (resamples, groups, columns), each group's
    cells added in order as :func:`fairlandmark.stats.kernel.aggregate` adds them; the array itself when the
    groups are its cells in order (an intersection)."""
    if len(members) == sums.shape[1] and all(len(idx) == 1 and idx[0] == g for g, idx in enumerate(members)):
        return sums
    out = np.empty((sums.shape[0], len(members), sums.shape[2]))
    for g, idx in enumerate(members):
        if len(idx) == 1:
            out[:, g] = sums[:, idx[0]]
        else:
            _add_cells([sums[:, c] for c in idx], out=out[:, g])
    return out


def _fast_bootstrap_plan(ctx: _Context) -> tuple[dict[str, tuple[list[np.ndarray], np.ndarray]],
                                                 list[np.ndarray]] | None:
    """The groups of :func:`_common_case_groups` and each run's cells one-hot, shape (cells, n_r) float32,
    when the common case holds; None otherwise (the general path)."""
    groups = _common_case_groups(ctx)
    if groups is None:
        return None
    ids = np.arange(ctx.coding.n_cells)[:, None]
    dtype = ctx.kernel.values[0].dtype
    return groups, [(cells[None, :] == ids).astype(dtype) for cells in ctx.cells_by_run]


def _fast_bootstrap(ctx: _Context, plan: tuple[Mapping[str, tuple[list[np.ndarray], np.ndarray]], list[np.ndarray]],
                    weights: list[np.ndarray], n: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Bootstrap DP and run-mean SDR and MRE per group of a batch in the common case
    (:func:`_fast_bootstrap_plan`), per run without the (resamples, runs, cells, columns) array.

    The same product per run as :meth:`RunKernel.sums` (one-hot cells times multiplicities, both float32, then
    the same matrix product, so the same float32 sums), then the same float64 operations in the same order:
    group sums of cells, SDR and MRE as sums / images, DP as max - min averaged over runs in the general
    path's order (:class:`_RunGaps`), SDR and MRE added in run order and divided by the number of runs (numpy's order
    for those arrays). The MRE gap, which the bootstrap does not report, is not computed.
    """
    groups, onehots = plan
    hits, error = ctx.layout.hits(0), ctx.layout.error
    R = ctx.study.n_runs
    # Per attribute: DP and every group's sums / images (all columns), added over runs.
    run_gaps = _RunGaps(R, len(ctx.study.keypoints))
    dp: dict[str, np.ndarray] = {}
    ratio_total: dict[str, np.ndarray] = {}
    for r in range(R):
        values = ctx.kernel.values[r]
        onehot = onehots[r]
        assign = onehot * np.atleast_2d(weights[r])[:, None, :]  # (n, cells, n_r): the kernel's operand
        cells = _cell_major(assign.reshape(n * len(onehot), -1) @ values, len(onehot))
        for a, (members, sizes) in groups.items():
            ratios = _group_ratio_list(cells, members, sizes[r])  # all columns at once
            dp[a] = run_gaps.add(dp.get(a), _largest_gap([ratio[:, hits] for ratio in ratios]), r)
            if r == 0:
                ratio_total[a] = np.stack(ratios)  # (G, n, columns)
            else:
                for total, ratio in zip(ratio_total[a], ratios):
                    total += ratio
    return {a: (run_gaps.mean(dp[a]), (ratio_total[a][..., hits] / R).transpose(1, 0, 2),
                (ratio_total[a][..., error] / R).transpose(1, 0, 2)) for a in groups}


def _baseline(ctx: _Context, options: SignificanceOptions, bar: Any, *, workers: int = 1) -> dict[str, np.ndarray]:
    coding = ctx.coding
    base = [a for a in coding.attributes if a in coding.base_codes]
    sizes = [len(coding.groups[a]) for a in base]
    n_full = int(np.prod(sizes))
    # Aggregations from the full mixed-radix space of base attributes.
    digits = {}
    rest = np.arange(n_full)
    for a, size in reversed(list(zip(base, sizes))):
        digits[a] = rest % size
        rest = rest // size
    agg = {}
    for a, size in zip(base, sizes):
        m = np.zeros((n_full, size))
        m[np.arange(n_full), digits[a]] = 1.0
        agg[a] = m
    inter = [a for a in coding.attributes if a not in coding.base_codes]
    if inter:
        full_of_cell = np.zeros(coding.n_cells, dtype=np.int64)
        for a, size in zip(base, sizes):
            full_of_cell = full_of_cell * size + coding.cell_to_group[a]
        m = np.zeros((n_full, coding.n_cells))
        m[full_of_cell, np.arange(coding.n_cells)] = 1.0  # combinations absent from the data stay out
        agg[inter[0]] = m
    # The randomized attribute belongs to the image: drawn once per image (per stratum's stream), for all its rows.
    strata = ctx.strata
    # Labels of the full space in the smallest integer type that holds them (cheaper to draw and compare).
    label_dtype = np.int8 if n_full <= np.iinfo(np.int8).max + 1 else np.int64
    image_codes: dict[str, np.ndarray] = {
        a: strata.image_values(ctx.kernel.labels_by_run(coding.base_codes[a])).astype(label_dtype) for a in base}
    K = len(ctx.study.keypoints)
    B = options.baseline_repeats
    out = {a: np.empty((B, K)) for a in coding.attributes}
    # Separate streams for the coin flips and the new levels, so neither depends on the batch size.
    flips = {a: _streams(options.seed, 3 + 1000 * (i + 1), strata.n_strata) for i, a in enumerate(base)}
    # (Attributes of two levels draw no new level: their streams are never made, which changes no other stream.)
    levels = {a: _streams(options.seed, 4 + 1000 * (i + 1), strata.n_strata) for i, a in enumerate(base)
              if sizes[i] > 2}
    task = bar.add_task("randomized baseline", total=B) if bar else None

    fast = _fast_baseline_plan(ctx)
    members = {a: [np.flatnonzero(agg[a][:, g]) for g in range(agg[a].shape[1])] for a in coding.attributes}

    def compute(start: int, n: int, labels: list[np.ndarray]) -> None:
        if fast is not None:
            for a, dp in _fast_baseline(ctx, fast, members, labels, n, n_full).items():
                out[a][start:start + n] = dp
            if bar:
                bar.advance(task, n)
            return
        sums, counts = ctx.kernel.sums(labels, n_full)
        for a in coding.attributes:
            gsums, gcounts = aggregate(sums, counts, agg[a])
            # A group takes part in a run's DP where it does in the observed data (per run, as for the
            # observed DP and the permutations) and its randomized size is still large enough.
            valid = (gcounts >= ctx.min_group_size) & ctx.observed[a].valid
            sdr = without_thin_groups(sdr_from_sums(gsums, gcounts, ctx.layout, 0), gsums, ctx.layout,
                                      ctx.min_group_size)
            out[a][start:start + n] = _run_mean(parity_gap_value(sdr, valid))
        if bar:
            bar.advance(task, n)

    with batch_pool(workers) as pool:
        for start, n in _batches(B, _batch_size(ctx, options, bytes_per_row=32 * len(base))):
            image_labels = np.empty((n, strata.n_images), dtype=label_dtype)
            for s in range(strata.n_strata):
                full: np.ndarray | None = None
                for a, size in zip(base, sizes):
                    code = image_codes[a][strata.stratum(s)]
                    flip = flips[a][s].random((n, len(code))) < 0.5
                    if size > 2:  # a uniformly drawn other level
                        other = (code + levels[a][s].integers(1, size, size=(n, len(code)))) % size
                        label = np.where(flip, other, code).astype(label_dtype)
                    elif size == 2:  # (code + 1) % 2: the other level, 1 - code
                        label = code ^ flip
                    else:
                        label = np.broadcast_to(code, flip.shape)
                    full = label if full is None else full * size + label
                image_labels[:, strata.stratum(s)] = full
            pool.submit(compute, start, n, strata.to_runs(image_labels))
    return out


def _fast_baseline_plan(ctx: _Context) -> list[np.ndarray] | None:
    """Each run's hit columns and a column of ones, shape (n_r, K + 1) float32, whose sums per label are the
    kernel's hit sums and image counts exactly (integers below 2**24, exact in float32 in any order); None when
    some point is unlabelled (its SDR denominators differ) or a run is too large for exact float32 counts."""
    if ctx.layout.has_labelled or count_dtype(ctx.study.row_run) is not np.float32:
        return None
    hits = ctx.layout.hits(0)
    return [np.concatenate([v[:, hits], np.ones((len(v), 1), v.dtype)], axis=1) for v in ctx.kernel.values]


def _fast_baseline(ctx: _Context, columns: list[np.ndarray], members: Mapping[str, list[np.ndarray]],
                   labels: list[np.ndarray], n: int, n_labels: int) -> dict[str, np.ndarray]:
    """Randomized-baseline DP of a batch per run (:func:`_fast_baseline_plan`), without the (repeats, runs,
    labels, columns) array and without the error columns, which the baseline does not use.

    Hit sums and image counts are integers, the same whatever the order of the additions; from them the
    same float64 operations as the general path: SDR as hits / images, a group in DP where it is large
    enough and in the observed DP of the run, :func:`parity_gap_value`, and the mean over runs of the values
    present by the general path's ``_run_mean``. The same numbers.
    """
    R, K = ctx.study.n_runs, len(ctx.study.keypoints)
    per_run = {a: np.empty((n, R, K)) for a in members}
    for r in range(R):
        sums = _one_hot_sums(labels[r], n_labels, columns[r])
        for a, cells in members.items():
            group = _group_sums(sums, cells)  # (n, G, K + 1), exact
            images = group[..., -1]
            with np.errstate(invalid="ignore", divide="ignore"):
                sdr = group[..., :-1] / images[..., None]
            valid = (images >= ctx.min_group_size) & np.asarray(ctx.observed[a].valid)[r]
            per_run[a][:, r] = parity_gap_value(sdr, valid)
    return {a: _run_mean(per_run[a], axis=1) for a in members}


def _batch_size_that_fits(study: Study, options: SignificanceOptions, slots: int = 1) -> int:
    """``options.batch_size``, lowered until ``slots`` batches of working arrays fit in memory (InputError when
    not even one resample per slot fits)."""
    from fairlandmark.stats.memory import SignificanceMemory, estimate, fit_batch_size

    coding = study.coding
    n_kp = len(study.keypoints)
    rows_per_run = np.bincount(np.asarray(study.row_run), minlength=study.n_runs)
    groups = [len(coding.groups[a]) for a in coding.attributes]
    memory = estimate(n_rows=len(study.row_run), max_rows_per_run=int(rows_per_run.max(initial=0)), n_runs=study.n_runs,
                      n_cells=coding.n_cells, n_columns=3 * n_kp, n_keypoints=n_kp, groups=groups,
                      permutations=options.permutations, bootstrap=options.bootstrap,
                      baseline_repeats=options.baseline_repeats)
    memory = SignificanceMemory(fixed=memory.fixed, per_resample=memory.per_resample * slots)
    return fit_batch_size(memory, options.batch_size, n_keypoints=n_kp, n_attributes=len(groups),
                          permutations=options.permutations, bootstrap=options.bootstrap,
                          baseline_repeats=options.baseline_repeats)


def _workers_and_batch(study: Study, options: SignificanceOptions) -> tuple[int, int]:
    """Worker threads and batch size: each worker's batch and the one being drawn must fit in memory together;
    where they do not, fewer workers (one at least, whose batch must fit)."""
    resamples = options.permutations + options.bootstrap + options.baseline_repeats
    workers = workers_for(options.n_jobs, float(len(study.row_run)) * len(study.keypoints) * resamples)
    while workers > 1:
        try:
            return workers, _batch_size_that_fits(study, options, slots=workers + 1)
        except InputError:
            workers -= 1
    return 1, _batch_size_that_fits(study, options)


def run_significance(study: Study, *, thresholds: Sequence[float], min_group_size: int,
                     observed: Mapping[str, Any],
                     options: SignificanceOptions | Mapping[str, Any] | bool,
                     alongside: Callable[[SignificanceOptions, np.ndarray | None, TaskQueue | None, threading.Event],
                                         Any] | None = None) -> SignificanceResult:
    """Permutation p-values, bootstrap intervals and the randomized baseline.

    Parameters
    ----------
    study : Study
    thresholds : sequence of float
        SDR thresholds; the first is the DP's.
    min_group_size : int
    observed : dict of str -> observed statistics
        Per attribute, what the audit measured (group validity per run, group sizes).
    options : SignificanceOptions, dict or True
    alongside : callable, optional
        Another test on the same permutations (the error-curve test), called as
        ``alongside(options, shared_permutations, queue, stop)``; with worker threads and shared permutations
        it runs on its own thread while the bootstrap, baseline and adjustments are computed, otherwise after
        them. Its return value is ``SignificanceResult.alongside``. ``options`` carry this run's progress
        bar and resolved ``method``; ``stop`` is set when this run fails, and the test should then give up;
        ``queue`` (a :class:`~fairlandmark.stats.workers.TaskQueue`, None unless on its own thread) takes
        tasks that either thread may compute: this run works it once its own work is done.

    Returns
    -------
    SignificanceResult
    """
    options = SignificanceOptions.coerce(options)
    workers, batch_size = _workers_and_batch(study, options)
    options = replace(options, batch_size=batch_size)
    ctx = _Context(study, list(thresholds), min_group_size, observed)
    # Observed results without group sizes (measurements pass only validity): "auto" stays with permutations.
    in_dp = [obs.n_images[obs.valid] if hasattr(obs, "n_images") else np.zeros(0, dtype=int) for obs in observed.values()]
    if not all(hasattr(obs, "n_images") for obs in observed.values()):
        in_dp = [np.zeros(1, dtype=int)]
    min_group = int(min((x.min() for x in in_dp if x.size), default=0))
    ctx.method = resolve_method(options.method, len(study.row_run), min_group)
    with progress_bar(options.progress) as bar, single_threaded_blas():
        drawn = None
        if (options.permutations and ctx.method == "permutation"
                and options.permutations * ctx.strata.n_images * ctx.image_cells.itemsize <= SHARED_PERMUTATION_BYTES):
            drawn = draw_permutations(ctx.cells_by_run, options.permutations, seed=options.seed, strata=ctx.strata,
                                      workers=workers)
        concurrent = alongside is not None and workers > 1 and drawn is not None
        # Side by side on one thread of its own (more threads than cores only thrash the caches); when its own
        # test ends, that thread takes the short tasks queued here (the adjustments, the baseline), so that
        # neither core idles at the end. The other test gets this run's resolved null and progress bar.
        beside_options = replace(options, progress=bar, n_jobs=1 if concurrent else options.n_jobs, method=ctx.method)
        queue = TaskQueue()
        beside = (Background(alongside, beside_options, drawn, queue if concurrent else None, concurrent=concurrent,
                             then=queue)
                  if alongside is not None else None)

        caller = threading.current_thread()

        def free_workers() -> int:
            """Workers for the next phase: one fewer while the other thread is busy; one for a task that the other
            thread, or one of several threads working the queue, has taken (they already fill the cores)."""
            if beside is None:
                return workers
            beside.check()  # a failed curve test stops us early
            if threading.current_thread() is not caller:
                return 1
            return workers - 1 if beside.running else workers

        try:
            perm = _permutations(ctx, options, bar, drawn, workers=free_workers()) if options.permutations else None
            tests = _PermutationTests.of(ctx, perm) if perm is not None else None
            adjustments: list[Callable[[], np.ndarray]] = []
            if tests is not None:
                adjustments = [lambda: westfall_young_minp(tests.null_dp, tests.observed_dp),
                               lambda: westfall_young_minp(tests.null_gap, tests.observed_gap)]
            if concurrent:
                # Queued for whichever thread is free first: the other test's when it ends, this one after the
                # bootstrap. The baseline takes the workers free when it starts.
                adjusted = [queue.put(task) for task in adjustments]
                base_task = (queue.put(lambda: _baseline(ctx, options, bar, workers=free_workers()))
                             if options.baseline_repeats else None)
                boot = _bootstrap(ctx, options, bar, workers=free_workers()) if options.bootstrap else None
                # The rest of the queue: on this thread, or on all cores if the other thread has ended.
                drains = free_workers()
                run_all([queue.work] * drains, drains)
                base = base_task.result() if base_task is not None else None
                westfall_young = tuple(task.result() for task in adjusted)
            else:
                boot = _bootstrap(ctx, options, bar, workers=workers) if options.bootstrap else None
                base = _baseline(ctx, options, bar, workers=workers) if options.baseline_repeats else None
                westfall_young = tuple(run_all(adjustments, workers))
            result = SignificanceResult(ctx, options, tests, westfall_young, boot, base)
            result.alongside = beside.result_helping() if beside is not None else None
        except BaseException:
            if beside is not None:
                # It gives up at its next batch, and its queue starts nothing more; an error or Ctrl-C here does
                # not wait for it.
                beside.cancel()
            raise
        result.shared_permutations = drawn
    return result


class _PermutationTests(NamedTuple):
    """The DP and MRE-gap nulls of every (attribute, keypoint) side by side, (permutations, attributes x K), and
    the observed statistics through the same kernel."""

    null_dp: np.ndarray
    observed_dp: np.ndarray
    null_gap: np.ndarray
    observed_gap: np.ndarray

    @classmethod
    def of(cls, ctx: _Context, perm: tuple[np.ndarray, np.ndarray]) -> _PermutationTests:
        identity = [ctx.identity_stats(a) for a in ctx.coding.attributes]
        return cls(perm[0], np.concatenate([dp for dp, _ in identity]),
                   perm[1], np.concatenate([gap for _, gap in identity]))


STATISTIC = ("mean over runs of per-run DP; image labels permuted among images evaluated in the same runs "
             "(within each run for disjoint runs), an image's rows in every run together")
METHOD_TEXT = {
    "permutation": "exact permutations of image labels among images evaluated in the same runs",
    "normal": ("large-sample normal null of the per-cell sums under permutation of image labels among images "
               "evaluated in the same runs (exact permutation mean and covariance), drawn jointly for every test"),
}


class SignificanceResult:
    """Per (attribute, keypoint) p-values, intervals and baseline; joins onto audit tables."""

    def __init__(self, ctx: _Context, options: SignificanceOptions, tests: _PermutationTests | None,
                 westfall_young: tuple[np.ndarray, ...], boot: dict[str, dict[str, np.ndarray]] | None,
                 base: dict[str, np.ndarray] | None) -> None:
        self.options = options
        self.method = ctx.method
        # The permuted cells of the DP test on the image axis (permutations x images), kept for the curve test
        # (``error_curves(..., shared_permutations=...)``); None when not drawn or larger than
        # SHARED_PERMUTATION_BYTES.
        self.shared_permutations: np.ndarray | None = None
        self.alongside: Any = None  # what run_significance's ``alongside`` task returned
        self.strata = ctx.strata  # the strata of exchangeable images the resampling used
        coding, K = ctx.coding, len(ctx.study.keypoints)
        self.attributes = list(coding.attributes)
        self.groups = {a: list(coding.groups[a]) for a in self.attributes}
        self.columns: dict[str, dict[str, np.ndarray]] = {a: {} for a in self.attributes}
        if tests is not None:
            p = permutation_pvalue(tests.null_dp, tests.observed_dp)
            p_gap = permutation_pvalue(tests.null_gap, tests.observed_gap)
            wy_dp, wy_gap = westfall_young
            adjusted = {"bh": _adjust(p, "bh"), "holm": _adjust(p, "holm"), "westfall-young": wy_dp}
            adjusted_gap = {"bh": _adjust(p_gap, "bh"), "holm": _adjust(p_gap, "holm"), "westfall-young": wy_gap}
            chosen, chosen_gap = adjusted[options.correction], adjusted_gap[options.correction]
            for i, a in enumerate(self.attributes):
                s = slice(i * K, (i + 1) * K)
                self.columns[a].update({
                    "p_value": p[s], "p_adjusted": chosen[s],
                    "significant": np.where(np.isnan(chosen[s]), False, chosen[s] < options.alpha),
                    "p_bh": adjusted["bh"][s], "p_holm": adjusted["holm"][s],
                    "p_westfall_young": adjusted["westfall-young"][s],
                    "mre_gap_p": p_gap[s], "mre_gap_p_adjusted": chosen_gap[s],
                    "mre_gap_significant": np.where(np.isnan(chosen_gap[s]), False, chosen_gap[s] < options.alpha),
                })
        lo_q, hi_q = (1 - options.ci) / 2, 1 - (1 - options.ci) / 2
        self.group_ci = {}
        if boot is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                for a in self.attributes:
                    lo, hi = _quantiles(boot[a]["dp"], [lo_q, hi_q])
                    self.columns[a].update({"dp_ci_low": lo, "dp_ci_high": hi})
                    s_lo, s_hi = _quantiles(boot[a]["sdr"], [lo_q, hi_q])
                    m_lo, m_hi = _quantiles(boot[a]["mre"], [lo_q, hi_q])
                    self.group_ci[a] = (s_lo, s_hi, m_lo, m_hi)  # each (G, K)
                    # The interval shown: signed gap of the reported pair (contains its estimate; see intervals.py).
                    # Callers that pass only group validity (the measurement audit) get no gap interval.
                    obs = ctx.observed[a]
                    observed_sdr = getattr(obs, "sdr_dp", None)
                    if observed_sdr is None and getattr(obs, "sdr", None) is not None:
                        observed_sdr = obs.sdr[0]
                    if observed_sdr is not None:
                        self.columns[a].update(reported_gap_interval(observed_sdr, obs.valid, boot[a]["sdr"],
                                                                     options.ci))
        if base is not None:
            for a in self.attributes:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    self.columns[a].update({"baseline_mean": np.nanmean(base[a], axis=0),
                                            "baseline_std": np.nanstd(base[a], axis=0, ddof=1)
                                            if base[a].shape[0] > 1 else np.full(K, np.nan)})

    def settings(self) -> dict[str, Any]:
        d = asdict(self.options)
        d.pop("progress")
        d.pop("batch_size")
        d.pop("n_jobs")  # changes the speed, never the numbers
        d["method_requested"] = d.pop("method")
        d["method"] = self.method if self.options.permutations else None
        d["method_description"] = METHOD_TEXT[self.method] if self.options.permutations else None
        d["statistic"] = STATISTIC
        return d

    def join(self, table: pd.DataFrame) -> pd.DataFrame:
        """Add significance columns to the per-keypoint table (rows ordered attribute-major)."""
        table = table.copy()
        for name in next(iter(self.columns.values())).keys() if self.columns else []:
            table[name] = np.concatenate([np.asarray(self.columns[a][name]) for a in self.attributes])
        if "significant" in table:
            table["significant"] = table["significant"].astype(bool)
            table["mre_gap_significant"] = table["mre_gap_significant"].astype(bool)
        return table

    def join_groups(self, table: pd.DataFrame) -> pd.DataFrame:
        """Add bootstrap intervals to the per-group table (attribute, group, keypoint order)."""
        if not self.group_ci:
            return table
        table = table.copy()
        for i, name in enumerate(("sdr_ci_low", "sdr_ci_high", "mre_ci_low", "mre_ci_high")):
            table[name] = np.concatenate([self.group_ci[a][i].ravel() for a in self.attributes])
        return table

    def record(self, row: Mapping[Hashable, Any], group_rows: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
        """Significance fields of one JSON ``per_keypoint`` record (``group_rows``: the per-group columns of its
        groups, by name)."""
        rec = {}
        for name in ("p_value", "p_adjusted", "significant", "p_bh", "p_holm", "p_westfall_young",
                     "mre_gap_p", "mre_gap_p_adjusted", "mre_gap_significant", "baseline_mean", "baseline_std"):
            if name in row:
                rec[name] = row[name]
        if "dp_ci_low" in row:
            rec["dp_ci"] = [row["dp_ci_low"], row["dp_ci_high"]]
        if "gap" in row:
            rec["gap"] = row["gap"]
            rec["gap_ci"] = [row["gap_ci_low"], row["gap_ci_high"]]
        if "sdr_ci_low" in group_rows:
            rec["sdr_ci_by_group"] = {g: [lo, hi] for g, lo, hi in
                                      zip(group_rows["group"], group_rows["sdr_ci_low"], group_rows["sdr_ci_high"])}
            rec["mre_ci_by_group"] = {g: [lo, hi] for g, lo, hi in
                                      zip(group_rows["group"], group_rows["mre_ci_low"], group_rows["mre_ci_high"])}
        return rec
