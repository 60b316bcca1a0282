"""Runs that share images: image labels are permuted (and images resampled) once for all runs.

An image evaluated in several runs (identical runs, cross-validation repeats) must keep one label in
every run under permutation, else the null treats the runs' noise as independent and is too narrow
(docs/significance.md). Checked against a plain-loop permutation test with the same random draws, by
the exact reduction "k identical copies of a run = that run", and by simulation (type-I error, power).
"""

from __future__ import annotations

import numpy as np
import pytest

from fairlandmark import audit_arrays
from fairlandmark.exceptions import InputError
from fairlandmark.stats.significance import SignificanceOptions, image_strata, permutation_batches


# -- the strata ---------------------------------------------------------------------------------------------------

def test_disjoint_runs_are_one_stratum_each_in_row_order():
    s = image_strata([np.array(["a", "b", "c"]), np.array(["d", "e"])])
    assert s.sizes.tolist() == [3, 2] and s.starts.tolist() == [0, 3] and s.by_run
    assert [r.tolist() for r in s.rows_by_run] == [[0, 1, 2], [3, 4]]


def test_shared_images_follow_their_image_in_every_run():
    s = image_strata([np.array(["a", "b", "c"]), np.array(["c", "a", "b"]), np.array(["b", "c", "a"])])
    assert s.sizes.tolist() == [3] and not s.by_run
    assert [r.tolist() for r in s.rows_by_run] == [[0, 1, 2], [2, 0, 1], [1, 2, 0]]
    assert [r.tolist() for r in s.runs_by_stratum] == [[0, 1, 2]]


def test_cross_validation_repeats_give_one_stratum_per_set_of_runs():
    # Repeat 1: folds {a, b} and {c, d}; repeat 2: folds {a, c} and {b, d}. Every image has its own set of runs.
    s = image_strata([np.array(["a", "b"]), np.array(["c", "d"]), np.array(["a", "c"]), np.array(["b", "d"])])
    assert s.sizes.tolist() == [1, 1, 1, 1]
    # Images a and b share both runs here, so they form one stratum of two; c alone; d alone.
    s = image_strata([np.array(["a", "b", "c"]), np.array(["d"]), np.array(["a", "b", "d"]), np.array(["c"])])
    assert s.sizes.tolist() == [2, 1, 1]
    assert [r.tolist() for r in s.runs_by_stratum] == [[0, 2], [0, 3], [1, 2]]


def test_an_image_twice_in_one_run_is_refused():
    with pytest.raises(InputError, match="appears twice in one run"):
        image_strata([np.array(["a", "a"])])


def test_permutations_move_an_image_label_the_same_way_in_every_run():
    cells = [np.array([0, 0, 1, 1, 2], np.int8), np.array([2, 1, 0, 1, 0], np.int8)]  # run 2 lists e,d,a,c,b
    strata = image_strata([np.array(list("abcde")), np.array(list("edacb"))])
    for _, n, labels in permutation_batches(cells, 50, seed=3, batch_size=16, strata=strata):
        run0, run1 = labels
        # Row j of run 1 shows image rows_by_run[1][j]: it must carry that image's label of run 0.
        np.testing.assert_array_equal(run1, run0[:, strata.rows_by_run[1]])
        assert all(sorted(row.tolist()) == [0, 0, 1, 1, 2] for row in run0)


def test_disjoint_strata_reproduce_the_within_run_permutations():
    rng = np.random.default_rng(0)
    cells = [rng.integers(0, 4, 30).astype(np.int8), rng.integers(0, 4, 20).astype(np.int8)]
    strata = image_strata([np.arange(30).astype(str), np.arange(30, 50).astype(str)])
    a = list(permutation_batches(cells, 70, seed=5, batch_size=32, strata=strata))
    b = list(permutation_batches(cells, 70, seed=5, batch_size=32))  # no strata: every row its own image
    for (_, _, la), (_, _, lb) in zip(a, b):
        for x, y in zip(la, lb):
            np.testing.assert_array_equal(x, y)


# -- against an independent plain loop ------------------------------------------------------------------------------

