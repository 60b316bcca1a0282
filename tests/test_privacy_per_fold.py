"""The chained (default) and per-fold privacy tests: exact per fold or link, combined validly, leaks found.

* the chained p-value equals an independent computation (scikit-learn fits on the earlier folds, a plain
  permutation loop, scipy's Fisher combination); a planted leak is found by the default test;

* each fold's p-value equals a plain loop over the same permutations, and the exact enumeration of all label
  arrangements of a tiny fold;
* the merging rules against hand cases, and valid under dependence (identical uniform p-values);
* fold p-values are uniform when predictions ignore the labels;
* a planted leak is found by the default test with the right keypoints; null data are not called leaks;
* the batched permutation importance is scikit-learn's, bit for bit.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from sklearn.inspection import permutation_importance
from sklearn.metrics import balanced_accuracy_score

from fairlandmark.exceptions import InputError
from fairlandmark.stats.privacy import (
    MERGE_RULES,
    attribute_inference,
    chain_folds,
    default_estimator,
    fisher_sequential_pvalue,
    fold_permutation_pvalues,
    merge_pvalues,
    permutation_importance_batched,
)

FAST = {"estimator": default_estimator(n_estimators=15), "n_repeats": 2}


def _synthetic(n_images=80, k=6, runs=2, effect=0.0, effect_kps=(2, 5), seed=0):
    rng = np.random.default_rng(seed)
    ids = np.array([f"img{i:03d}" for i in range(n_images)])
    target = np.where(np.arange(n_images) % 2 == 0, "old", "young")
    frames = []
    for r in range(runs):
        err = rng.gamma(2.0, 1.0, size=(n_images, k))
        for kp in effect_kps:
            err[target == "old", kp - 1] += effect
        frames.append(pd.DataFrame({"run": str(r), "image_id": np.repeat(ids, k),
                                    "keypoint": np.tile(np.arange(1, k + 1), n_images), "error_mm": err.ravel()}))
    return pd.concat(frames, ignore_index=True), pd.DataFrame({"image_id": ids, "age_group": target})


def test_fold_p_values_are_the_plain_loop_over_the_same_permutations():
    rng = np.random.default_rng(1)
    n_images = 18
    rows = rng.integers(1, 4, n_images)
    image_of_row = np.repeat(np.arange(n_images), rows)
    y = (np.arange(n_images) % 2)[image_of_row]
    pred = rng.integers(0, 2, len(y))
    test_images = [np.arange(0, n_images, 3), np.arange(1, n_images, 3), np.arange(2, n_images, 3)]
    folds = [(np.flatnonzero(~np.isin(image_of_row, t)), np.flatnonzero(np.isin(image_of_row, t)))
             for t in test_images]
    preds = [pred[test] for _, test in folds]
    p, observed, null = fold_permutation_pvalues(folds, preds, y, image_of_row, 40, np.random.default_rng(3))
    stream = np.random.default_rng(3)
    for k, ((_, test), pk) in enumerate(zip(folds, preds)):
        images, first = np.unique(image_of_row[test], return_index=True)
        where = np.searchsorted(images, image_of_row[test])
        perms = stream.permuted(np.tile(y[test][first], (40, 1)), axis=1)
        scores = []
        for perm in perms:  # plain loop: expand the image labels to rows and score with scikit-learn
            scores.append(balanced_accuracy_score(perm[where], pk))
        obs = balanced_accuracy_score(y[test], pk)
        assert observed[k] == pytest.approx(obs, abs=1e-14)
        np.testing.assert_allclose(null[:, k], scores, rtol=0, atol=1e-14)
        hits = sum(s >= obs - 1e-12 for s in scores)
        assert p[k] == pytest.approx((1 + hits) / 41)


def test_fold_p_value_matches_the_exact_enumeration_of_a_tiny_fold():
    # 7 images (2 rows each), labels 3 x class 0 and 4 x class 1: 35 distinct arrangements, enumerated.
    image_of_row = np.repeat(np.arange(7), 2)
    image_y = np.array([0, 1, 0, 1, 1, 0, 1])
    y = image_y[image_of_row]
    pred = np.array([0, 0, 1, 1, 0, 1, 1, 1, 1, 0, 0, 0, 1, 1])
    folds = [(np.array([], dtype=int), np.arange(14))]
    observed = balanced_accuracy_score(y, pred)
    arrangements = [np.array(a) for a in set(itertools.permutations(image_y))]
    assert len(arrangements) == 35
    exact = np.mean([balanced_accuracy_score(a[image_of_row], pred) >= observed - 1e-12 for a in arrangements])
    p, obs, _ = fold_permutation_pvalues(folds, [pred], y, image_of_row, 20000, np.random.default_rng(0))
    assert obs[0] == pytest.approx(observed)
    assert p[0] == pytest.approx(exact, abs=4 * np.sqrt(exact * (1 - exact) / 20000) + 1e-4)


def test_merge_rules_hand_cases_and_errors():
    p = np.array([0.01, 0.04, 0.02, 0.5, 0.03])
    assert merge_pvalues(p) == pytest.approx(2 * 0.12)
    assert merge_pvalues(p, "bonferroni") == pytest.approx(0.05)
    assert merge_pvalues(p, "max") == 0.5
    assert merge_pvalues(p, "geometric") == pytest.approx(np.e * np.prod(p) ** (1 / 5))
    assert merge_pvalues(p, "harmonic") == pytest.approx(np.e * np.log(5) * 5 / np.sum(1 / p))
    assert merge_pvalues([0.3, 0.9]) == 1.0  # capped
    with pytest.raises(InputError, match="merge rule: must be one of"):
        merge_pvalues(p, "fisher")


@pytest.mark.parametrize("rule", MERGE_RULES)
def test_merge_rules_stay_valid_for_perfectly_dependent_and_independent_p_values(rule):
    rng = np.random.default_rng(5)
    u = rng.random((20000, 5))
    for p in (u, np.repeat(u[:, :1], 5, axis=1)):  # independent, and all folds equal (total dependence)
        merged = np.array([merge_pvalues(row, rule) for row in p])
        assert np.mean(merged <= 0.05) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / len(p))


def test_fold_p_values_are_uniform_when_predictions_ignore_the_labels():
    rng = np.random.default_rng(2)
    ps, merged = [], []
    for _ in range(300):
        image_of_row = np.repeat(np.arange(30), rng.integers(1, 4, 30))
        y = (np.arange(30) % 2)[image_of_row]
        folds = [(np.array([], dtype=int), np.flatnonzero(image_of_row % 3 == k)) for k in range(3)]
        preds = [rng.integers(0, 2, len(test)) for _, test in folds]
        p, _, _ = fold_permutation_pvalues(folds, preds, y, image_of_row, 99, rng)
        ps.extend(p)
        merged.append(merge_pvalues(p))
    ps = np.asarray(ps)
    for level in (0.05, 0.1, 0.5):  # super-uniform (discrete: ties make it a little conservative)
        assert np.mean(ps <= level) <= level + 3 * np.sqrt(level * (1 - level) / len(ps))
    assert np.mean(ps <= 0.5) >= 0.38
    assert np.mean(np.asarray(merged) <= 0.05) <= 0.05


def test_planted_leak_is_found_by_the_per_fold_test_and_named_in_the_json():
    preds, meta = _synthetic(effect=2.0, seed=1)
    res = attribute_inference(preds, meta, target="age_group", seed=1, permutation_test="per-fold", **FAST)
    row = res.scores.iloc[0]
    assert res.settings["permutation_test"] == "per-fold"
    assert row["balanced_accuracy"] > 0.85
    # every fold: no permuted labelling reached its score, so each fold's p is 1/201, merged (Bonferroni) 5/201
    assert list(res.folds["p_value"]) == pytest.approx([1 / 201] * 5)
    assert row["p_value"] == pytest.approx(5 / 201) and row["leak"]
    assert row["min_p_value"] == pytest.approx(5 / 201)
    assert set(res.importance["keypoint"].head(2)) == {2, 5}
    doc = res.to_dict()
    assert doc["permutation_test"] == "per-fold" and doc["merge_rule"] == "bonferroni"
    assert "the number of folds times their minimum" in doc["permutation_test_description"]
    assert doc["analyses"][0]["folds"][0]["p_value"] == pytest.approx(1 / 201)
    assert "p = 0.025)" in res.risk_line


def test_null_data_are_not_called_leaks_and_few_permutations_are_flagged():
    calls = []
    for s in range(6):
        preds, meta = _synthetic(n_images=60, effect=0.0, seed=10 + s)
        res = attribute_inference(preds, meta, target="age_group", seed=s, permutation_test="per-fold", **FAST)
        calls.append(res.scores["p_value"].iloc[0])
        assert len(res.null_scores["all"]) == 200
    assert all(0 < p <= 1 for p in calls)
    assert sum(p <= 0.05 for p in calls) <= 1
    res = attribute_inference(*_synthetic(n_images=40, effect=2.0), target="age_group", n_permutations=19,
                              permutation_test="per-fold", **FAST)
    assert res.scores["min_p_value"].iloc[0] == pytest.approx(0.25)
    assert "19 permutations cannot reach p <= 0.05" in res.risk_line
    assert "no conclusion" in res.risk_line and "errors predict" not in res.risk_line


def test_batched_importance_is_sklearns_bit_for_bit():
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline

    rng = np.random.default_rng(0)
    X = rng.gamma(2.0, 1.0, (260, 7))
    X[rng.random(X.shape) < 0.05] = np.nan
    y = rng.integers(0, 3, 260)
    y[np.nan_to_num(X[:, 2]) > 3] = 2
    model = make_pipeline(SimpleImputer(add_indicator=True), RandomForestClassifier(20, random_state=0))
    model.fit(X[:160], y[:160])
    for seed, max_cells in ((0, 1 << 22), (7, 900)):  # one block, and one column per block
        want = permutation_importance(model, X[160:], y[160:], scoring="balanced_accuracy", n_repeats=4,
                                      random_state=seed).importances_mean
        got = permutation_importance_batched(model, X[160:], y[160:], n_repeats=4, seed=seed, max_cells=max_cells)
        np.testing.assert_array_equal(got, want)


# -- the chained test (default) ------------------------------------------------------------------------------------


def test_chained_p_value_is_the_independent_computation():
    from scipy.stats import combine_pvalues
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline

    from fairlandmark.stats.privacy import row_folds

    preds, meta = _synthetic(n_images=60, effect=0.6, seed=3)
    res = attribute_inference(preds, meta, target="age_group", seed=2, n_permutations=30, **FAST)
    assert res.settings["permutation_test"] == "chained"
    # independently: the study's feature rows, the same folds, forests fitted on the earlier folds' rows, a plain
    # permutation loop per link
    X = np.asarray(res.study.errors, dtype=float)
    images, image_of_row = np.unique(np.asarray(res.study.row_image).astype(str), return_inverse=True)
    y = np.asarray(res.study.coding.base_codes["age_group"])
    folds = row_folds(images[image_of_row], y, n_splits=5, seed=2)
    stream = np.random.default_rng([2, 0])
    link_p = []
    for k in range(1, 5):
        train = np.concatenate([folds[j][1] for j in range(k)])
        test = folds[k][1]
        model = Pipeline([("impute", SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)),
                          ("classifier", RandomForestClassifier(n_estimators=15, random_state=0, n_jobs=1))])
        proba = model.fit(X[train], y[train]).predict_proba(X[test])

        def statistic(labels, proba=proba):  # balanced mean probability of the true class, by plain loops
            means = []
            for c in sorted(set(labels)):
                means.append(np.mean([proba[i, c] for i in range(len(labels)) if labels[i] == c]))
            return np.mean(means)

        observed = statistic(y[test])
        test_images, first = np.unique(image_of_row[test], return_index=True)
        where = np.searchsorted(test_images, image_of_row[test])
        perms = stream.permuted(np.tile(y[test][first], (30, 1)), axis=1)
        hits = sum(statistic(perm[where]) >= observed - 1e-12 for perm in perms)
        link_p.append((1 + hits) / 31)
    assert res.folds["p_value"].iloc[0] is None or np.isnan(res.folds["p_value"].iloc[0])
    np.testing.assert_allclose(res.folds["p_value"].iloc[1:].to_numpy(float), link_p, rtol=0, atol=1e-14)
    want = combine_pvalues(link_p, method="fisher").pvalue
    assert res.scores["p_value"].iloc[0] == pytest.approx(want, rel=1e-10)
    assert res.to_dict()["analyses"][0]["folds"][0]["p_value"] is None


def test_chain_links_use_only_earlier_folds():
    folds = [(np.array([2, 3, 4]), np.array([0, 1])), (np.array([0, 1, 4]), np.array([2, 3])),
             (np.array([0, 1, 2, 3]), np.array([4]))]
    links = chain_folds(folds)
    assert [t.tolist() for _, t in links] == [[2, 3], [4]]
    assert [tr.tolist() for tr, _ in links] == [[0, 1], [0, 1, 2, 3]]
    assert fisher_sequential_pvalue([0.5]) == pytest.approx(0.5)
    assert fisher_sequential_pvalue([1.0, 1.0, 1.0]) == 1.0


def test_fisher_is_valid_for_sequentially_valid_discrete_p_values():
    # Link k's p-value is super-uniform given the earlier ones (here: conservative discrete p-values whose
    # resolution depends on the earlier ones): Fisher's combination stays at or below its level.
    rng = np.random.default_rng(8)
    n = 20000
    p = np.empty((n, 4))
    grid = 10
    for k in range(4):
        u = rng.random(n)
        p[:, k] = np.ceil(u * grid) / grid  # P(p <= t) <= t
        grid = np.where(p[:, k] < 0.5, 5, 20)
    merged = np.array([fisher_sequential_pvalue(row) for row in p])
    for level in (0.05, 0.1):
        assert np.mean(merged <= level) <= level + 3 * np.sqrt(level * (1 - level) / n)


def test_planted_leak_is_found_by_the_default_chained_test_and_null_data_are_not():
    preds, meta = _synthetic(effect=2.0, seed=1)
    res = attribute_inference(preds, meta, target="age_group", seed=1, **FAST)
    row = res.scores.iloc[0]
    assert row["p_value"] < 0.001 and row["leak"]
    assert set(res.importance["keypoint"].head(2)) == {2, 5}
    doc = res.to_dict()
    assert doc["permutation_test"] == "chained" and "Fisher" in doc["permutation_test_description"]
    assert "probability of the true class" in doc["permutation_test_description"]
    assert doc["merge_rule"] is None
    calls = []
    for s in range(6):
        res = attribute_inference(*_synthetic(n_images=60, effect=0.0, seed=20 + s), target="age_group", seed=s,
                                  **FAST)
        calls.append(res.scores["p_value"].iloc[0])
    assert all(0 < p <= 1 for p in calls) and sum(p <= 0.05 for p in calls) <= 1
