"""Intervals that contain their estimate: the signed SDR gap of the reported pair.

DP is a maximum over pairs of groups (``max_g SDR_g - min_g SDR_g``). A
percentile bootstrap interval of a maximum is biased upward: resampling noise
can only make the largest gap larger, so the interval often lies wholly above
the estimate (DP 0.047, interval 0.054-0.138), and at a true gap of 0 it can
never cover 0. The max-gap question "is any group behind?" is answered by the
permutation test; the interval here answers "how far behind, and how sure?"
for the pair the audit reports:

    gap = SDR(high group) - SDR(low group), each the mean over runs,

with the percentile interval of the same difference over the stratified
bootstrap resamples. The difference is a smooth (linear in the hit counts)
statistic, so its bootstrap distribution is centred on the estimate and the
interval contains it; it may include 0 or negative values (the other group
could be ahead). Its coverage is checked by simulation in
``tests/test_intervals.py`` and ``benchmarks/interval_coverage.py``.

With more than two groups the reported pair is the one with the largest
observed gap, so the interval inherits that selection (winner's curse): at a
true gap of 0 between many groups it covers 0 less often than nominal. The
permutation p-value, adjusted over keypoints, is the test to read.

Examples
--------
>>> import numpy as np
>>> sdr = np.array([[[0.8], [0.6]]])  # one run, groups (F, M), one keypoint
>>> high, low = reported_pair(sdr, np.array([[True, True]]))
>>> int(high[0]), int(low[0])
(0, 1)
>>> boot = np.array([[[0.82], [0.58]], [[0.78], [0.61]], [[0.80], [0.60]]])
>>> gap, lo, hi = pair_gap_interval(boot, sdr.mean(axis=0), high, low, ci=0.5)
>>> round(float(gap[0]), 3), bool(lo[0] <= gap[0] <= hi[0])
(0.2, True)
"""

from __future__ import annotations

import warnings

import numpy as np

from fairlandmark.stats.kernel import mean_std_over_runs, parity_gap

__all__ = ["reported_pair", "pair_gap", "pair_gap_interval", "percentile_interval", "reported_gap_interval"]


def reported_pair(sdr_by_run: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (high, low) pair the audit reports for each keypoint.

    Each group's SDR is averaged over the runs where it takes part in DP; the
    pair is the groups with the largest and the smallest of these means.

    Parameters
    ----------
    sdr_by_run : ndarray, shape (R, G, K)
        Per-run group SDR at the primary threshold.
    valid : ndarray of bool, shape (R, G)
        Whether a group takes part in DP in a run.

    Returns
    -------
    high, low : ndarray of int, shape (K,)
        Group indices; meaningful where at least two groups take part in some run.
    """
    in_dp = np.where(valid[..., None], sdr_by_run, np.nan)
    mean_sdr, _ = mean_std_over_runs(in_dp, axis=0)
    _, high, low = parity_gap(mean_sdr, np.asarray(valid.any(axis=0)))
    return high, low


def pair_gap(sdr: np.ndarray, high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """``sdr[..., high[k], k] - sdr[..., low[k], k]`` for every keypoint ``k``.

    Parameters
    ----------
    sdr : ndarray, shape (..., G, K)
    high, low : ndarray of int, shape (K,)

    Returns
    -------
    ndarray, shape (..., K)

    Examples
    --------
    >>> pair_gap(np.array([[0.9, 0.5], [0.7, 0.6]]), np.array([0, 1]), np.array([1, 0])).tolist()
    [0.20000000000000007, 0.09999999999999998]
    """
    k = np.arange(sdr.shape[-1])
    return sdr[..., high, k] - sdr[..., low, k]


def percentile_interval(samples: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed percentile interval over the first axis, ignoring NaN resamples.

    Examples
    --------
    >>> lo, hi = percentile_interval(np.arange(101.0)[:, None], 0.9)
    >>> round(float(lo[0]), 6), round(float(hi[0]), 6)
    (5.0, 95.0)
    """
    tail = (1 - ci) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN keypoints give NaN
        # Without NaN, np.quantile gives the same numbers much faster.
        quantile = np.nanquantile if np.isnan(samples).any() else np.quantile
        lo, hi = quantile(samples, [tail, 1 - tail], axis=0)
    return lo, hi


def pair_gap_interval(boot_sdr: np.ndarray, sdr: np.ndarray, high: np.ndarray, low: np.ndarray,
                      ci: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signed SDR gap of the reported pair and its percentile bootstrap interval.

    Parameters
    ----------
    boot_sdr : ndarray, shape (B, G, K)
        Group SDR (mean over runs) in each bootstrap resample.
    sdr : ndarray, shape (G, K)
        Observed group SDR (mean over runs), computed as in the resamples.
    high, low : ndarray of int, shape (K,)
        The reported pair (:func:`reported_pair`).
    ci : float
        Coverage, e.g. 0.95.

    Returns
    -------
    gap, low, high : ndarray, shape (K,)
        The estimate and the interval bounds; NaN where the pair has no value.
    """
    gap = pair_gap(sdr, high, low)
    lo, hi = percentile_interval(pair_gap(boot_sdr, high, low), ci)
    missing = np.isnan(gap)
    return gap, np.where(missing, np.nan, lo), np.where(missing, np.nan, hi)


def reported_gap_interval(sdr_by_run: np.ndarray, valid: np.ndarray, boot_sdr: np.ndarray,
                          ci: float) -> dict[str, np.ndarray]:
    """Columns ``gap, gap_ci_low, gap_ci_high`` of one attribute (the significance layer's hook).

    Parameters
    ----------
    sdr_by_run : ndarray, shape (R, G, K)
        Observed per-run group SDR at the primary threshold.
    valid : ndarray of bool, shape (R, G)
        Whether a group takes part in DP in a run.
    boot_sdr : ndarray, shape (B, G, K)
        Group SDR (mean over runs) in each bootstrap resample.
    ci : float

    Returns
    -------
    dict of str -> ndarray, shape (K,)
        NaN where fewer than two groups take part in DP (no pair is reported).
    """
    high, low = reported_pair(sdr_by_run, valid)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sdr = np.nanmean(sdr_by_run, axis=0)  # as the resamples average over runs
    gap, lo, hi = pair_gap_interval(boot_sdr, sdr, high, low, ci)
    if valid.any(axis=0).sum() < 2:
        gap = lo = hi = np.full(sdr.shape[-1], np.nan)
    return {"gap": gap, "gap_ci_low": lo, "gap_ci_high": hi}