def _shared_study(rng, n_images=40, n_runs=3, k=4, noise=0.3, effect=1.0, shuffle=True):
    """``n_runs`` runs of the same images (row order shuffled per run), errors differing a little per run."""
    base = rng.gamma(4.0, 0.5, size=(n_images, k))
    sex = np.resize(np.array(["F", "M"]), n_images)
    rng.shuffle(sex)
    base[sex == "F", 0] *= effect
    rows, errors = [], []
    for r in range(n_runs):
        order = rng.permutation(n_images) if (shuffle and r) else np.arange(n_images)
        rows.append(order)
        errors.append(np.abs(base[order] + rng.normal(0, noise, size=(n_images, k))))
    order = np.concatenate(rows)
    err = np.concatenate(errors)
    pred = np.zeros(err.shape + (2,))
    pred[..., 0] = err
    return dict(pred=pred, true=np.zeros_like(pred), groups={"sex": sex[order]},
                runs=np.repeat(np.arange(n_runs), n_images), image_ids=np.array([f"i{i:03d}" for i in order]),
                err=err, sex=sex, order=order)


def _loop_pvalues(study, seed, B, threshold=2.0):
    """Plain loops: one permutation of the image labels (random keys as the package draws them), every run's rows
    following their image; per run and keypoint the SDR of each sex, DP = max - min, mean over runs."""
    err, order, sex = study["err"], study["order"], study["sex"]
    n_images = len(sex)
    n_runs = len(err) // n_images
    # The single stratum lists images by first appearance: run 0's row order.
    images = order[:n_images]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]).spawn(1)[0])
    keys = rng.integers(0, 2**32, size=(B, n_images), dtype=np.uint32)

    def statistic(label_of_image):
        dp = np.zeros(err.shape[1])
        for k in range(err.shape[1]):
            total = 0.0
            for r in range(n_runs):
                hits = {"F": 0, "M": 0}
                count = {"F": 0, "M": 0}
                for j in range(n_images):
                    row = r * n_images + j
                    g = label_of_image[order[row]]
                    count[g] += 1
                    hits[g] += err[row, k] <= threshold
                sdr = [hits[g] / count[g] for g in ("F", "M")]
                total += max(sdr) - min(sdr)
            dp[k] = total / n_runs
        return dp

    observed = statistic(dict(zip(range(n_images), sex)))
    exceed = np.zeros(err.shape[1])
    for b in range(B):
        perm = np.argsort(keys[b])
        labels = sex[images][perm]  # stratum position i gets the label at position perm[i]
        dp = statistic(dict(zip(images, labels)))
        exceed += dp >= observed - 1e-9 * np.maximum(1.0, np.abs(observed))
    return (1 + exceed) / (1 + B), observed


def test_pvalues_equal_a_plain_loop_permutation_of_image_labels():
    study = _shared_study(np.random.default_rng(11), n_images=30, k=3, effect=1.5)
    res = audit_arrays(study["pred"], study["true"], study["groups"], runs=study["runs"],
                       image_ids=study["image_ids"], spacing_mm=1.0, min_group_size=5, curves=False,
                       significance=SignificanceOptions(permutations=60, bootstrap=0, baseline_repeats=0, seed=4,
                                                        batch_size=25))
    expected, observed = _loop_pvalues(study, seed=4, B=60)
    pk = res.per_keypoint
    sex = pk[pk["attribute"] == "sex"]
    np.testing.assert_allclose(sex["dp"].to_numpy(), observed, rtol=1e-12)
    np.testing.assert_array_equal(sex["p_value"].to_numpy(), expected)


def test_identical_copies_of_a_run_give_the_numbers_of_the_run_itself():
    """k identical runs: one stratum whose images and streams are those of the single run, so p-values,
    intervals, baseline and curve-gap p-values are those of one run (the old within-run scheme was not)."""
    rng = np.random.default_rng(2)
    one = _shared_study(rng, n_images=50, n_runs=1, k=3, noise=0.0, effect=1.3)
    n = len(one["sex"])
    copies = {key: np.concatenate([one[key]] * 3) for key in ("pred", "true", "image_ids")}
    options = SignificanceOptions(permutations=300, bootstrap=200, baseline_repeats=50, seed=8)
    common = dict(spacing_mm=1.0, min_group_size=5, significance=options)
    single = audit_arrays(one["pred"], one["true"], one["groups"], image_ids=one["image_ids"], **common)
    triple = audit_arrays(copies["pred"], copies["true"], {"sex": np.concatenate([one["groups"]["sex"]] * 3)},
                          image_ids=copies["image_ids"], runs=np.repeat(np.arange(3), n), **common)
    a, b = single.per_keypoint, triple.per_keypoint
    for column in ("p_value", "p_westfall_young", "mre_gap_p"):
        np.testing.assert_array_equal(a[column].to_numpy(), b[column].to_numpy())
    for column in ("dp_ci_low", "dp_ci_high", "baseline_mean"):
        np.testing.assert_allclose(a[column].to_numpy(), b[column].to_numpy(), rtol=1e-12, atol=1e-15)
    ca, cb = single.curves.tests["sex"], triple.curves.tests["sex"]
    np.testing.assert_array_equal(ca["p_value"], cb["p_value"])


