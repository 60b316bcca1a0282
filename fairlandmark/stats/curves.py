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

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from fairlandmark.exceptions import InputError
from fairlandmark.inputs.study import Study
from fairlandmark.progress import progress_bar
from fairlandmark.stats.kernel import (RunKernel, aggregate, build_values, parity_gap_value, sdr_from_sums,
                                       single_threaded_blas)
from fairlandmark.stats.workers import batch_pool, resolve_workers

if TYPE_CHECKING:
    from fairlandmark.stats.significance import SignificanceOptions

__all__ = ["CurveResult", "curve_grid", "error_curves", "group_validity", "DEFAULT_CURVE_POINTS"]

DEFAULT_CURVE_POINTS = 12
# Permutations per step of the curve-gap null: its float64 work arrays (chunk x keypoints x grid) stay in cache.
CHUNK = 64
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


def _run_mean(x: np.ndarray, axis: int = 0) -> np.ndarray:
    if not np.isnan(x).any():
        return x.mean(axis=axis)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


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
                 significance: Any = None, shared_permutations: np.ndarray | None = None) -> CurveResult:
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
    values, layout = build_values(study.errors, grid, present=False, error=False)
    kernel = RunKernel(values, study.row_run, study.n_runs)
    sums, counts = kernel.sums(kernel.labels_by_run(coding.cell), coding.n_cells)
    K, T = study.errors.shape[1], len(grid)
    sdr, gap, gap_phi = {}, {}, {}
    for a in coding.attributes:
        gsums, gcounts = aggregate(sums[0], counts[0], coding.aggregation(a))
        curves = np.stack([sdr_from_sums(gsums, gcounts, layout, t) for t in range(T)], axis=1)  # (R, T, G, K)
        ok = np.broadcast_to(valid[a][:, None, :], curves.shape[:3])
        per_run = parity_gap_value(curves, ok)  # (R, T, K)
        mean_gap = _run_mean(per_run)  # (T, K)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            gap[a] = np.nanmax(mean_gap, axis=0) if T else np.full(K, np.nan)
            in_dp = np.where(valid[a][:, None, :, None], curves, np.nan)
            sdr[a] = np.moveaxis(_run_mean(in_dp), 0, -1)  # (G, K, T)
        filled = np.where(np.isnan(mean_gap), -np.inf, mean_gap)
        gap_phi[a] = np.where(np.isnan(gap[a]), np.nan, grid[np.argmax(filled, axis=0)])
    tests: dict[str, dict[str, np.ndarray]] = {}
    settings: dict[str, Any] = {"statistic": "max over the grid of the run-mean largest SDR gap between groups"}
    if significance is not None:
        from fairlandmark.stats.significance import SignificanceOptions

        options = SignificanceOptions.coerce(significance)
        if options.permutations:
            tests = _curve_test(study, grid, valid, min_group_size, options, gap, shared_permutations)
            settings.update({"permutations": options.permutations, "correction": options.correction,
                             "alpha": options.alpha, "seed": options.seed,
                             "family": "attributes x keypoints, corrected apart from the DP tests"})
    groups = {a: list(coding.groups[a]) for a in coding.attributes}
    return CurveResult(grid, study.unit, list(study.keypoints), list(coding.attributes), groups, sdr, gap, gap_phi,
                       tests, settings)


