"""Error curves and the curve-gap test: numbers against loops, same permutations, calibration, power."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fairlandmark.audit import audit, prepare_study, run_audit
from fairlandmark.exceptions import InputError
from fairlandmark.stats.curves import curve_grid, error_curves, observed_hit_counts
from fairlandmark.stats.kernel import RunKernel
from fairlandmark.stats.significance import benjamini_hochberg, holm


def _study(errors, groups, runs=None):
    """A study from an (N, K) error matrix (NaN = missing) and one group label per row."""
    n, k = errors.shape
    runs = np.zeros(n, int) if runs is None else np.asarray(runs)
    ids = np.array([f"i{i}" for i in range(n)])
    frame = pd.DataFrame({"run": np.repeat(runs.astype(str), k), "image_id": np.repeat(ids, k),
                          "keypoint": np.tile(np.arange(1, k + 1), n), "error_mm": errors.ravel()})
    meta = pd.DataFrame({"image_id": ids, "g": groups})
    return prepare_study(frame, meta, attributes=["g"])


def test_curves_and_gap_match_loops():
    rng = np.random.default_rng(0)
    n, k = 90, 3
    errors = rng.gamma(2.0, 1.0, (n, k))
    errors[5, 1] = np.nan  # a missing prediction: a miss at every threshold
    groups = rng.choice(["a", "b", "c"], n)
    runs = np.arange(n) % 2
    phi = [0.5, 1.0, 2.0, 3.5]
    res = error_curves(_study(errors, groups, runs), phi=phi, min_group_size=1)
    gaps_by_phi = np.zeros((len(phi), k))
    for t, f in enumerate(phi):
        for kp in range(k):
            per_run = []
            for r in (0, 1):
                sdr = []
                for g in ("a", "b", "c"):
                    rows = [i for i in range(n) if runs[i] == r and groups[i] == g]
                    sdr.append(sum(1 for i in rows if errors[i, kp] <= f) / len(rows))
                per_run.append(max(sdr) - min(sdr))
                # The run-mean SDR of each group, as reported.
            gaps_by_phi[t, kp] = np.mean(per_run)
            for j, g in enumerate(("a", "b", "c")):
                by_run = []
                for r in (0, 1):
                    rows = [i for i in range(n) if runs[i] == r and groups[i] == g]
                    by_run.append(sum(1 for i in rows if errors[i, kp] <= f) / len(rows))
                assert abs(res.sdr["g"][j, kp, t] - np.mean(by_run)) < 1e-12
    np.testing.assert_allclose(res.gap["g"], gaps_by_phi.max(axis=0), atol=1e-12)
    np.testing.assert_array_equal(res.gap_phi["g"], np.asarray(phi)[gaps_by_phi.argmax(axis=0)])


def test_one_threshold_grid_is_the_dp_test_with_the_same_permutations():
    rng = np.random.default_rng(1)
    n, k = 120, 4
    errors = rng.gamma(2.0, 1.0, (n, k))
    errors[:, 2] *= np.where(np.arange(n) % 2 == 0, 1.0, 1.5)
    frame = pd.DataFrame({"image_id": np.repeat([f"i{i}" for i in range(n)], k),
                          "keypoint": np.tile(np.arange(1, k + 1), n), "error_mm": errors.ravel()})
    meta = pd.DataFrame({"image_id": [f"i{i}" for i in range(n)], "sex": ["F", "M"] * (n // 2),
                         "site": rng.choice(["x", "y", "z"], n)})
    options = dict(permutations=300, bootstrap=0, baseline_repeats=0, seed=4, batch_size=70)
    res = audit(frame, meta, attributes=["sex", "site"], thresholds_mm=[2.0], significance=options,
                curves={"phi": [2.0]})
    pk = res.per_keypoint
    for a in res.attributes:
        sub = pk[pk["attribute"] == a]
        np.testing.assert_array_equal(res.curves.tests[a]["p_value"], sub["p_value"].to_numpy())
        np.testing.assert_allclose(res.curves.gap[a], sub["dp"].to_numpy(), atol=1e-12)


def test_corrections_and_record_fields():
    rng = np.random.default_rng(2)
    errors = rng.gamma(2.0, 1.0, (80, 5))
    res = error_curves(_study(errors, ["a", "b"] * 40), phi=curve_grid(2.0, points=6),
                       significance=dict(permutations=199, correction="holm", seed=1))
    t = res.tests["g"]
    np.testing.assert_allclose(t["p_holm"], holm(t["p_value"]))
    np.testing.assert_allclose(t["p_bh"], benjamini_hochberg(t["p_value"]))
    np.testing.assert_array_equal(t["p_adjusted"], t["p_holm"])
    assert np.all(t["p_westfall_young"] >= t["p_value"] - 1e-12)
    rec = res.block()["records"][0]
    assert set(rec) >= {"attribute", "keypoint", "sdr_by_group", "gap", "gap_phi", "p_value", "p_adjusted",
                        "significant"}
    assert len(rec["sdr_by_group"]["a"]) == 6


def test_seed_gives_identical_numbers_whatever_the_batch_size():
    rng = np.random.default_rng(3)
    study = _study(rng.gamma(2.0, 1.0, (60, 3)), ["a", "b", "c"] * 20)
    a = error_curves(study, significance=dict(permutations=150, seed=9, batch_size=150))
    b = error_curves(study, significance=dict(permutations=150, seed=9, batch_size=40))
    np.testing.assert_array_equal(a.tests["g"]["p_value"], b.tests["g"]["p_value"])


def _null_pvalues(reps, n, k, rng, *, effect=1.0):
    ps = []
    for rep in range(reps):
        groups = np.array(["a", "b"] * (n // 2))
        errors = rng.gamma(2.0, 1.0, (n, k)) * np.where(groups == "b", effect, 1.0)[:, None]
        res = error_curves(_study(errors, groups), primary=2.0,
                           significance=dict(permutations=99, seed=rep, batch_size=99))
        ps.append(res.tests["g"]["p_value"])
    return np.concatenate(ps)


def test_curve_gap_test_is_calibrated_on_null_data():
    """Type-I error <= alpha by simulation: 300 null data sets x 2 keypoints, 99 permutations each."""
    rng = np.random.default_rng(2026)
    p = _null_pvalues(300, 60, 2, rng)
    for alpha in (0.05, 0.10):
        rate = np.mean(p <= alpha)
        se = np.sqrt(alpha * (1 - alpha) / len(p))
        assert rate <= alpha + 2.5 * se, f"type-I error {rate:.3f} at alpha {alpha}"
    # Ties of a discrete statistic make the test conservative, but not useless.
    assert np.mean(p <= 0.5) > 0.3


def test_curve_gap_test_has_power_on_a_planted_effect():
    rng = np.random.default_rng(7)
    p = _null_pvalues(20, 120, 1, rng, effect=1.8)
    assert np.mean(p <= 0.05) >= 0.8


def test_bad_grid_is_refused():
    with pytest.raises(InputError, match="curve range"):
        curve_grid(2.0, low=3.0, high=1.0)
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="curve range"):
        error_curves(_study(rng.gamma(2.0, 1.0, (20, 2)), ["a", "b"] * 10), phi=[2.0, 1.0])


def test_curves_in_json_and_figures(tmp_path):
    pytest.importorskip("matplotlib")
    from fairlandmark.render.curves import error_curves_figure, flagged_curve_keypoints
    from fairlandmark.render.figures import sdr_curves

    rng = np.random.default_rng(5)
    n, k = 80, 6
    errors = rng.gamma(2.0, 1.0, (n, k))
    errors[1::2, 4] *= 2.5  # keypoint 5: group b much worse
    study = _study(errors, ["a", "b"] * (n // 2))
    res = run_audit(study, thresholds_mm=[2.0], min_group_size=5,
                    significance=dict(permutations=199, bootstrap=0, baseline_repeats=0))
    doc = res.to_dict()
    assert doc["curves"]["phi"] == curve_grid(2.0).tolist()
    assert flagged_curve_keypoints(doc, "g", top=1) == [5]
    rec = next(r for r in doc["curves"]["records"] if r["keypoint"] == 5)
    assert rec["significant"] is True and rec["p_adjusted"] < 0.05
    fig = sdr_curves(doc, attribute="g")  # one threshold: the whole curves, not a row of dots
    assert "Error curves" in fig.texts[0].get_text() if fig.texts else fig._suptitle.get_text().startswith("Error")
    assert fig._suptitle.get_text().startswith("Error curves")
    fig = error_curves_figure(doc, attribute="g", keypoints=[5, 1])
    assert "keypoint 5" in fig.axes[0].get_title() and fig.axes[0].get_title().endswith("*")
    with pytest.raises(InputError, match="keypoint 9 is not in the audit's curves"):
        error_curves_figure(doc, keypoints=[9])
    from fairlandmark.render.curves import extra_curve_figure

    assert not extra_curve_figure(doc, "g")  # one threshold: the SDR figure itself draws the curves
    several = dict(doc, thresholds=[2.0, 4.0])
    assert extra_curve_figure(several, "g")  # several thresholds and a significant curve gap: an extra figure
    for r in several["curves"]["records"]:
        r["significant"] = False
    assert not extra_curve_figure(several, "g")
    nocurves = run_audit(study, thresholds_mm=[2.0], min_group_size=5, curves=False).to_dict()
    assert nocurves["curves"] is None


def test_cli_prints_curve_findings_and_no_curves_switch(tmp_path, capsys):
    from fairlandmark.cli import main
    from fairlandmark.render.markdown import to_markdown

    rng = np.random.default_rng(8)
    n, k = 80, 3
    errors = rng.gamma(2.0, 1.0, (n, k))
    errors[1::2, 2] *= 2.5
    ids = [f"i{i}" for i in range(n)]
    pd.DataFrame({"image_id": np.repeat(ids, k), "keypoint": np.tile(np.arange(1, k + 1), n),
                  "error_mm": errors.ravel()}).to_csv(tmp_path / "p.csv", index=False)
    pd.DataFrame({"image_id": ids, "g": ["a", "b"] * (n // 2)}).to_csv(tmp_path / "m.csv", index=False)
    args = ["audit", str(tmp_path / "p.csv"), str(tmp_path / "m.csv"), "--permutations", "199", "--bootstrap", "0",
            "--baseline-repeats", "0", "--json", str(tmp_path / "a.json")]
    assert main(args) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("Error curves:"))
    assert "significant after correction: keypoint 3 (g)" in line  # the planted one first (smallest p)
    import json

    doc = json.loads((tmp_path / "a.json").read_text())
    assert "- Error curves: " in to_markdown(doc)
    assert main(args[:-2] + ["--no-curves", "--json", str(tmp_path / "b.json")]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["curves"] is None


@pytest.mark.parametrize("seed", range(4))
def test_observed_hit_counts_are_the_loops_counts(seed, monkeypatch):
    # Errors on the thresholds themselves (inclusive), missing predictions, several runs and cells, and blocks
    # of rows forced small: every count is a plain loop's count of errors <= t per (run, cell, keypoint).
    import fairlandmark.stats.curves as curves_module

    monkeypatch.setattr(curves_module, "_HIT_COUNT_BLOCK", 7)
    rng = np.random.default_rng(seed)
    n, k = 80, 3
    grid = np.array([0.5, 1.0, 2.0, 3.5])
    errors = rng.choice(np.r_[grid, rng.gamma(2.0, 1.0, 20), np.nan], (n, k))
    groups = rng.choice(["a", "b", "c"], n)
    runs = rng.integers(0, 3, n)
    study = _study(errors, groups, runs)
    sums, counts = observed_hit_counts(study, grid)
    R, L = study.n_runs, study.coding.n_cells
    assert sums.shape == (1, R, L, len(grid) * k) and counts.shape == (1, R, L)
    rows_run, cells, errs = np.asarray(study.row_run), np.asarray(study.coding.cell), study.errors
    for r in range(R):
        for c in range(L):
            rows = (rows_run == r) & (cells == c)
            assert counts[0, r, c] == rows.sum()
            for t, phi in enumerate(grid):
                for kp in range(k):
                    assert sums[0, r, c, t * k + kp] == np.sum(errs[rows, kp] <= phi)  # NaN never hits
    # The same array as the kernel's one-hot products of each threshold's 0/1 columns.
    kernel = RunKernel(np.concatenate([(errs <= phi) for phi in grid], axis=1).astype(np.float32),
                       study.row_run, study.n_runs)
    expected, expected_counts = kernel.sums(kernel.labels_by_run(study.coding.cell), L)
    np.testing.assert_array_equal(sums, expected)
    np.testing.assert_array_equal(counts, expected_counts)


def test_observed_hit_counts_refuses_a_grid_out_of_order():
    study = _study(np.array([[0.5], [1.5], [2.5]]), ["a", "b", "a"])
    with pytest.raises(ValueError, match="strictly increasing"):
        observed_hit_counts(study, np.array([2.0, 1.0]))
