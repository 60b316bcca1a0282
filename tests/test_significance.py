"""Significance layer: exact formulas, agreement with scipy/statsmodels, and
statistical properties (uniform p under the null, power on a planted effect,
bootstrap coverage, reproducibility)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fairlandmark import audit_arrays
from fairlandmark.exceptions import InputError
from fairlandmark.stats.significance import (
    SignificanceOptions,
    benjamini_hochberg,
    holm,
    permutation_pvalue,
    westfall_young_minp,
)


def _wide(path):
    frame = pd.read_csv(path, header=None, dtype={0: str})
    coords = frame.iloc[:, 1:].to_numpy(dtype=float)
    return frame[0].to_numpy(), coords.reshape(len(frame), -1, 2)


@pytest.fixture(scope="module")
def isbi(shared_data):
    """Real inter-observer landmark errors: junior doctor as 'prediction', senior as truth (mm)."""
    ids, junior = _wide(shared_data / "isbi2015_all_junior.csv")
    ids2, senior = _wide(shared_data / "isbi2015_all_senior.csv")
    assert (ids == ids2).all()
    return ids, junior, senior


def _balanced_labels(rng, n, levels=("F", "M")):
    labels = np.resize(np.asarray(levels), n)
    return rng.permutation(labels)


# -- exact formulas ----------------------------------------------------------------------

def test_permutation_pvalue_counts_ties_and_adds_one():
    null = np.array([[0.1, 0.5], [0.2, 0.5], [0.3, 0.1], [0.2, 0.7]])
    p = permutation_pvalue(null, np.array([0.2, 0.5]))
    # test 0: 0.2, 0.3, 0.2 are >= 0.2 -> (1 + 3) / 5; test 1: 0.5, 0.5, 0.7 -> (1 + 3) / 5
    np.testing.assert_allclose(p, [4 / 5, 4 / 5])
    assert np.isnan(permutation_pvalue(null, np.array([np.nan, 0.1]))[0])


def test_bh_and_holm_equal_statsmodels():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(3)
    for m in (1, 2, 7, 111):
        p = np.concatenate([rng.uniform(size=m - m // 3), rng.uniform(0, 0.01, size=m // 3)])
        np.testing.assert_allclose(benjamini_hochberg(p), multipletests(p, method="fdr_bh")[1], rtol=1e-12)
        np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1], rtol=1e-12)


def _westfall_young_slow(null, observed):
    """Step-down minP written from the textbook definition with plain loops."""
    B, m = null.shape
    full = np.vstack([observed[None, :], null])  # the observed statistic counts among the B + 1

    def pval(col, value):
        return sum(1 for v in full[:, col] if v >= value - 1e-9 * max(1.0, abs(value))) / (B + 1)

    raw = [(1 + sum(1 for v in null[:, j] if v >= observed[j] - 1e-9 * max(1.0, abs(observed[j])))) / (B + 1)
           for j in range(m)]
    order = sorted(range(m), key=lambda j: (raw[j], j))
    adjusted = [0.0] * m
    previous = 0.0
    for i, j in enumerate(order):
        hits = 0
        for b in range(B):
            q = min(pval(order[k], null[b, order[k]]) for k in range(i, m))
            if q <= raw[j] * (1 + 1e-12):
                hits += 1
        value = max(previous, (1 + hits) / (B + 1))
        adjusted[j] = min(value, 1.0)
        previous = value
    return np.array(adjusted)


def test_westfall_young_matches_slow_definition():
    rng = np.random.default_rng(5)
    null = rng.normal(size=(60, 6))
    null[:, 2] = np.round(null[:, 2], 1)  # ties
    observed = np.array([2.5, 0.1, 0.3, -1.0, 1.9, 0.0])
    np.testing.assert_allclose(westfall_young_minp(null, observed), _westfall_young_slow(null, observed), rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_perm=st.integers(1, 25), n_tests=st.integers(1, 5))
def test_westfall_young_matches_slow_definition_with_near_ties(seed, n_perm, n_tests):
    # Near-ties straddling the tolerance (1e-9 relative) and chains of them: the sorted-search shortcut must
    # count exactly what the definition counts.
    rng = np.random.default_rng(seed)
    null = rng.integers(0, 4, size=(n_perm, n_tests)) * 0.25
    null += rng.choice([0.0, 1e-16, -1e-16, 4e-10, 8e-10, 1.1e-9, -1.1e-9], size=null.shape)
    observed = np.where(rng.random(n_tests) < 0.5, null[0], rng.integers(0, 4, n_tests) * 0.25)
    null[rng.random(null.shape) < 0.1] = np.nan  # permutations without a statistic (a group too small)
    keep = rng.random(n_tests) > 0.2
    observed = np.where(keep, observed, np.nan)
    got = westfall_young_minp(null, observed)
    assert np.isnan(got[~keep]).all()
    if keep.any():
        # The definition, with a NaN permutation never as extreme as anything (as permutation_pvalue counts it).
        slow = _westfall_young_slow(np.where(np.isnan(null[:, keep]), -np.inf, null[:, keep]), observed[keep])
        np.testing.assert_allclose(got[keep], slow, rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_perm=st.integers(1, 30), n_tests=st.integers(1, 7),
       rows=st.integers(1, 3))
def test_westfall_young_in_blocks_of_tests_counts_what_the_definition_counts(seed, n_perm, n_tests, rows):
    # Large nulls go through the tests a block at a time (a few rows of the transposed null): force blocks of
    # ``rows`` tests on small ones, with near-ties and NaN, against the whole-array run and the definition.
    from fairlandmark.stats import significance as significance_module

    rng = np.random.default_rng(seed)
    null = rng.integers(0, 4, size=(n_perm, n_tests)) * 0.25
    null += rng.choice([0.0, 1e-16, -1e-16, 8e-10, 1.1e-9], size=null.shape)
    null[rng.random(null.shape) < 0.1] = np.nan
    observed = np.where(rng.random(n_tests) < 0.5, null[0], rng.integers(0, 4, n_tests) * 0.25)
    observed = np.where(np.isnan(observed), 0.5, observed)
    whole = westfall_young_minp(null, observed)
    default = significance_module._WESTFALL_YOUNG_BLOCK_BYTES
    significance_module._WESTFALL_YOUNG_BLOCK_BYTES = 8 * n_perm * rows
    try:
        blocked = westfall_young_minp(null, observed)
    finally:
        significance_module._WESTFALL_YOUNG_BLOCK_BYTES = default
    np.testing.assert_array_equal(blocked, whole)
    slow = _westfall_young_slow(np.where(np.isnan(null), -np.inf, null), observed)
    np.testing.assert_allclose(blocked, slow, rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_perm=st.integers(1, 40), n_tests=st.integers(1, 6))
def test_westfall_young_with_missing_permutation_statistics(seed, n_perm, n_tests):
    # A NaN permutation statistic (a permuted group too small for a keypoint) is never as extreme as the
    # observed one: the adjusted p-value is then never below the raw one, and a single test keeps its raw p.
    rng = np.random.default_rng(seed)
    null = rng.integers(0, 5, size=(n_perm, n_tests)) * 0.25
    null[rng.random(null.shape) < 0.2] = np.nan
    observed = rng.integers(0, 5, n_tests) * 0.25
    got = westfall_young_minp(null, observed)
    raw = permutation_pvalue(null, observed)
    assert np.all(got >= raw - 1e-12)
    np.testing.assert_allclose(westfall_young_minp(null[:, :1], observed[:1]), raw[:1], rtol=1e-12)


def test_westfall_young_is_between_raw_and_bonferroni():
    rng = np.random.default_rng(6)
    null = rng.normal(size=(400, 10))
    observed = rng.normal(size=10) + np.array([3, 0, 0, 0, 0, 0, 0, 0, 0, 2.5])
    raw = permutation_pvalue(null, observed)
    wy = westfall_young_minp(null, observed)
    assert np.all(wy >= raw - 1e-12)
    assert np.all(wy <= np.minimum(raw * 10, 1) + 1e-12)


def test_options_are_validated():
    with pytest.raises(InputError, match="ci"):
        SignificanceOptions(ci=1.5)
    with pytest.raises(InputError, match="correction"):
        SignificanceOptions(correction="bonferroni")
    with pytest.raises(InputError, match="permutations"):
        SignificanceOptions(permutations=-1)


# -- agreement with scipy ----------------------------------------------------------------------

def test_pvalue_agrees_with_scipy_permutation_test():
    rng = np.random.default_rng(11)
    n = 60
    sex = _balanced_labels(rng, n)
    true = np.zeros((n, 2, 2))
    pred = true.copy()
    scale = np.where(sex == "F", 1.0, 1.35)[:, None]
    pred[..., 0] = rng.rayleigh(scale, size=(n, 2))
    res = audit_arrays(pred, true, {"sex": sex}, spacing_mm=1.0, thresholds_mm=[1.5], min_group_size=5,
                       significance=SignificanceOptions(permutations=4000, bootstrap=0, baseline_repeats=0, seed=1))
    errors = pred[..., 0]
    for k in range(2):
        hit = errors[:, k] <= 1.5

        def statistic(x, y):
            return np.abs(np.mean(x) - np.mean(y))

        ref = stats.permutation_test((hit[sex == "F"], hit[sex == "M"]), statistic, permutation_type="independent",
                                     n_resamples=4000, alternative="greater", random_state=2)
        ours = res.per_keypoint.loc[k, "p_value"]
        se = np.sqrt(ref.pvalue * (1 - ref.pvalue) / 4000) * np.sqrt(2) + 1e-3
        assert abs(ours - ref.pvalue) < 4 * se, (k, ours, ref.pvalue)


# -- statistical properties on real null data ----------------------------------------------------

def test_null_pvalues_uniform_and_false_discoveries_controlled(isbi):
    """Real inter-observer errors with random balanced labels: no group effect.

    The MRE-gap statistic is continuous, so its p-values are uniform (KS). The
    SDR gap is discrete (with 200 + 200 images it moves in steps of 1/200 and
    its smallest attainable value has p = 1), so its p-values are valid rather
    than uniform: P(p <= a) <= a at every level a, which is what a gate needs.
    """
    ids, junior, senior = isbi
    rng = np.random.default_rng(2024)
    p_dp, p_gap, any_discovery, discoveries, tests = [], [], 0, 0, 0
    n_labelings = 40
    for i in range(n_labelings):
        sex = _balanced_labels(rng, len(ids))
        res = audit_arrays(junior, senior, {"sex": sex}, spacing_mm=1.0, image_ids=ids,
                           significance=SignificanceOptions(permutations=199, bootstrap=0, baseline_repeats=0, seed=i))
        pk = res.per_keypoint
        p_dp.extend(pk["p_value"])
        p_gap.extend(pk["mre_gap_p"])
        any_discovery += bool(pk["significant"].any() or pk["mre_gap_significant"].any())
        discoveries += int(pk["significant"].sum() + pk["mre_gap_significant"].sum())
        tests += 2 * len(pk)
    p_dp, p_gap = np.asarray(p_dp), np.asarray(p_gap)
    # 199 permutations: p lives on a grid of 1/200, so allow for that step in the KS distance.
    assert stats.kstest(p_gap, "uniform").statistic < 0.06
    se = np.sqrt(0.05 * 0.95 / len(p_dp))
    for level in (0.01, 0.05, 0.1, 0.25, 0.5):
        assert np.mean(p_dp <= level) <= level + 3 * np.sqrt(level * (1 - level) / len(p_dp))
        assert abs(np.mean(p_gap <= level) - level) <= 3 * np.sqrt(level * (1 - level) / len(p_gap))
    assert np.mean(p_dp <= 0.5) > 0.35  # valid, not useless
    # Under the global null every discovery is false; BH then controls the family-wise rate at alpha.
    assert any_discovery / n_labelings <= 0.1 + 2.5 * np.sqrt(0.1 * 0.9 / n_labelings)
    assert discoveries / tests <= 0.05 + 3 * se


def test_planted_effect_found_and_others_not(isbi):
    ids, junior, senior = isbi
    rng = np.random.default_rng(7)
    sex = _balanced_labels(rng, len(ids))
    pred = junior.copy()
    # +1 mm radial error for group F on keypoint 10: move the prediction 1 mm further from the truth.
    k = 9
    delta = pred[:, k] - senior[:, k]
    norm = np.linalg.norm(delta, axis=1, keepdims=True)
    direction = np.where(norm > 0, delta / np.where(norm > 0, norm, 1), np.array([1.0, 0.0]))
    pred[sex == "F", k] += direction[sex == "F"] * 1.0
    res = audit_arrays(pred, senior, {"sex": sex}, spacing_mm=1.0, image_ids=ids,
                       significance=SignificanceOptions(permutations=2000, bootstrap=200, baseline_repeats=100, seed=0))
    pk = res.per_keypoint.set_index("keypoint")
    assert pk.loc[k + 1, "significant"]
    assert pk.loc[k + 1, "p_adjusted"] < 0.01
    assert pk.loc[k + 1, "mre_gap_significant"]
    others = pk.drop(index=k + 1)
    assert not others["significant"].any()
    assert not others["mre_gap_significant"].any()
    # Every correction finds it.
    for col in ("p_bh", "p_holm", "p_westfall_young"):
        assert pk.loc[k + 1, col] < 0.05
    # The observed DP sits above the randomized baseline there.
    assert pk.loc[k + 1, "dp"] > pk.loc[k + 1, "baseline_mean"] + 2 * pk.loc[k + 1, "baseline_std"]


def test_random_baseline_matches_label_noise_level(isbi):
    ids, junior, senior = isbi
    rng = np.random.default_rng(8)
    sex = _balanced_labels(rng, len(ids))
    res = audit_arrays(junior, senior, {"sex": sex}, spacing_mm=1.0, image_ids=ids,
                       significance=SignificanceOptions(permutations=0, bootstrap=0, baseline_repeats=400, seed=3))
    # With binary attributes flipped at p = 0.5 the labels become independent coin flips, so the
    # baseline DP equals a direct simulation with random labels.
    errors = np.linalg.norm(junior - senior, axis=2)
    hits = errors <= 2.0
    sim = []
    for _ in range(400):
        lab = rng.random(len(ids)) < 0.5
        sim.append(np.abs(hits[lab].mean(axis=0) - hits[~lab].mean(axis=0)))
    sim = np.asarray(sim)
    np.testing.assert_allclose(res.per_keypoint["baseline_mean"], sim.mean(axis=0), rtol=0.15)
    assert (res.per_keypoint["baseline_mean"].between(0.01, 0.15)).all()


def test_random_baseline_leaves_a_small_group_out_only_in_the_run_where_it_is_small(isbi):
    """Level C is large in run 0 and has 2 images in run 1 (min_group_size 5): like the observed DP,
    the baseline compares A, B and C in run 0 and only A and B in run 1."""
    ids, junior, senior = isbi
    rng = np.random.default_rng(4)
    runs = np.repeat([0, 1], 200)
    site = np.concatenate([rng.permutation(np.resize(["A", "B", "C"], 200)),
                           rng.permutation(np.r_[np.resize(["A", "B"], 198), ["C", "C"]])])
    repeats = 400
    res = audit_arrays(junior, senior, {"site": site}, spacing_mm=1.0, image_ids=ids, runs=runs,
                       min_group_size=5,
                       significance=SignificanceOptions(permutations=0, bootstrap=0, baseline_repeats=repeats,
                                                        seed=5))
    hits = np.linalg.norm(junior - senior, axis=2) <= 2.0
    levels = np.array(["A", "B", "C"])
    observed_ok = {r: [np.sum((runs == r) & (site == g)) >= 5 for g in levels] for r in (0, 1)}
    assert observed_ok == {0: [True, True, True], 1: [True, True, False]}
    sim = np.zeros((repeats, hits.shape[1]))
    for b in range(repeats):  # the documented procedure, one run and one image at a time
        per_run = []
        for r in (0, 1):
            rows = np.flatnonzero(runs == r)
            new = site[rows].copy()
            for i in range(len(rows)):
                if rng.random() < 0.5:
                    new[i] = rng.choice([g for g in levels if g != new[i]])
            sdr = [hits[rows[new == g]].mean(axis=0) for g, ok in zip(levels, observed_ok[r])
                   if ok and np.sum(new == g) >= 5]
            per_run.append(np.max(sdr, axis=0) - np.min(sdr, axis=0))
        sim[b] = np.mean(per_run, axis=0)
    ours = res.per_keypoint["baseline_mean"].to_numpy()
    # Keypoint by keypoint within Monte-Carlo error, and on average within 5% (leaving C out of run 0
    # too, as a group small in any run once was, gives a baseline about 20% lower).
    np.testing.assert_allclose(ours, sim.mean(axis=0), rtol=0.2)
    assert abs(ours.mean() / sim.mean() - 1) < 0.05


# -- bootstrap --------------------------------------------------------------------------------

def test_bootstrap_intervals_cover_at_nominal_rate():
    rng = np.random.default_rng(12)
    true_sdr = {"F": 0.7, "M": 0.5}
    scale_f = 2.0 / np.sqrt(-2 * np.log(1 - true_sdr["F"]))  # Rayleigh scale giving P(err <= 2) = 0.7
    scale_m = 2.0 / np.sqrt(-2 * np.log(1 - true_sdr["M"]))
    true_mre = {"F": scale_f * np.sqrt(np.pi / 2), "M": scale_m * np.sqrt(np.pi / 2)}
    n, reps = 120, 120
    covered_sdr = covered_mre = covered_dp = 0
    for rep in range(reps):
        sex = _balanced_labels(rng, n)
        err = rng.rayleigh(np.where(sex == "F", scale_f, scale_m))
        pred = np.zeros((n, 1, 2))
        pred[:, 0, 0] = err
        res = audit_arrays(pred, np.zeros_like(pred), {"sex": sex}, spacing_mm=1.0,
                           significance=SignificanceOptions(permutations=0, bootstrap=400, baseline_repeats=0,
                                                            seed=rep))
        g = res.per_group.set_index("group")
        covered_sdr += g.loc["F", "sdr_ci_low"] <= true_sdr["F"] <= g.loc["F", "sdr_ci_high"]
        covered_mre += g.loc["M", "mre_ci_low"] <= true_mre["M"] <= g.loc["M", "mre_ci_high"]
        pk = res.per_keypoint.iloc[0]
        covered_dp += pk["dp_ci_low"] <= 0.2 <= pk["dp_ci_high"]
    for covered in (covered_sdr, covered_mre, covered_dp):
        assert 0.87 <= covered / reps <= 0.995, covered / reps


def test_bootstrap_keeps_every_group():
    rng = np.random.default_rng(1)
    n = 40
    groups = np.array(["a"] * 37 + ["b"] * 3)
    pred = np.zeros((n, 1, 2))
    pred[:, 0, 0] = rng.uniform(0, 4, size=n)
    res = audit_arrays(pred, np.zeros_like(pred), {"g": groups}, spacing_mm=1.0, min_group_size=3,
                       significance=SignificanceOptions(permutations=50, bootstrap=300, baseline_repeats=0))
    g = res.per_group.set_index("group")
    assert np.isfinite(g.loc["b", ["sdr_ci_low", "sdr_ci_high", "mre_ci_low", "mre_ci_high"]].astype(float)).all()


# -- reproducibility --------------------------------------------------------------------------------

def _small_study(seed=0, runs=3):
    rng = np.random.default_rng(seed)
    n, k = 90, 5
    true = rng.uniform(0, 100, size=(n, k, 2))
    pred = true + rng.normal(0, 1.2, size=(n, k, 2))
    pred[3, 2] = np.nan  # a missing prediction
    groups = {"sex": rng.choice(["F", "M"], n), "age": rng.choice(["young", "old"], n)}
    return pred, true, groups, np.arange(n) % runs


def test_seed_gives_identical_numbers_whatever_the_batch_size():
    pred, true, groups, runs = _small_study()
    groups["site"] = np.resize(["A", "B", "C"], len(pred))  # a 3-level attribute draws new levels too
    common = dict(spacing_mm=1.0, runs=runs, min_group_size=3)
    a = audit_arrays(pred, true, groups, **common,
                     significance=SignificanceOptions(permutations=300, bootstrap=200, baseline_repeats=100, seed=9))
    b = audit_arrays(pred, true, groups, **common,
                     significance=SignificanceOptions(permutations=300, bootstrap=200, baseline_repeats=100, seed=9,
                                                      batch_size=7))
    c = audit_arrays(pred, true, groups, **common,
                     significance=SignificanceOptions(permutations=300, bootstrap=200, baseline_repeats=100, seed=10))
    again = audit_arrays(pred, true, groups, **common,
                         significance=SignificanceOptions(permutations=300, bootstrap=200, baseline_repeats=100,
                                                          seed=9))
    assert a.to_json() == again.to_json()  # same seed, same numbers, bit for bit
    # Another batch size draws the same resamples: p-values, SDRs and DPs are exact counts and stay
    # identical; error sums are float32 products whose rounding may follow the batch shape.
    pd.testing.assert_frame_equal(a.per_keypoint, b.per_keypoint)
    exact = [c for c in a.per_group.columns if not c.startswith("mre_ci")]
    pd.testing.assert_frame_equal(a.per_group[exact], b.per_group[exact])
    pd.testing.assert_frame_equal(a.per_group, b.per_group, check_exact=False, rtol=1e-6)
    assert not np.array_equal(a.per_keypoint["p_value"], c.per_keypoint["p_value"])


def test_permutation_null_of_intersection_and_base_attributes_share_permutations():
    pred, true, groups, runs = _small_study(seed=4)
    res = audit_arrays(pred, true, groups, spacing_mm=1.0, runs=runs, min_group_size=3,
                       significance=SignificanceOptions(permutations=200, bootstrap=50, baseline_repeats=20))
    pk = res.per_keypoint
    assert set(pk["attribute"]) == {"sex", "age", "sex&age"}
    # Westfall-Young over all 15 tests is never below the raw p-value.
    assert (pk["p_westfall_young"] >= pk["p_value"] - 1e-12).all()
    json_doc = res.to_dict()
    rec = json_doc["per_keypoint"][0]
    for field in ("p_value", "p_adjusted", "significant", "dp_ci", "baseline_mean", "baseline_std", "mre_gap_p",
                  "sdr_ci_by_group", "mre_ci_by_group"):
        assert field in rec
    assert json_doc["significance"]["permutations"] == 200