def _curve_null_batch(kernel: RunKernel, labels: list[np.ndarray], cell_counts: np.ndarray, attrs: list[str],
                      aggregations: Mapping[str, np.ndarray], valid: Mapping[str, np.ndarray],
                      nulls: dict[str, np.ndarray], start: int, n: int, T: int, K: int) -> None:
    """Curve gaps of one batch of permutations, written into ``nulls[a][start:start + n]``."""
    sums, _ = kernel.sums(labels, cell_counts.shape[-1], with_counts=False)
    fixed = np.broadcast_to(cell_counts, (n,) + cell_counts.shape)
    for a in attrs:
        gsums, gcounts = aggregate(sums, fixed, aggregations[a])
        with np.errstate(invalid="ignore", divide="ignore"):
            sdr = gsums / gcounts[..., None]  # (n, R, G, T*K)
        gap = _run_mean(parity_gap_value(sdr, np.broadcast_to(valid[a], gcounts.shape)), axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            nulls[a][start:start + n] = np.nanmax(gap.reshape(n, T, K), axis=1)


def _cell_hits(kernel: RunKernel, totals: list[np.ndarray], r: int, labels: np.ndarray,
               n_cells: int) -> list[np.ndarray]:
    """Hit counts of each cell, (n, columns) float32 (exact integers), of run ``r`` for label rows (n, n_r).

    One product for all cells but the last, whose counts are the run's totals minus the others'.
    """
    n = labels.shape[0]
    if n_cells == 1:
        return [np.broadcast_to(totals[r], (n, kernel.n_columns))]
    ids = np.arange(n_cells - 1, dtype=labels.dtype)[None, :, None]
    assign = (labels[:, None, :] == ids).astype(np.float32).reshape(n * (n_cells - 1), -1)
    hits = (assign @ kernel.values[r]).reshape(n, n_cells - 1, -1)
    cells = [hits[:, c] for c in range(n_cells - 1)]
    return cells + [totals[r] - hits.sum(axis=1)]


def _curve_null_batch_fast(kernel: RunKernel, totals: list[np.ndarray], labels: list[np.ndarray],
                           cell_counts: np.ndarray, attrs: list[str], members: Mapping[str, list[np.ndarray]],
                           nulls: dict[str, np.ndarray], start: int, n: int, T: int, K: int,
                           chunk: int = CHUNK) -> None:
    """:func:`_curve_null_batch` when every group is in DP in every run and no group is empty.

    Per run and group the SDR as ``hits / images`` in float64, the gap as max - min, run gaps added in run
    order and divided by the number of runs, the max over the grid: the same float64 operations as the
    general path (hit counts are exact integers in float32), so the same numbers; in chunks of permutations
    that stay in cache, without the (permutations, runs, cells, columns) arrays of the general path.
    """
    n_runs, n_cells = cell_counts.shape
    sizes = {a: [[float(cell_counts[r, idx].sum()) for idx in members[a]] for r in range(n_runs)] for a in attrs}
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        total: dict[str, np.ndarray] = {}
        for r in range(n_runs):
            hits = _cell_hits(kernel, totals, r, labels[r][lo:hi], n_cells)
            for a in attrs:
                sdr = []
                for idx, size in zip(members[a], sizes[a][r]):
                    group = hits[idx[0]]
                    for c in idx[1:]:
                        group = group + hits[c]  # exact: integer counts
                    sdr.append(np.divide(group, size, dtype=np.float64))
                if len(sdr) == 2:
                    gap = np.subtract(sdr[0], sdr[1], out=sdr[0])
                    np.abs(gap, out=gap)  # = max - min, bit for bit
                else:
                    high, low = np.maximum(sdr[0], sdr[1]), np.minimum(sdr[0], sdr[1])
                    for values in sdr[2:]:
                        np.maximum(high, values, out=high)
                        np.minimum(low, values, out=low)
                    gap = np.subtract(high, low, out=high)
                if r == 0:
                    total[a] = gap
                else:
                    total[a] += gap
        for a in attrs:
            nulls[a][start + lo:start + hi] = (total[a] / n_runs).reshape(hi - lo, T, K).max(axis=1)


def _fast_case(T: int, valid: Mapping[str, np.ndarray], aggregations: Mapping[str, np.ndarray],
               group_counts: Mapping[str, np.ndarray]) -> bool:
    """Whether :func:`_curve_null_batch_fast` applies: every group in DP in every run, none empty, 2+ groups."""
    return T > 0 and all(valid[a].all() and aggregations[a].shape[1] >= 2 and (group_counts[a] > 0).all()
                         for a in aggregations)


def _curve_test(study: Study, grid: np.ndarray, valid: Mapping[str, np.ndarray], min_group_size: int,
                options: SignificanceOptions, observed_gap: Mapping[str, np.ndarray],
                shared_permutations: np.ndarray | None = None) -> dict[str, dict[str, np.ndarray]]:
    from fairlandmark.stats.significance import (image_strata, permutation_batches, permutation_pvalue,
                                                 westfall_young_minp)

    errors, coding = study.errors, study.coding
    K, T, B = errors.shape[1], len(grid), options.permutations
    # Column t*K + k: keypoint k hits at grid[t] (a missing prediction never hits). float32 keeps counts exact.
    with np.errstate(invalid="ignore"):
        hits = (errors[:, None, :] <= grid[None, :, None]).reshape(len(errors), T * K).astype(np.float32)
    kernel = RunKernel(hits, study.row_run, study.n_runs)
    small = np.int8 if coding.n_cells < 128 else np.int32
    cells_by_run = kernel.labels_by_run(coding.cell.astype(small))
    strata = image_strata(kernel.labels_by_run(study.row_image))
    _, counts = kernel.sums(cells_by_run, coding.n_cells)
    attrs = list(coding.attributes)
    aggregations = {a: coding.aggregation(a) for a in attrs}
    nulls = {a: np.empty((B, K)) for a in attrs}
    members = {a: [np.flatnonzero(aggregations[a][:, g]) for g in range(aggregations[a].shape[1])] for a in attrs}
    group_counts = {a: counts[0] @ aggregations[a] for a in attrs}
    fast = _fast_case(T, valid, aggregations, group_counts)
    totals = [v.sum(axis=0, dtype=np.float64).astype(np.float32) for v in kernel.values]
    # The very permutations of the keypoint DP test (same seed, same streams, whatever the batch size).
    with progress_bar(options.progress) as bar, single_threaded_blas(), \
            batch_pool(resolve_workers(options.n_jobs)) as pool:
        task = bar.add_task("error-curve permutations", total=B)

        def compute(start: int, n: int, labels: list[np.ndarray]) -> None:
            if fast:
                _curve_null_batch_fast(kernel, totals, labels, counts[0], attrs, members, nulls, start, n, T, K)
            else:
                _curve_null_batch(kernel, labels, counts[0], attrs, aggregations, valid, nulls, start, n, T, K)
            bar.advance(task, n)

        for start, n, labels in permutation_batches(cells_by_run, B, seed=options.seed, strata=strata,
                                                    batch_size=options.batch_size, drawn=shared_permutations):
            pool.submit(compute, start, n, labels)
    null = np.concatenate([nulls[a] for a in attrs], axis=1)
    obs = np.concatenate([observed_gap[a] for a in attrs])
    p = permutation_pvalue(null, obs)
    adjusted = {"bh": _nan_adjust(p, "bh"), "holm": _nan_adjust(p, "holm"),
                "westfall-young": westfall_young_minp(null, obs)}
    chosen = adjusted[options.correction]
    out = {}
    for i, a in enumerate(attrs):
        s = slice(i * K, (i + 1) * K)
        out[a] = {"p_value": p[s], "p_adjusted": chosen[s],
                  "significant": np.where(np.isnan(chosen[s]), False, chosen[s] < options.alpha),
                  "p_bh": adjusted["bh"][s], "p_holm": adjusted["holm"][s],
                  "p_westfall_young": adjusted["westfall-young"][s]}
    return out
