"""Large-sample null: exact permutation moments, agreement with the permutation test, type-I error."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fairlandmark import InputError, audit_arrays
from fairlandmark.stats.asymptotic import normal_sums_model
from fairlandmark.stats.significance import SignificanceOptions, resolve_method


def test_model_has_the_exact_permutation_mean_and_covariance():
    rng = np.random.default_rng(0)
    n, m = 30, 3
    values = np.column_stack([rng.random(n) < 0.4, rng.gamma(2.0, 1.0, n), rng.random(n) < 0.7]).astype(float)
    cells = np.repeat([0, 1, 2], [5, 10, 15])
    model = normal_sums_model(values, cells, 3)
    # Exact moments by enumeration is too large; 40000 random permutations estimate them to ~1 %.
    perms = np.argsort(rng.random((40000, n)), axis=1)
    onehot = (cells[perms][:, None, :] == np.arange(3)[None, :, None]).astype(float)  # (B, L, n)
    sums = onehot @ values  # (B, L, M)
    np.testing.assert_allclose(model.mean, sums.mean(axis=0), rtol=0.02, atol=0.02)
    model_cov = np.kron(model.cell_factor @ model.cell_factor.T, model.column_factor @ model.column_factor.T)
    sample_cov = np.cov(sums.reshape(len(sums), -1), rowvar=False)
    np.testing.assert_allclose(model_cov, sample_cov, atol=0.04 * np.abs(sample_cov).max())
    # And against the closed form for one cell and column: n_c (N - n_c) / N * var.
    var0 = values[:, 0].var(ddof=1)
    assert model_cov[0, 0] == pytest.approx(5 * 25 / 30 * var0, rel=1e-12)
    draws = model.draw(np.random.default_rng(1), 20000)
    np.testing.assert_allclose(draws.sum(axis=1), np.broadcast_to(values.sum(axis=0), (20000, m)), atol=1e-9)


def _study(rng, n_images, n_kp, effect, runs=1):
    n = n_images * runs
    sex = rng.choice(["F", "M"], n)
    age = rng.choice(["young", "old"], n, p=[0.3, 0.7])
    true = np.zeros((n, n_kp, 2))
    scale = np.ones((n, n_kp))
    scale[:, : n_kp // 2] += effect * (sex == "M")[:, None]  # planted bias on the first half of the keypoints
    pred = true + rng.normal(0.0, 1.4, size=(n, n_kp, 2)) * scale[..., None]
    return pred, true, {"sex": sex, "age": age}, np.repeat(np.arange(runs), n_images)


def _pvalues(pred, true, groups, runs, method, b=2000, seed=0):
    options = SignificanceOptions(permutations=b, bootstrap=0, baseline_repeats=0, seed=seed, method=method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = audit_arrays(pred, true, groups, spacing_mm=1.0, runs=runs, min_group_size=5, significance=options)
    return res


def test_normal_null_agrees_with_the_permutation_test():
    rng = np.random.default_rng(7)
    pred, true, groups, runs = _study(rng, 1500, 6, effect=0.08, runs=2)
    perm = _pvalues(pred, true, groups, runs, "permutation")
    norm = _pvalues(pred, true, groups, runs, "normal")
    assert perm.significance.method == "permutation" and norm.significance.method == "normal"
    assert norm.to_dict()["significance"]["method"] == "normal"
    # What people read names the method too: the console's, the Markdown's and the HTML report's notes.
    from fairlandmark.render.markdown import significance_note
    assert "large-sample normal null (2000 draws)" in significance_note(norm.to_dict())
    perm_note = significance_note(perm.to_dict())
    assert "2000 permutations" in perm_note and "normal" not in perm_note
    from rich.console import Console

    from fairlandmark.render.console import render_audit
    for result, phrase in ((norm, "large-sample normal null (2000 draws)"), (perm, "2000 permutations")):
        console = Console(record=True, width=400)
        render_audit(result, console)
        assert phrase in " ".join(console.export_text().split())
    a, b = perm.per_keypoint, norm.per_keypoint
    for col in ("p_value", "mre_gap_p"):
        np.testing.assert_allclose(a[col], b[col], atol=0.035)  # Monte-Carlo error of 2000 draws, ~0.011 at p=0.5
    # Westfall-Young magnifies the Monte-Carlo error of a small raw p (0.004 against 0.008 is 8 against 16
    # draws, and the adjusted p doubles with it), hence the wider band.
    np.testing.assert_allclose(a["p_westfall_young"], b["p_westfall_young"], atol=0.08)
    assert (a["p_value"] < 0.05).sum() >= 3 and (b["p_value"] < 0.05).sum() >= 3  # the planted bias is found
    np.testing.assert_array_equal(a["dp"], b["dp"])  # the observed numbers do not depend on the null
    # The error-curve test follows the DP test's null: the normal null of the hit counts at every threshold.
    assert perm.curves.settings["method"] == "permutation" and norm.curves.settings["method"] == "normal"
    for attribute in perm.curves.attributes:
        x, y = perm.curves.tests[attribute], norm.curves.tests[attribute]
        np.testing.assert_allclose(x["p_value"], y["p_value"], atol=0.04)
        np.testing.assert_allclose(x["p_westfall_young"], y["p_westfall_young"], atol=0.08)
        np.testing.assert_array_equal(perm.curves.gap[attribute], norm.curves.gap[attribute])
    assert (norm.curves.tests["sex"]["p_value"] < 0.05).sum() >= 2  # the planted bias, on the whole curve


def test_normal_null_type_one_error_at_most_alpha():
    rng = np.random.default_rng(11)
    rejections, curve_rejections = [], []
    for rep in range(60):
        pred, true, groups, runs = _study(rng, 400, 4, effect=0.0)
        res = _pvalues(pred, true, groups, runs, "normal", b=400, seed=rep)
        rejections.append(res.per_keypoint["p_value"].to_numpy() <= 0.05)
        curve_rejections.append(np.concatenate([t["p_value"] for t in res.curves.tests.values()]) <= 0.05)
    # 720 tests (60 studies x 3 attributes x 4 keypoints); alpha + 3 standard errors.
    assert np.mean(rejections) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 720)
    assert np.mean(curve_rejections) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 720)  # the curve test's normal null too


def test_auto_switches_by_size_and_the_option_is_checked():
    assert resolve_method("auto", 3000, 100) == "permutation"
    assert resolve_method("auto", 2_000_000, 50_000) == "normal"
    assert resolve_method("permutation", 2_000_000, 50_000) == "permutation"
    with pytest.raises(InputError, match="method: must be one of auto, permutation, normal"):
        SignificanceOptions(method="exact")


def test_normal_null_is_reproducible_and_independent_of_batch_size():
    rng = np.random.default_rng(3)
    pred, true, groups, runs = _study(rng, 300, 3, effect=0.1, runs=2)
    a = _pvalues(pred, true, groups, runs, "normal", b=300)
    opts = SignificanceOptions(permutations=300, bootstrap=0, baseline_repeats=0, method="normal", batch_size=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = audit_arrays(pred, true, groups, spacing_mm=1.0, runs=runs, min_group_size=5, significance=opts)
    np.testing.assert_array_equal(a.per_keypoint["p_value"], b.per_keypoint["p_value"])
    np.testing.assert_array_equal(a.per_keypoint["p_westfall_young"], b.per_keypoint["p_westfall_young"])


def test_auto_takes_the_large_sample_null_for_the_curve_test_too(monkeypatch):
    from fairlandmark.stats import significance

    monkeypatch.setattr(significance, "LARGE_SAMPLE_ROWS", 100)
    monkeypatch.setattr(significance, "LARGE_SAMPLE_MIN_GROUP", 20)
    rng = np.random.default_rng(5)
    pred, true, groups, runs = _study(rng, 300, 3, effect=0.0)
    res = _pvalues(pred, true, groups, runs, "auto", b=200)
    assert res.significance.method == "normal" and res.curves.settings["method"] == "normal"
    # Reproducible, and the same with one worker thread or several.
    options = SignificanceOptions(permutations=200, bootstrap=0, baseline_repeats=0, seed=0, n_jobs=1, batch_size=9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = audit_arrays(pred, true, groups, spacing_mm=1.0, runs=runs, min_group_size=5, significance=options)
    for attribute in res.curves.attributes:
        np.testing.assert_array_equal(res.curves.tests[attribute]["p_value"], again.curves.tests[attribute]["p_value"])