def test_identical_copies_under_the_normal_null_match_one_run():
    rng = np.random.default_rng(5)
    one = _shared_study(rng, n_images=200, n_runs=1, k=3, noise=0.0, effect=1.15)
    n = len(one["sex"])
    options = dict(permutations=4000, bootstrap=0, baseline_repeats=0, seed=1, method="normal")
    common = dict(spacing_mm=1.0, min_group_size=5, curves=False, significance=SignificanceOptions(**options))
    single = audit_arrays(one["pred"], one["true"], one["groups"], image_ids=one["image_ids"], **common)
    triple = audit_arrays(np.concatenate([one["pred"]] * 3), np.concatenate([one["true"]] * 3),
                          {"sex": np.concatenate([one["groups"]["sex"]] * 3)},
                          image_ids=np.concatenate([one["image_ids"]] * 3), runs=np.repeat(np.arange(3), n), **common)
    # Different normal draws (one joint model of 3 runs), the same null: p-values within Monte-Carlo error.
    np.testing.assert_allclose(single.per_keypoint["p_value"], triple.per_keypoint["p_value"], atol=0.03)


# -- by simulation ---------------------------------------------------------------------------------------------------

def _simulate(effect, n_studies, seed, n_images=60):
    rng = np.random.default_rng(seed)
    raw, holm, wy = [], [], []
    for i in range(n_studies):
        study = _shared_study(rng, n_images=n_images, n_runs=3, k=5, noise=0.25, effect=effect)
        res = audit_arrays(study["pred"], study["true"], study["groups"], runs=study["runs"],
                           image_ids=study["image_ids"], spacing_mm=1.0, min_group_size=5, curves=False,
                           significance=SignificanceOptions(permutations=199, bootstrap=0, baseline_repeats=0,
                                                            seed=i, correction="holm"))
        pk = res.per_keypoint[res.per_keypoint["attribute"] == "sex"]
        raw.append(pk["p_value"].to_numpy())
        holm.append(pk["p_holm"].to_numpy())
        wy.append(pk["p_westfall_young"].to_numpy())
    return np.array(raw), np.array(holm), np.array(wy)


def test_type_one_error_with_three_runs_of_the_same_images():
    """Null data, 3 runs of the same 60 images: the share of p < 0.05 stays at 0.05 (the old within-run
    scheme gave 0.175 on such data), and so does the family-wise error of Holm and Westfall-Young."""
    alpha, n_studies = 0.05, 80
    raw, holm, wy = _simulate(effect=1.0, n_studies=n_studies, seed=20)
    n_tests = raw.size  # 400, mildly correlated within a study
    assert np.mean(raw < alpha) <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / n_tests)
    assert np.mean(raw < alpha) >= 0.005  # not degenerate either
    fwer_limit = alpha + 3 * np.sqrt(alpha * (1 - alpha) / n_studies)
    assert np.mean((holm < alpha).any(axis=1)) <= fwer_limit
    assert np.mean((wy < alpha).any(axis=1)) <= fwer_limit
    # Uniform under the null: the share below 0.5 is about 0.5.
    assert abs(np.mean(raw < 0.5) - 0.5) < 0.1


def test_power_on_a_planted_effect_with_three_runs_of_the_same_images():
    # Keypoint 1: errors of one sex x 2 (SDR about 0.14 against 0.57, 50 images per sex).
    raw, holm, _ = _simulate(effect=2.0, n_studies=20, seed=21, n_images=100)
    assert np.mean(holm[:, 0] < 0.05) >= 0.8
    assert np.mean(raw[:, 1:] < 0.05) <= 0.15  # the others stay null
