"""The fixed-model permutation test of the privacy analysis: exact against sklearn, calibrated, and the option."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from fairlandmark.exceptions import InputError
from fairlandmark.stats.privacy import attribute_inference, balanced_accuracy_by_image, fixed_model_null


def _fold_data(rng, n_images=30, rows_per_image=(1, 3), n_classes=3):
    rows = rng.integers(rows_per_image[0], rows_per_image[1] + 1, n_images)
    image_of_row = np.repeat(np.arange(n_images), rows)
    image_y = np.arange(n_images) % n_classes
    pred = rng.integers(0, n_classes, len(image_of_row))
    return image_of_row, image_y, pred


def test_balanced_accuracy_by_image_equals_sklearn_on_rows():
    rng = np.random.default_rng(0)
    image_of_row, image_y, pred = _fold_data(rng)
    n_classes = 3
    labels = np.stack([rng.permutation(image_y) for _ in range(25)])
    hits = np.zeros((len(image_y), n_classes))
    np.add.at(hits, (image_of_row, pred), 1.0)
    got = balanced_accuracy_by_image(labels, hits, np.bincount(image_of_row))
    want = [balanced_accuracy_score(lab[image_of_row], pred) for lab in labels]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-14)


def test_fixed_model_null_is_the_brute_force_loop_over_image_permutations():
    rng = np.random.default_rng(1)
    image_of_row, image_y, pred = _fold_data(rng, n_images=24)
    y = image_y[image_of_row]
    # Two folds over images, every row with its image.
    test_images = [np.arange(0, 24, 2), np.arange(1, 24, 2)]
    folds = [(np.flatnonzero(~np.isin(image_of_row, t)), np.flatnonzero(np.isin(image_of_row, t)))
             for t in test_images]
    preds = [pred[test] for _, test in folds]
    null, observed = fixed_model_null(folds, preds, y, image_of_row, 50, np.random.default_rng(7))
    # Brute force with the same stream: per fold, permute the test images' labels, expand to rows, score.
    stream = np.random.default_rng(7)
    brute = np.zeros(50)
    for (_, test), p in zip(folds, preds):
        images, first = np.unique(image_of_row[test], return_index=True)
        perms = stream.permuted(np.tile(y[test][first], (50, 1)), axis=1)
        where = np.searchsorted(images, image_of_row[test])
        brute += [balanced_accuracy_score(perm[where], p) for perm in perms]
    np.testing.assert_allclose(null, brute / 2, rtol=0, atol=1e-14)
    assert observed == pytest.approx(np.mean([balanced_accuracy_score(y[t], p) for (_, t), p in zip(folds, preds)]),
                                     abs=1e-14)


def test_null_p_values_are_uniform_when_predictions_ignore_the_labels():
    # Under the null the held-out predictions are independent of the held-out labels: p is uniform.
    rng = np.random.default_rng(2)
    ps = []
    for rep in range(300):
        image_of_row, image_y, _ = _fold_data(rng, n_images=20, n_classes=2)
        y = image_y[image_of_row]
        pred = rng.integers(0, 2, len(y))
        folds = [(np.array([], dtype=int), np.arange(len(y)))]
        null, observed = fixed_model_null(folds, [pred], y, image_of_row, 99, rng)
        ps.append((1 + np.sum(null >= observed - 1e-12)) / 100)
    ps = np.asarray(ps)
    assert np.mean(ps <= 0.05) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 300)
    assert np.mean(ps <= 0.5) == pytest.approx(0.5, abs=0.1)


def test_option_is_checked_and_named_in_the_settings():
    import pandas as pd

    rng = np.random.default_rng(3)
    ids = [f"i{j:02d}" for j in range(40)]
    preds = pd.DataFrame({"image_id": np.repeat(ids, 2), "keypoint": np.tile([1, 2], 40),
                          "error_mm": rng.gamma(2.0, 1.0, 80)})
    meta = pd.DataFrame({"image_id": ids, "g": np.where(np.arange(40) % 2, "a", "b")})
    with pytest.raises(InputError, match="permutation_test: must be one of chained, per-fold, refit, fixed-model"):
        attribute_inference(preds, meta, target="g", permutation_test="exact")
    from fairlandmark.stats.privacy import default_estimator

    res = attribute_inference(preds, meta, target="g", n_permutations=30, n_repeats=1,
                              estimator=default_estimator(n_estimators=5), permutation_test="fixed-model")
    doc = res.to_dict()
    assert doc["permutation_test"] == "fixed-model" and "fitted models fixed" in doc["permutation_test_description"]
    assert len(res.null_scores["all"]) == 30 and np.isfinite(res.null_scores["all"]).all()
    with pytest.raises(InputError, match="stop_after: must be None or an integer >= 1"):
        attribute_inference(preds, meta, target="g", stop_after=0)


def test_refit_stops_early_on_null_data_with_the_besag_clifford_p_value():
    import pandas as pd

    from fairlandmark.stats.privacy import default_estimator

    rng = np.random.default_rng(4)
    ids = [f"i{j:02d}" for j in range(40)]
    preds = pd.DataFrame({"image_id": np.repeat(ids, 2), "keypoint": np.tile([1, 2], 40),
                          "error_mm": rng.gamma(2.0, 1.0, 80)})
    meta = pd.DataFrame({"image_id": ids, "g": np.where(np.arange(40) % 2, "a", "b")})
    kwargs = dict(target="g", n_permutations=60, n_repeats=1, estimator=default_estimator(n_estimators=5), seed=1,
                  permutation_test="refit")
    full = attribute_inference(preds, meta, stop_after=None, **kwargs)
    seq = attribute_inference(preds, meta, stop_after=3, **kwargs)
    null_full, null_seq = full.null_scores["all"], seq.null_scores["all"]
    observed = full.scores["balanced_accuracy"].iloc[0]
    assert len(null_full) == 60
    # The same draws in the same order; the sequential test stops at the 3rd score >= observed.
    np.testing.assert_array_equal(null_seq, null_full[:len(null_seq)])
    third = np.flatnonzero(null_full >= observed - 1e-12)[2] + 1
    assert len(null_seq) == third < 60
    assert seq.scores["p_value"].iloc[0] == pytest.approx(3 / third)
    assert full.scores["p_value"].iloc[0] == pytest.approx((1 + np.sum(null_full >= observed - 1e-12)) / 61)
