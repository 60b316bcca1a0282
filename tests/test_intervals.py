"""The interval shown beside DP: signed SDR gap of the reported pair, with its bootstrap interval.

Checked against a plain-loop computation, for containing its estimate, and for
coverage by simulation at a zero gap and at a real gap (keypoints are
independent replicates, so one audit gives many intervals).
"""

import warnings

import numpy as np
import pytest

import fairlandmark
from fairlandmark.exceptions import FairlandmarkWarning
from fairlandmark.stats.intervals import pair_gap, pair_gap_interval, percentile_interval, reported_pair


def test_reported_pair_matches_a_loop():
    rng = np.random.default_rng(1)
    sdr = rng.random((3, 4, 6))
    valid = np.ones((3, 4), bool)
    valid[1, 2] = False  # group 2 out of DP in run 1: its mean uses runs 0 and 2 only
    high, low = reported_pair(sdr, valid)
    for k in range(6):
        means = [np.mean([sdr[r, g, k] for r in range(3) if valid[r, g]]) for g in range(4)]
        assert high[k] == int(np.argmax(means)) and low[k] == int(np.argmin(means))


def test_pair_gap_interval_by_hand():
    boot = np.array([[[0.9], [0.5]], [[0.7], [0.6]], [[0.8], [0.55]], [[0.85], [0.4]]])  # (B=4, G=2, K=1)
    gap, lo, hi = pair_gap_interval(boot, np.array([[0.8], [0.5]]), np.array([0]), np.array([1]), ci=0.5)
    diffs = np.array([0.4, 0.1, 0.25, 0.45])
    assert gap[0] == pytest.approx(0.3)
    assert lo[0] == pytest.approx(np.quantile(diffs, 0.25)) and hi[0] == pytest.approx(np.quantile(diffs, 0.75))
    assert pair_gap(boot, np.array([1]), np.array([0]))[:, 0] == pytest.approx(-diffs)
    lo, hi = percentile_interval(np.array([[1.0, np.nan], [3.0, np.nan]]), 0.5)
    assert lo[0] == pytest.approx(1.5) and np.isnan(lo[1])


def _study(rng, n_per_group, p_high, p_low, keypoints):
    """Two groups; a prediction hits (error 1 mm) with probability p, else misses (3 mm)."""
    sex = np.repeat(["F", "M"], n_per_group)
    p = np.where(sex == "F", p_high, p_low)[:, None]
    hit = rng.random((len(sex), keypoints)) < p
    true = np.zeros((len(sex), keypoints, 2))
    pred = true.copy()
    pred[..., 0] = np.where(hit, 1.0, 3.0)
    return pred, true, {"sex": sex}


def _audit(pred, true, groups, seed, bootstrap=400, runs=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairlandmarkWarning)
        return fairlandmark.audit_arrays(pred, true, groups, spacing_mm=1.0, min_group_size=5, runs=runs,
                                         significance={"permutations": 0, "baseline_repeats": 0,
                                                       "bootstrap": bootstrap, "seed": seed})


def test_gap_equals_the_group_sdrs_and_the_interval_contains_it():
    rng = np.random.default_rng(3)
    pred, true, groups = _study(rng, 60, 0.7, 0.6, 12)
    pk = _audit(pred, true, groups, seed=1).per_keypoint
    err = np.linalg.norm(pred - true, axis=-1)
    hits = err <= 2.0
    f, m = hits[groups["sex"] == "F"].mean(axis=0), hits[groups["sex"] == "M"].mean(axis=0)
    expected = np.where(pk["pair"] == "F vs M", f - m, m - f)
    assert pk["gap"].to_numpy() == pytest.approx(expected)
    assert (pk["gap"] >= 0).all()  # the reported pair is (higher, lower)
    assert ((pk["gap_ci_low"] <= pk["gap"]) & (pk["gap"] <= pk["gap_ci_high"])).all()


@pytest.mark.parametrize("p_low, true_gap", [(0.7, 0.0), (0.55, 0.15)])
def test_coverage_by_simulation(p_low, true_gap):
    """95% intervals cover the true signed gap of the reported pair about 95% of the time.

    24 studies x 25 keypoints = 600 intervals: the standard error of the
    coverage is about 0.009, so [0.92, 0.98] fails a wrong interval and passes a
    right one except with negligible probability.
    """
    rng = np.random.default_rng(7)
    covered = []
    for i in range(24):
        pred, true, groups = _study(rng, 80, 0.7, p_low, 25)
        pk = _audit(pred, true, groups, seed=i, bootstrap=300).per_keypoint
        # Truth of the reported orientation: F - M is +true_gap; a flipped pair has -true_gap.
        truth = np.where(pk["pair"] == "F vs M", true_gap, -true_gap)
        covered += list((pk["gap_ci_low"] <= truth) & (truth <= pk["gap_ci_high"]))
    coverage = float(np.mean(covered))
    assert 0.92 <= coverage <= 0.98, coverage


def test_old_dp_interval_misses_its_estimate_where_the_gap_interval_does_not():
    """The motivating defect: over 10 hold-outs, the percentile interval of DP (a mean of maxima) often lies above DP."""
    rng = np.random.default_rng(5)
    pred, true, groups = _study(rng, 400, 0.7, 0.7, 30)
    runs = np.tile(np.repeat(np.arange(10), 40), 2)  # 40 images of each group in each of 10 runs
    pk = _audit(pred, true, groups, seed=2, runs=runs).per_keypoint
    dp_outside = ~((pk["dp_ci_low"] <= pk["dp"]) & (pk["dp"] <= pk["dp_ci_high"]))
    gap_outside = ~((pk["gap_ci_low"] <= pk["gap"]) & (pk["gap"] <= pk["gap_ci_high"]))
    assert dp_outside.sum() >= 3 and gap_outside.sum() == 0
