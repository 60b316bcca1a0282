"""Whole error curves: SDR as a function of the threshold, per keypoint and group.

A single threshold phi can hide a bias just past it. The *error curve* of a
group is its SDR(phi) over a grid of thresholds (the empirical cumulative
distribution of its errors, missing predictions counting as misses). The
*curve gap* of a keypoint is a KS-type statistic: the largest vertical gap
between group curves over the grid,

    curve_gap = max over phi of  mean over runs of  (max_g SDR_g(phi) - min_g SDR_g(phi)),

with the groups that take part in DP in each run (as for DP). At a grid of one
threshold it is the keypoint's DP.

Its p-value comes from the very label permutations of the keypoint DP test
(:func:`fairlandmark.stats.significance.permutation_batches`, same seed,
streams and strata of images): each permutation gives every group curve at once, through the
metrics kernel, so one permutation gives one curve gap per keypoint. The
adjusted p-values use the audit's correction (BH, Holm or Westfall-Young)
over attributes x keypoints, as a family of their own.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import CancelledError
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from fairlandmark.exceptions import InputError
from fairlandmark.inputs.study import Study
from fairlandmark.progress import progress_bar
from fairlandmark.stats.kernel import (PackedCellCounts, RunKernel, aggregate, build_values, count_dtype, nan_mean,
                                       parity_gap_value, sdr_from_sums, single_threaded_blas, spread)
from fairlandmark.stats.workers import TaskQueue, batch_pool, share_batches, workers_for

if TYPE_CHECKING:
    from fairlandmark.stats.significance import SignificanceOptions

__all__ = ["CurveResult", "curve_grid", "error_curves", "group_validity", "observed_hit_counts", "DEFAULT_CURVE_POINTS"]

DEFAULT_CURVE_POINTS = 12
# Permutations per step of the curve-gap null: its work arrays (chunk x keypoints x grid) stay near the cache.
CHUNK = 256
# Gap numerators of the fast curve null below this are computed in int32; up to EXACT_FLOAT_LIMIT in float64
# (integers, exact); beyond, SDRs are products by 1 / images (rounded).
EXACT_NUMERATOR_LIMIT = 2**31
EXACT_FLOAT_LIMIT = 2**53
# Hit counts are int16 when runs have fewer rows than this, and so are two-group numerators below it.
NARROW_LIMIT = 2**15
_HIT_COUNT_BLOCK = 1 << 18  # errors binned at a time by observed_hit_counts
MSG_GRID = "curve range: give 0 < low < high and at least 2 points, got low={lo!r}, high={hi!r}, points={n!r}"


def group_validity(study: Study, min_group_size: int) -> dict[str, np.ndarray]:
    """Per attribute, which groups are large enough to take part in gaps in each run.

    Returns
    -------
    dict of str -> ndarray of bool, shape (R, G)
    """
    kernel = RunKernel(np.ones((len(study.row_run), 1)), study.row_run, study.n_runs)
    _, counts = kernel.sums(kernel.labels_by_run(study.coding.cell), study.coding.n_cells)
    out = {}
    for a in study.coding.attributes:
        _, gcounts = aggregate(np.zeros(counts.shape + (1,)), counts, study.coding.aggregation(a))
        out[a] = gcounts[0] >= min_group_size
    return out


def curve_grid(primary: float, *, low: float | None = None, high: float | None = None,
               points: int = DEFAULT_CURVE_POINTS) -> np.ndarray:
    """Thresholds of the error curves: ``points`` evenly spaced from ``low`` to ``high``.

    Defaults: from a quarter of the primary threshold to three times it, in
    12 points (0.5 to 6 mm in 0.5 mm steps for phi = 2 mm).

    Examples
    --------
    >>> curve_grid(2.0)
    array([0.5, 1. , 1.5, 2. , 2.5, 3. , 3.5, 4. , 4.5, 5. , 5.5, 6. ])
    """
    lo = 0.25 * primary if low is None else float(low)
    hi = 3.0 * primary if high is None else float(high)
    if isinstance(points, bool) or not isinstance(points, (int, np.integer)) or points < 2 or not 0 < lo < hi:
        raise InputError(MSG_GRID.format(lo=low, hi=high, n=points))
    return np.linspace(lo, hi, int(points))


def _nan_adjust(p: np.ndarray, method: str) -> np.ndarray:
    from fairlandmark.stats.significance import benjamini_hochberg, holm

    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = {"bh": benjamini_hochberg, "holm": holm}[method](p[ok])
    return out


class CurveResult:
    """Error curves per (attribute, group, keypoint) and the curve-gap test.

    Attributes
    ----------
    phi : ndarray, shape (T,)
        The threshold grid.
    unit : str
    keypoints : list
    attributes : list of str
    groups : dict of str -> list of str
    sdr : dict of str -> ndarray, shape (G, K, T)
        Run-mean SDR of each group at each threshold.
    gap : dict of str -> ndarray, shape (K,)
        Curve gap (largest run-mean gap over the grid).
    gap_phi : dict of str -> ndarray, shape (K,)
        Threshold where the gap is largest (the first on ties).
    tests : dict of str -> dict of str -> ndarray, shape (K,)
        ``p_value``, ``p_adjusted``, ``significant``, ``p_bh``, ``p_holm``,
        ``p_westfall_young`` when a permutation test ran.
    """

    def __init__(self, phi: np.ndarray, unit: str, keypoints: list[Any], attributes: list[str],
                 groups: dict[str, list[str]], sdr: dict[str, np.ndarray], gap: dict[str, np.ndarray],
                 gap_phi: dict[str, np.ndarray], tests: dict[str, dict[str, np.ndarray]],
                 settings: dict[str, Any]) -> None:
        self.phi = phi
        self.unit = unit
        self.keypoints = keypoints
        self.attributes = attributes
        self.groups = groups
        self.sdr = sdr
        self.gap = gap
        self.gap_phi = gap_phi
        self.tests = tests
        self.settings = settings

    def records(self) -> list[dict[str, Any]]:
        """One JSON-ready record per (attribute, keypoint)."""
        out = []
        for a in self.attributes:
            for k, kp in enumerate(self.keypoints):
                rec = {"attribute": a, "keypoint": kp,
                       "sdr_by_group": {g: self.sdr[a][i, k].tolist() for i, g in enumerate(self.groups[a])},
                       "gap": float(self.gap[a][k]), "gap_phi": float(self.gap_phi[a][k])}
                for name, values in self.tests.get(a, {}).items():
                    v = values[k]
                    rec[name] = bool(v) if name == "significant" else float(v)
                out.append(rec)
        return out

    def block(self) -> dict[str, Any]:
        """The JSON ``curves`` block: the grid, the settings and one record per (attribute, keypoint)."""
        return {"phi": self.phi.tolist(), "unit": self.unit, **self.settings, "records": self.records()}


def error_curves(study: Study, *, primary: float = 2.0, phi: Sequence[float] | np.ndarray | None = None,
                 min_group_size: int = 10, valid: Mapping[str, np.ndarray] | None = None,
                 significance: Any = None, shared_permutations: np.ndarray | None = None,
                 stop: threading.Event | None = None, queue: TaskQueue | None = None) -> CurveResult:
    """Error curves per group and keypoint, and the curve-gap permutation test.

    Parameters
    ----------
    study : Study
        A prepared study (errors per (run, image) row and keypoint).
    primary : float, default 2.0
        The primary threshold; the default grid is :func:`curve_grid` of it.
    phi : sequence of float, optional
        The threshold grid (increasing, positive).
    min_group_size : int, default 10
    valid : dict of str -> ndarray (R, G), optional
        Groups in DP per run (default from ``min_group_size``).
    significance : SignificanceOptions, dict or True, optional
        With permutations, the curve-gap test from the keypoint test's
        permutations; its ``correction`` and ``alpha`` apply.
    shared_permutations : ndarray, optional
        The keypoint test's permutations already drawn
        (``SignificanceResult.shared_permutations`` of the same study and
        options): used instead of drawing them again (same numbers).
    stop : threading.Event, optional
        Set by another thread to abandon the test (it then raises
        ``concurrent.futures.CancelledError`` at its next batch).
    queue : TaskQueue, optional
        With ``shared_permutations``, the batches of the permutation null go
        to this queue, and another thread that works it (the DP side, once
        done) shares them; the numbers do not change.

    Returns
    -------
    CurveResult

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from fairlandmark.audit import prepare_study
    >>> rng = np.random.default_rng(0)
    >>> preds = pd.DataFrame({"image_id": np.arange(40).astype(str), "keypoint": 1, "error_mm": rng.gamma(2, 1, 40)})
    >>> meta = pd.DataFrame({"image_id": np.arange(40).astype(str), "sex": ["F", "M"] * 20})
    >>> res = error_curves(prepare_study(preds, meta, attributes=["sex"]), phi=[1.0, 2.0, 4.0])
    >>> res.sdr["sex"].shape
    (2, 1, 3)
    """
    grid = curve_grid(primary) if phi is None else np.asarray(phi, dtype=float)
    if grid.ndim != 1 or len(grid) < 1 or not np.all(np.isfinite(grid)) or np.any(grid <= 0) or np.any(
            np.diff(grid) <= 0):
        raise InputError(MSG_GRID.format(lo=grid.min() if grid.size else None, hi=grid.max() if grid.size else None,
                                         n=len(grid)))
    coding = study.coding
    if valid is None:
        valid = group_validity(study, min_group_size)
    _, layout = build_values(study.errors[:0], grid, present=False, error=False)
    sums, counts = observed_hit_counts(study, grid)
    K, T = study.errors.shape[1], len(grid)
    sdr, gap, gap_phi = {}, {}, {}
    for a in coding.attributes:
        gsums, gcounts = aggregate(sums[0], counts[0], coding.aggregation(a))
        curves = np.stack([sdr_from_sums(gsums, gcounts, layout, t) for t in range(T)], axis=1)  # (R, T, G, K)
        ok = np.broadcast_to(valid[a][:, None, :], curves.shape[:3])
        per_run = parity_gap_value(curves, ok)  # (R, T, K)
        mean_gap = nan_mean(per_run)  # (T, K)
        gap[a] = np.fmax.reduce(mean_gap, axis=0) if T else np.full(K, np.nan)  # = nanmax, without its warning
        in_dp = np.where(valid[a][:, None, :, None], curves, np.nan)
        sdr[a] = np.moveaxis(nan_mean(in_dp), 0, -1)  # (G, K, T)
        filled = np.where(np.isnan(mean_gap), -np.inf, mean_gap)
        gap_phi[a] = np.where(np.isnan(gap[a]), np.nan, grid[np.argmax(filled, axis=0)])
    tests: dict[str, dict[str, np.ndarray]] = {}
    settings: dict[str, Any] = {"statistic": "max over the grid of the run-mean largest SDR gap between groups"}
    if significance is not None:
        from fairlandmark.stats.significance import SignificanceOptions

        options = SignificanceOptions.coerce(significance)
        if options.permutations:
            tests, method = _curve_test(study, grid, valid, min_group_size, options, gap, shared_permutations, stop,
                                        queue)
            settings.update({"permutations": options.permutations, "method": method,
                             "correction": options.correction, "alpha": options.alpha, "seed": options.seed,
                             "family": "attributes x keypoints, corrected apart from the DP tests"})
    groups = {a: list(coding.groups[a]) for a in coding.attributes}
    return CurveResult(grid, study.unit, list(study.keypoints), list(coding.attributes), groups, sdr, gap, gap_phi,
                       tests, settings)


def observed_hit_counts(study: Study, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hits per (run, cell) at every threshold of ``grid`` (strictly increasing, as :func:`error_curves`
    checks), shape (1, runs, cells, T * K) float64 (column t * K + k: keypoint k at grid[t]), and rows per
    (run, cell), shape (1, runs, cells).

    Exact counts, those of the kernel's one-hot products of each threshold's 0/1 columns: each error is binned
    once (its first threshold at or above it; a missing prediction, NaN, sorts past the last and never hits),
    the bins are counted per (run, cell, keypoint), and a cumulative sum over the grid gives the hits. Rows go
    in blocks, so no (rows x keypoints x grid) matrix is made (3.5 GB at a million images).

    Examples
    --------
    >>> import pandas as pd
    >>> from fairlandmark.audit import prepare_study
    >>> preds = pd.DataFrame({"image_id": ["a", "b", "c"], "keypoint": 1, "error_mm": [0.5, 1.5, np.nan]})
    >>> meta = pd.DataFrame({"image_id": ["a", "b", "c"], "sex": ["F", "F", "M"]})
    >>> sums, counts = observed_hit_counts(prepare_study(preds, meta, attributes=["sex"]), np.array([1.0, 2.0]))
    >>> sums[0, 0].tolist(), counts[0, 0].tolist()  # cells F, M; thresholds 1 and 2
    ([[1.0, 2.0], [0.0, 0.0]], [2.0, 1.0])
    """
    grid = np.asarray(grid, dtype=float)
    if np.any(np.diff(grid) <= 0):
        raise ValueError(f"observed_hit_counts: the grid must be strictly increasing, got {grid.tolist()}")
    errors, coding = study.errors, study.coding
    n_rows, K = errors.shape
    R, L, T = study.n_runs, coding.n_cells, len(grid)
    run_cell = np.asarray(study.row_run, dtype=np.int64) * L + np.asarray(coding.cell, dtype=np.int64)
    counts = np.bincount(run_cell, minlength=R * L).astype(np.float64).reshape(1, R, L)
    per_bin = np.zeros(R * L * K * (T + 1), dtype=np.int64)
    column = np.arange(K, dtype=np.int64) * (T + 1)
    block = max(1, _HIT_COUNT_BLOCK // max(1, K))
    for lo in range(0, n_rows, block):
        bins = np.searchsorted(grid, errors[lo:lo + block])  # side "left": e <= grid[t] exactly when bin <= t
        bins += run_cell[lo:lo + block, None] * (K * (T + 1)) + column
        per_bin += np.bincount(bins.ravel(), minlength=len(per_bin))
    hits = np.cumsum(per_bin.reshape(R, L, K, T + 1)[..., :T], axis=-1)  # (R, L, K, T)
    return hits.transpose(0, 1, 3, 2).reshape(1, R, L, T * K).astype(np.float64), counts


def _curve_null_batch(kernel: RunKernel, labels: list[np.ndarray] | None, cell_counts: np.ndarray, attrs: list[str],
                      aggregations: Mapping[str, np.ndarray], valid: Mapping[str, np.ndarray],
                      nulls: dict[str, np.ndarray], start: int, n: int, T: int, K: int,
                      sums: np.ndarray | None = None) -> None:
    """Curve gaps of one batch, written into ``nulls[a][start:start + n]``: from permuted ``labels``, or from
    per-cell ``sums`` (n, runs, cells, T*K) drawn from the large-sample null."""
    if sums is None:
        sums, _ = kernel.sums(labels or [], cell_counts.shape[-1], with_counts=False)
    fixed = np.broadcast_to(cell_counts, (n,) + cell_counts.shape)
    for a in attrs:
        gsums, gcounts = aggregate(sums, fixed, aggregations[a])
        with np.errstate(invalid="ignore", divide="ignore"):
            sdr = gsums / gcounts[..., None]  # (n, R, G, T*K)
        gap = nan_mean(parity_gap_value(sdr, np.broadcast_to(valid[a], gcounts.shape)), axis=1)  # no warning: worker threads
        nulls[a][start:start + n] = np.fmax.reduce(gap.reshape(n, T, K), axis=1)  # = nanmax, without its warning


class _TwoGroupGap(NamedTuple):
    """Gap of two groups A, B: ``|h_A / n_A - (total - h_A) / n_B| = |h_A * size_sum - offset| * inverse``."""

    size_sum: Any  # n_A + n_B, in the numerators' dtype (int16, int32 or float64)
    offset: np.ndarray  # total * n_A per column, same dtype (modulo 2**16 for int16)
    inverse: float  # 1 / (n_A * n_B)


class _SpreadGap(NamedTuple):
    """Gap of several groups: ``(max - min over groups of h_g * factors[g]) * inverse``."""

    factors: list[Any]  # L / n_g with L the sizes' least common multiple (exact), or 1 / n_g (rounded)
    inverse: float  # 1 / L, or 1.0


def _gap_form(sizes: list[int], totals: np.ndarray) -> _TwoGroupGap | _SpreadGap:
    """How one run's group hit counts (groups of ``sizes`` images; ``totals`` hits per column) become gaps.

    Exact integer numerators whenever they fit: for two groups in int16 when the counts are int16 and
    ``n_A * n_B`` stays below NARROW_LIMIT; in int32 below EXACT_NUMERATOR_LIMIT, in float64 below
    EXACT_FLOAT_LIMIT (integers up to 2**53 are exact there). Two groups always fit in float64 (the
    numerators stay below ``N**2``, and runs on this path have fewer than 2**24 rows); several groups fit
    while the least common multiple ``L`` of their sizes does (the products ``h_g * L / n_g`` stay below
    ``L``). Beyond, SDRs are ``h_g * (1 / n_g)``, rounded to the last place.

    Examples
    --------
    >>> form = _gap_form([150, 150], np.array([100, 300], dtype=np.int32))
    >>> form.offset, form.inverse == 1 / 22500
    (array([15000, 45000], dtype=int32), True)
    >>> _gap_form([150, 150], np.array([100, 300], dtype=np.int16)).offset  # 45000 - 65536
    array([ 15000, -20536], dtype=int16)
    >>> _gap_form([3, 4, 6], np.array([5], dtype=np.int32)).factors  # L = 12
    [np.int32(4), np.int32(3), np.int32(2)]
    """
    if len(sizes) == 2:
        n_a, n_b = sizes
        if totals.dtype == np.int16 and n_a * n_b < NARROW_LIMIT:
            # int16 numerators, computed modulo 2**16: the steps wrap, the result |h_A n_B - h_B n_A| <= n_A n_B
            # does not, so it comes out exact (the offset is taken modulo 2**16 too).
            wrapped = (totals.astype(np.int64) * n_a + 2**15) % 2**16 - 2**15
            return _TwoGroupGap(np.int16(n_a + n_b), wrapped.astype(np.int16), 1.0 / (n_a * n_b))
        dtype: type[np.int32] | type[np.float64] = np.int32 if (n_a + n_b) ** 2 < EXACT_NUMERATOR_LIMIT else np.float64
        offset = np.multiply(totals.astype(dtype), dtype(n_a))
        return _TwoGroupGap(dtype(n_a + n_b), offset, 1.0 / (n_a * n_b))
    lcm = math.lcm(*sizes)
    if lcm < min(EXACT_NUMERATOR_LIMIT, EXACT_FLOAT_LIMIT):
        return _SpreadGap([np.int32(lcm // size) for size in sizes], 1.0 / lcm)
    if lcm < EXACT_FLOAT_LIMIT:
        return _SpreadGap([np.float64(lcm // size) for size in sizes], 1.0 / lcm)
    return _SpreadGap([np.float64(1.0 / size) for size in sizes], 1.0)


class _CurvePlan:
    """What the fast curve-gap null needs, prepared once: the hit columns that vary in some run, with their
    per-run values and totals, and per (attribute, run) the factors that turn hit counts into SDR gaps.

    A column where every image hits (or none does) in every run gives every group an SDR of 1 (or 0) in
    every run, whatever the permutation: its gap is exactly 0, which never raises the maximum over the grid
    above the other thresholds' gaps (gaps are >= 0), so it is left out. Gaps come from exact numerators
    times one reciprocal per (attribute, run) (:func:`_gap_form`) instead of divisions, ten times cheaper;
    they agree with the observed gaps' divisions to about 1e-16, far inside the tie tolerance of the p-values.
    """

    def __init__(self, kernel: RunKernel, totals: list[np.ndarray], cell_counts: np.ndarray,
                 members: Mapping[str, list[np.ndarray]], T: int, K: int) -> None:
        n_rows = np.array([len(v) for v in kernel.values])
        varying = np.zeros(T * K, dtype=bool)
        for total, n in zip(totals, n_rows):
            varying |= (total > 0) & (total < n)
        # Kept columns keypoint by keypoint (column t * K + k: keypoint k at grid[t]), so that each keypoint's
        # thresholds are adjacent and its maximum over the grid is one reduceat.
        kept = np.flatnonzero(varying)
        self.keep = kept[np.argsort(kept % K, kind="stable")]
        keypoint_of = self.keep % K
        self.first_column = np.flatnonzero(np.r_[True, keypoint_of[1:] != keypoint_of[:-1]]) if kept.size else kept
        self.keypoints_kept = keypoint_of[self.first_column]
        self.K, self.n_runs = K, len(totals)
        self.n_cells = cell_counts.shape[1]
        self.values = [np.ascontiguousarray(v[:, self.keep]) for v in kernel.values]
        # Counts in int16 where they fit (runs of fewer than 2**15 rows): half the bytes in every step after.
        narrow = max(n_rows, default=0) < NARROW_LIMIT
        self.totals = [t[self.keep].astype(np.int16 if narrow else np.int32) for t in totals]
        self.members = dict(members)
        self.counter = PackedCellCounts(cell_counts.max(axis=0))
        # Gaps as exact numerators over one denominator per (attribute, run): one float product per run instead
        # of one division per group, and int16 or int32 (a quarter or half the bytes of float64) where the
        # numerators fit.
        self.gaps: dict[str, list[_TwoGroupGap | _SpreadGap]] = {
            a: [_gap_form([int(cell_counts[r, idx].sum()) for idx in groups], self.totals[r])
                for r in range(self.n_runs)] for a, groups in self.members.items()}

    def cell_hits(self, r: int, labels: np.ndarray) -> list[np.ndarray]:
        """Hit counts of every cell of run ``r``, (chunk, columns) int16 or int32 (the totals' dtype), for label
        rows (chunk, rows)."""
        return self.counter.counts(labels, self.values[r], self.totals[r])

    @property
    def n_columns(self) -> int:
        """Hit columns kept (those that vary in some run)."""
        return self.values[0].shape[1] if self.values else 0

    def add_gaps(self, a: str, r: int, hits: list[np.ndarray], total: np.ndarray) -> None:
        """Add run ``r``'s SDR gaps of attribute ``a`` (from the cells' hit counts) to ``total`` (chunk, columns)."""
        groups = self.members[a]
        group_hits = []
        for idx in groups[:1] if len(groups) == 2 else groups:
            h = hits[idx[0]]
            for c in idx[1:]:
                h = h + hits[c]  # exact: integer counts
            group_hits.append(h)
        form = self.gaps[a][r]
        # Products in the form's dtype, named: int16 counts times an int32 or float64 scalar must not stay int16
        # (numpy 1.x keeps an array's dtype when a scalar's value fits it).
        if isinstance(form, _TwoGroupGap):
            numerator = np.multiply(group_hits[0], form.size_sum, dtype=form.offset.dtype)
            numerator -= form.offset
            np.abs(numerator, out=numerator)
            total += np.multiply(numerator, form.inverse)
        else:
            spread_ = spread([np.multiply(h, f, dtype=f.dtype) for h, f in zip(group_hits, form.factors)])
            total += spread_ if form.inverse == 1.0 else np.multiply(spread_, form.inverse)

    def max_over_grid(self, total: np.ndarray) -> np.ndarray:
        """Per keypoint, the largest run-mean gap over the grid, (chunk, K), from the run sums of the kept columns.

        A left-out column's gap is 0 and kept gaps are >= 0, so a keypoint without kept columns gets 0. Dividing
        by the number of runs after the maximum gives the same bits (rounding is monotone).
        """
        out = np.zeros((len(total), self.K))
        if self.keep.size:
            out[:, self.keypoints_kept] = np.maximum.reduceat(total, self.first_column, axis=1)
        out /= self.n_runs
        return out


def _curve_null_batch_fast(plan: _CurvePlan, labels: list[np.ndarray], nulls: dict[str, np.ndarray], start: int,
                           n: int, chunk: int = CHUNK) -> None:
    """:func:`_curve_null_batch` when every group is in DP in every run and no group is empty.

    Per run the cells' hit counts (exact integers in float32), the SDR gaps of each attribute
    (:class:`_CurvePlan`), run gaps added in run order and divided by the number of runs, the max over the
    grid; in chunks of permutations that stay in cache, without the (permutations, runs, cells, columns)
    arrays of the general path.
    """
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        total = {a: np.zeros((hi - lo, plan.n_columns)) for a in plan.members}
        if plan.n_columns:
            for r in range(plan.n_runs):
                hits = plan.cell_hits(r, labels[r][lo:hi])
                for a in plan.members:
                    plan.add_gaps(a, r, hits, total[a])
        for a in plan.members:
            nulls[a][start + lo:start + hi] = plan.max_over_grid(total[a])


def _fast_case(T: int, valid: Mapping[str, np.ndarray], aggregations: Mapping[str, np.ndarray],
               group_counts: Mapping[str, np.ndarray]) -> bool:
    """Whether :func:`_curve_null_batch_fast` applies: every group in DP in every run, none empty, 2+ groups."""
    return T > 0 and all(valid[a].all() and aggregations[a].shape[1] >= 2 and (group_counts[a] > 0).all()
                         for a in aggregations)


def _curve_test(study: Study, grid: np.ndarray, valid: Mapping[str, np.ndarray], min_group_size: int,
                options: SignificanceOptions, observed_gap: Mapping[str, np.ndarray],
                shared_permutations: np.ndarray | None = None,
                stop: threading.Event | None = None,
                queue: TaskQueue | None = None) -> tuple[dict[str, dict[str, np.ndarray]], str]:
    from fairlandmark.stats.significance import (NormalNull, image_strata, permutation_batches, permutation_pvalue,
                                                 resolve_method, westfall_young_minp)

    errors, coding = study.errors, study.coding
    K, T, B = errors.shape[1], len(grid), options.permutations
    # Column t*K + k: keypoint k hits at grid[t] (a missing prediction never hits), in the dtype whose counts
    # are exact (float32 is what the packed fast path needs).
    exact = count_dtype(study.row_run)
    with np.errstate(invalid="ignore"):
        hits = (errors[:, None, :] <= grid[None, :, None]).reshape(len(errors), T * K).astype(exact)
    kernel = RunKernel(hits, study.row_run, study.n_runs)
    small = np.int8 if coding.n_cells < 128 else np.int32
    cells_by_run = kernel.labels_by_run(coding.cell.astype(small))
    strata = image_strata(kernel.labels_by_run(study.row_image))
    _, counts = kernel.sums(cells_by_run, coding.n_cells)
    attrs = list(coding.attributes)
    aggregations = {a: coding.aggregation(a) for a in attrs}
    # The null of every test, attribute by attribute; each attribute's batches go into its own columns.
    null = np.empty((B, len(attrs) * K))
    nulls = {a: null[:, i * K:(i + 1) * K] for i, a in enumerate(attrs)}
    members = {a: [np.flatnonzero(aggregations[a][:, g]) for g in range(aggregations[a].shape[1])] for a in attrs}
    group_counts = {a: counts[0] @ aggregations[a] for a in attrs}
    # The null the keypoint DP test uses: exact permutations, or above LARGE_SAMPLE_ROWS the large-sample
    # normal null of the per-cell hit counts at every threshold (the same theory; its cost does not grow
    # with the images, where 10,000 permutations of a million labels would take hours).
    method = options.method
    if method == "auto":
        in_dp = [group_counts[a][np.asarray(valid[a], dtype=bool)] for a in attrs]
        method = resolve_method("auto", len(study.row_run), int(min((x.min() for x in in_dp if x.size), default=0)))
    fast = method == "permutation" and exact is np.float32 and _fast_case(T, valid, aggregations, group_counts)
    totals = [v.sum(axis=0, dtype=np.float64).astype(np.float32) for v in kernel.values]
    plan = _CurvePlan(kernel, totals, counts[0], members, T, K) if fast else None
    with progress_bar(options.progress) as bar, single_threaded_blas(), \
            batch_pool(workers_for(options.n_jobs, float(len(study.row_run)) * T * K * B)) as pool:
        task = bar.add_task("error-curve permutations" if method == "permutation" else "error-curve large-sample null",
                            total=B)

        def compute(start: int, n: int, labels: list[np.ndarray] | None, sums: np.ndarray | None = None) -> None:
            if stop is not None and stop.is_set():
                raise CancelledError("the error-curve test was abandoned")
            if plan is not None and labels is not None:
                _curve_null_batch_fast(plan, labels, nulls, start, n)
            else:
                _curve_null_batch(kernel, labels, counts[0], attrs, aggregations, valid, nulls, start, n, T, K,
                                  sums=sums)
            bar.advance(task, n)

        if method == "normal":
            large_sample = NormalNull(kernel, cells_by_run, strata, coding.n_cells, seed=options.seed, task=6)
            per_draw = 8 * study.n_runs * coding.n_cells * T * K * 3  # the sums, group sums and SDRs of one draw
            size = max(1, min(options.batch_size, (64 << 20) // max(per_draw, 1)))
            for start in range(0, B, size):
                n = min(size, B - start)
                pool.submit(compute, start, n, None, large_sample.draw(n))  # drawn here, in order
        else:
            # The very permutations of the keypoint DP test (same seed, same streams, whatever the batch size).
            batches = permutation_batches(cells_by_run, B, seed=options.seed, strata=strata,
                                          batch_size=options.batch_size, drawn=shared_permutations)
            if queue is not None and shared_permutations is not None:
                # Each batch writes its own rows: whichever thread computes it, the same numbers.
                share_batches(queue, batches, compute, count=-(-B // options.batch_size))
            else:
                for start, n, labels in batches:
                    pool.submit(compute, start, n, labels)
    obs = np.concatenate([observed_gap[a] for a in attrs])
    p = permutation_pvalue(null, obs)
    adjusted = {"bh": _nan_adjust(p, "bh"), "holm": _nan_adjust(p, "holm")}
    if queue is not None:
        # Westfall-Young, the longest step left, queued too: another free thread may take it.
        minp = queue.put(lambda: westfall_young_minp(null, obs))
        queue.work()
        adjusted["westfall-young"] = minp.result()
    else:
        adjusted["westfall-young"] = westfall_young_minp(null, obs)
    chosen = adjusted[options.correction]
    out = {}
    for i, a in enumerate(attrs):
        s = slice(i * K, (i + 1) * K)
        out[a] = {"p_value": p[s], "p_adjusted": chosen[s],
                  "significant": np.where(np.isnan(chosen[s]), False, chosen[s] < options.alpha),
                  "p_bh": adjusted["bh"][s], "p_holm": adjusted["holm"][s],
                  "p_westfall_young": adjusted["westfall-young"][s]}
    return out, method
