"""Covariate-adjusted disparities: agreement with direct statsmodels fits, the two
validation scenarios of the issue (confounded gap vanishes, real gap stays),
type-I error on null data, and clear failures."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from scipy import stats

from fairlandmark import audit, audit_arrays
from fairlandmark.exceptions import FairlandmarkWarning, InputError
from fairlandmark.inputs.demo_data import make_confounded_errors
from fairlandmark.stats.adjusted import adjusted_disparities, association, check_covariates
from fairlandmark.stats.significance import benjamini_hochberg, holm

QUICK = dict(permutations=999, bootstrap=0, baseline_repeats=0, seed=1)


def _arrays(errors):
    """(N, K) errors in mm as pred/true arrays (error along x)."""
    errors = np.asarray(errors, dtype=float)
    true = np.zeros(errors.shape + (2,))
    pred = true.copy()
    pred[..., 0] = errors
    return pred, true


_study = make_confounded_errors  # the same generator as the validation benchmark


# -- agreement with statsmodels on a small case ------------------------------------------------

def test_point_estimates_equal_direct_statsmodels_gee():
    rng = np.random.default_rng(3)
    n = 80
    sex = rng.choice(np.array(["F", "M"]), n)
    site = rng.choice(np.array(["A", "B", "C"]), n)
    age = rng.normal(10, 3, n)
    err = rng.gamma(2.0, 1.0, n) + 0.5 * (sex == "M") + 0.1 * age
    err[[4, 9]] = np.nan  # missing predictions: out of the error model, misses in the hit model
    pred, true = _arrays(err[:, None])
    pred[np.isnan(err), 0, :] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairlandmarkWarning)
        res = audit_arrays(pred, true, {"sex": sex}, spacing_mm=1.0, min_group_size=1,
                           covariates={"site": site, "age": age}, adjust=["site", "age"], significance=False)
    row = res.adjusted.table.iloc[0]
    hi, lo = row["contrast"].split(" vs ")

    frame = pd.DataFrame({"err": err, "hit": (np.nan_to_num(err, nan=np.inf) <= 2.0).astype(float), "sex": sex,
                          "site": site, "age": age, "img": np.arange(n)})
    lin = smf.gee("err ~ C(sex) + C(site) + age", groups="img", data=frame.dropna(),
                  family=sm.families.Gaussian(), cov_struct=sm.cov_struct.Independence()).fit(cov_type="bias_reduced")
    coef_m = lin.params["C(sex)[T.M]"]
    se_m = lin.bse["C(sex)[T.M]"]
    sign = 1.0 if lo == "M" else -1.0  # effect_mm = low minus high
    assert row["effect_mm"] == pytest.approx(sign * coef_m, rel=1e-8)
    z = stats.norm.ppf(0.975)
    assert row["ci_low"] == pytest.approx(sign * coef_m - z * se_m, rel=1e-6)
    assert row["p_value"] == pytest.approx(lin.pvalues["C(sex)[T.M]"], rel=1e-6)

    logit = smf.gee("hit ~ C(sex) + C(site) + age", groups="img", data=frame, family=sm.families.Binomial(),
                    cov_struct=sm.cov_struct.Independence()).fit(cov_type="bias_reduced")
    b = logit.params["C(sex)[T.M]"]
    or_sign = 1.0 if hi == "M" else -1.0
    assert row["odds_ratio"] == pytest.approx(np.exp(or_sign * b), rel=1e-6)
    assert row["sdr_p_value"] == pytest.approx(logit.pvalues["C(sex)[T.M]"], rel=1e-5)
    # Marginal standardisation by hand: everyone set to the high group, then to the low group.
    p_hi = logit.predict(frame.assign(sex=hi)).mean()
    p_lo = logit.predict(frame.assign(sex=lo)).mean()
    assert row["sdr_gap"] == pytest.approx(p_hi - p_lo, rel=1e-6)


def test_several_runs_are_clustered_by_image_with_run_effects():
    rng = np.random.default_rng(5)
    n, runs = 60, 3
    sex = rng.choice(np.array(["F", "M"]), n)
    site = rng.choice(np.array(["A", "B"]), n)
    base = rng.gamma(2.0, 1.0, n) + 0.4 * (sex == "F")
    err = base[None, :] + rng.normal(0, 0.3, (runs, n)) + np.array([0.0, 0.2, -0.1])[:, None]
    err = np.abs(err).ravel()
    err[[5, 70]] = np.nan  # two missing predictions: clusters of unequal size in the error model
    ids = np.tile(np.arange(n).astype(str), runs)
    run = np.repeat(np.arange(runs), n)
    pred, true = _arrays(np.nan_to_num(err, nan=0.0)[:, None])
    pred[np.isnan(err), 0, :] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairlandmarkWarning)
        res = audit_arrays(pred, true, {"sex": np.tile(sex, runs)}, spacing_mm=1.0, runs=run, image_ids=ids,
                           min_group_size=1, covariates={"site": np.tile(site, runs)}, adjust=["site"],
                           significance=False)
    row = res.adjusted.table.iloc[0]
    assert row["n_rows"] == n * runs and row["n_images"] == n
    frame = pd.DataFrame({"err": err, "hit": (np.nan_to_num(err, nan=np.inf) <= 2.0).astype(float),
                          "sex": np.tile(sex, runs), "site": np.tile(site, runs), "run": run.astype(str),
                          "img": ids})
    sign = 1.0 if row["contrast"].endswith("M") else -1.0
    for structure, table in (
        (sm.cov_struct.Independence(), res.adjusted.table),
        (sm.cov_struct.Exchangeable(),
         adjusted_disparities(res.study, check_covariates(pd.DataFrame({"image_id": ids[:n], "site": site}), ["site"],
                                                          image_ids=ids[:n]),
                              threshold=2.0, working_correlation="exchangeable").table),
    ):
        got = table.iloc[0]
        fit = smf.gee("err ~ C(sex) + C(run) + C(site)", groups="img", data=frame.dropna(),
                      family=sm.families.Gaussian(), cov_struct=structure).fit(cov_type="bias_reduced")
        assert got["effect_mm"] == pytest.approx(sign * fit.params["C(sex)[T.M]"], rel=1e-5)
        assert got["p_value"] == pytest.approx(fit.pvalues["C(sex)[T.M]"], rel=1e-4)
        logit = smf.gee("hit ~ C(sex) + C(run) + C(site)", groups="img", data=frame, family=sm.families.Binomial(),
                        cov_struct=structure).fit(cov_type="bias_reduced")
        assert got["sdr_p_value"] == pytest.approx(logit.pvalues["C(sex)[T.M]"], rel=1e-4)


def test_joint_test_with_three_groups_equals_wald_of_both_coefficients():
    rng = np.random.default_rng(8)
    n = 150
    grp = rng.choice(np.array(["a", "b", "c"]), n)
    x = rng.normal(size=n)
    err = np.abs(rng.gamma(2.0, 1.0, n) + 0.6 * (grp == "c") + 0.3 * x)  # a radial error is a distance
    pred, true = _arrays(err[:, None])
    res = audit_arrays(pred, true, {"g": grp}, spacing_mm=1.0, min_group_size=1, covariates={"x": x},
                       adjust=["x"], significance=False)
    frame = pd.DataFrame({"err": err, "g": grp, "x": x, "img": np.arange(n)})
    fit = smf.gee("err ~ C(g) + x", groups="img", data=frame, family=sm.families.Gaussian(),
                  cov_struct=sm.cov_struct.Independence()).fit(cov_type="bias_reduced")
    names = ["C(g)[T.b]", "C(g)[T.c]"]
    b = fit.params[names].to_numpy()
    V = fit.cov_params().loc[names, names].to_numpy()
    p = stats.chi2.sf(b @ np.linalg.solve(V, b), 2)
    assert res.adjusted.table["p_value"].iloc[0] == pytest.approx(p, rel=1e-6)


# -- validation scenarios ------------------------------------------------------------------------------

def test_gap_caused_by_imbalanced_site_vanishes_after_adjustment():
    # One fixed study: a null adjusted test still rejects 5% of the time, which the type-I test below measures.
    rng = np.random.default_rng(13)
    sex, site, errors = _study(rng, 400, 4, site_effect=1.0, imbalance=0.85)
    pred, true = _arrays(errors)
    res = audit_arrays(pred, true, {"sex": sex}, spacing_mm=1.0, covariates={"site": site}, adjust=["site"],
                       significance=QUICK)
    pk = res.per_keypoint
    assert pk["significant"].all()  # raw DP: significant at every keypoint
    assert not pk["adjusted_sdr_significant"].any()  # adjusted SDR gap: at none
    assert not pk["adjusted_significant"].any()  # adjusted error gap: at none
    assert pk["adjusted_sdr_gap"].abs().mean() < pk["dp"].mean() / 2  # most of the gap was the site's


def test_real_gap_survives_adjustment_for_an_irrelevant_covariate():
    rng = np.random.default_rng(12)
    sex, site, errors = _study(rng, 400, 4, gap=0.8, imbalance=0.5)
    noise = rng.normal(size=400)
    pred, true = _arrays(errors)
    res = audit_arrays(pred, true, {"sex": sex}, spacing_mm=1.0, covariates={"site": site, "noise": noise},
                       adjust=["site", "noise"], significance=QUICK)
    pk = res.per_keypoint
    assert pk["significant"].all()
    assert pk["adjusted_sdr_significant"].all() and pk["adjusted_significant"].all()
    # The raw DP and the adjusted SDR gap estimate the same thing here.
    assert np.allclose(pk["adjusted_sdr_gap"], pk["dp"], atol=0.05)
    assert (pk["adjusted_effect_mm"] > 0).all()  # the low-SDR group (F) errs more


def test_type_one_error_at_or_below_alpha_on_null_data():
    """160 independent null keypoints (2 studies x 80): rejection rate of raw adjusted p at 0.05.

    benchmarks/adjusted_validation.py runs the same with 1000 keypoints (figures in docs/adjusted_and_power.md).
    """
    rejections_err, rejections_hit, total = 0, 0, 0
    for seed in range(2):
        rng = np.random.default_rng(100 + seed)
        sex, site, errors = _study(rng, 200, 80, site_effect=0.8, imbalance=0.7)
        pred, true = _arrays(errors)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FairlandmarkWarning)
            res = audit_arrays(pred, true, {"sex": sex}, spacing_mm=1.0, covariates={"site": site},
                               adjust=["site"], significance=False)
        table = res.adjusted.table
        # p-values of the null tests are uniform: the error model's is checked against U(0, 1).
        assert stats.kstest(table["p_value"], "uniform").pvalue > 0.001
        rejections_err += int((table["p_value"] < 0.05).sum())
        rejections_hit += int((table["sdr_p_value"] < 0.05).sum())
        total += len(table)
    mc = 2 * np.sqrt(0.05 * 0.95 / total)  # two Monte-Carlo standard errors
    assert rejections_err / total <= 0.05 + mc
    assert rejections_hit / total <= 0.05 + mc


# -- multiple testing and outputs -------------------------------------------------------------------------

@pytest.mark.parametrize("correction, adjuster", [("bh", benjamini_hochberg), ("holm", holm),
                                                  ("westfall-young", holm)])
def test_correction_over_adjusted_tests(correction, adjuster):
    rng = np.random.default_rng(4)
    sex, site, errors = _study(rng, 120, 6, gap=0.3)
    pred, true = _arrays(errors)
    res = audit_arrays(pred, true, {"sex": sex, "site": site}, spacing_mm=1.0, covariates={"age": rng.normal(size=120)},
                       adjust=["age"], significance=dict(QUICK, correction=correction, permutations=99))
    table = res.adjusted.table
    assert len(table) == 3 * 6  # sex, site, sex&site
    np.testing.assert_allclose(table["p_adjusted"], adjuster(table["p_value"].to_numpy()))
    np.testing.assert_allclose(table["sdr_p_adjusted"], adjuster(table["sdr_p_value"].to_numpy()))
    assert (table["significant"] == (table["p_adjusted"] < 0.05)).all()


def test_json_has_adjusted_object_on_every_record():
    rng = np.random.default_rng(6)
    sex, site, errors = _study(rng, 100, 3)
    pred, true = _arrays(errors)
    doc = audit_arrays(pred, true, {"sex": sex}, spacing_mm=1.0, covariates={"site": site},
                       adjust=["site"], significance=False).to_dict()
    assert doc["adjustment"]["covariates"] == ["site"]
    for rec in doc["per_keypoint"]:
        adj = rec["adjusted"]
        for key in ("covariates", "effect_mm", "ci_low", "ci_high", "p_value", "p_adjusted", "significant",
                    "sdr_gap", "sdr_ci_low", "sdr_ci_high", "odds_ratio", "sdr_p_value", "sdr_p_adjusted",
                    "sdr_significant"):
            assert key in adj
        assert adj["contrast"] == " vs ".join(rec["pair"])


def test_audit_reads_covariates_from_the_metadata_file(tmp_path):
    rng = np.random.default_rng(2)
    n = 60
    ids = [f"img{i}" for i in range(n)]
    err = rng.gamma(2.0, 1.0, n)
    preds = pd.DataFrame({"image_id": ids, "keypoint": 1, "error_mm": err})
    meta = pd.DataFrame({"image_id": ids, "sex": rng.choice(["F", "M"], n), "site": rng.choice([1, 2, 3], n)})
    preds.to_csv(tmp_path / "p.csv", index=False)
    meta.to_csv(tmp_path / "m.csv", index=False)
    res = audit(tmp_path / "p.csv", tmp_path / "m.csv", attributes=["sex"], adjust=["site:cat"], min_group_size=1,
                significance=False)
    assert res.adjusted.covariates == ["site"]
    assert np.isfinite(res.adjusted.table["effect_mm"].iloc[0])
    # categorical site (2 indicators) versus numeric site (1 column): different fits
    num = audit(tmp_path / "p.csv", tmp_path / "m.csv", attributes=["sex"], adjust=["site"], min_group_size=1,
                significance=False)
    assert num.adjusted.table["effect_mm"].iloc[0] != res.adjusted.table["effect_mm"].iloc[0]


# -- failures -------------------------------------------------------------------------------------------------

def _meta(**cols):
    return pd.DataFrame({"image_id": ["a", "b", "c", "d"], **cols})


@pytest.mark.parametrize("meta, columns, attributes, match", [
    (_meta(site=["x", "x", "x", "x"]), ["site"], [], "single value"),
    (_meta(site=["x", "y", "x", "y"]), ["scanner"], [], "no column 'scanner'"),
    (_meta(site=["x", "y", "x", "y"]), ["site"], ["site"], "is an audited attribute"),
    (_meta(site=["x", None, "x", "y"]), ["site"], [], "image 'b', column 'site' is empty"),
    (_meta(site=["x", "y", "x", "y"]), ["site", "site"], [], "given twice"),
    (_meta(site=["x", "y", "x", "y"]), [], [], "at least one"),
])
def test_bad_covariates_get_one_clear_line(meta, columns, attributes, match):
    with pytest.raises(InputError, match=match) as info:
        check_covariates(meta, columns, image_ids=["a", "b", "c", "d"], attributes=attributes)
    assert "\n" not in str(info.value)


def test_perfect_separation_is_a_warning_and_nan_not_a_traceback():
    n = 60
    sex = np.repeat(["F", "M"], n // 2)
    err = np.where(sex == "F", 0.5, 5.0) + np.linspace(0, 0.4, n)  # F always hit, M never
    pred, true = _arrays(err[:, None])
    with pytest.warns(FairlandmarkWarning, match="perfect separation"):
        res = audit_arrays(pred, true, {"sex": sex}, spacing_mm=1.0, covariates={"x": np.arange(n) % 7},
                           adjust=["x"], significance=False)
    row = res.adjusted.table.iloc[0]
    assert np.isnan(row["sdr_gap"]) and np.isnan(row["sdr_p_value"]) and not row["sdr_significant"]
    assert np.isfinite(row["effect_mm"])  # the error model is still fine


def test_a_keypoint_without_predictions_for_a_group_loses_only_its_error_model():
    rng = np.random.default_rng(1)
    n = 120
    sex = np.repeat(np.array(["F", "M"]), n // 2)
    err = rng.gamma(2.0, 1.0, (n, 3))
    pred, true = _arrays(err)
    pred[sex == "F", 1, :] = np.nan  # keypoint 2: no prediction for any F image
    with pytest.warns(FairlandmarkWarning, match="keypoint 2: the predictions present do not cover"):
        res = audit_arrays(pred, true, {"sex": sex}, spacing_mm=1.0, covariates={"x": rng.normal(size=n)},
                           adjust=["x"], significance=False)
    table = res.adjusted.table
    assert np.isnan(table["effect_mm"].iloc[1]) and np.isfinite(table["effect_mm"].iloc[[0, 2]]).all()
    assert np.isfinite(table["effect_mm"].iloc[0])
    # keypoint 2's hit model: every F misses, a separated group (NaN with its own warning)
    assert np.isnan(table["sdr_gap"].iloc[1]) and np.isfinite(table["sdr_gap"].iloc[[0, 2]]).all()


def test_a_rare_covariate_level_with_only_hits_does_not_void_the_group_gap():
    rng = np.random.default_rng(0)
    n = 200
    sex = rng.choice(np.array(["F", "M"]), n)
    site = rng.choice(np.array(["A", "B"]), n).astype(object)
    err = rng.gamma(2.0, 1.0, n)
    site[:4], err[:4] = "R", 0.5  # four images of a rare site, all hits
    pred, true = _arrays(err[:, None])
    res = audit_arrays(pred, true, {"sex": sex}, spacing_mm=1.0, covariates={"site": site}, adjust=["site"],
                       significance=False)
    assert np.isfinite(res.adjusted.table[["sdr_gap", "sdr_p_value", "effect_mm"]].to_numpy()).all()
    # ... and agrees with statsmodels' GEE, which also stops once the fit has settled.
    frame = pd.DataFrame({"hit": (err <= 2.0).astype(float), "sex": sex, "site": site, "img": np.arange(n)})
    fit = smf.gee("hit ~ C(sex) + C(site)", groups="img", data=frame, family=sm.families.Binomial(),
                  cov_struct=sm.cov_struct.Independence()).fit(cov_type="bias_reduced")
    assert res.adjusted.table["sdr_p_value"].iloc[0] == pytest.approx(fit.pvalues["C(sex)[T.M]"], rel=1e-3)


def test_collinear_covariate_warns_by_name_and_confounded_one_gives_nan():
    rng = np.random.default_rng(0)
    n = 100
    sex = rng.choice(np.array(["F", "M"]), n)
    almost = np.where(rng.random(n) < 0.97, sex, np.where(sex == "F", "M", "F"))
    err = rng.gamma(2.0, 1.0, n)
    pred, true = _arrays(err[:, None])
    with pytest.warns(FairlandmarkWarning, match="covariate 'clinic' are strongly associated"):
        audit_arrays(pred, true, {"sex": sex}, spacing_mm=1.0, covariates={"clinic": almost}, adjust=["clinic"],
                     significance=False)
    with pytest.warns(FairlandmarkWarning, match="fully determined by the covariates clinic"):
        res = audit_arrays(pred, true, {"sex": sex}, spacing_mm=1.0, covariates={"clinic": sex.copy()},
                           adjust=["clinic"], significance=False)
    assert np.isnan(res.adjusted.table["effect_mm"].iloc[0])


def test_association_measures_by_hand():
    codes = np.array([0, 0, 1, 1, 1, 0])
    x = np.array([1.0, 2.0, 3.0, 5.0, 4.0, 3.0])
    # eta^2 = between / total: means 2 and 4, grand 3 -> between 3*1 + 3*1 = 6; total 1+4+0+4+1+0... = 10
    assert association(codes, x, True)[1] == pytest.approx(np.sqrt(6 / 10))
    cats = np.array(["u", "u", "v", "v", "v", "v"], dtype=object)
    table = np.array([[2, 1], [0, 3]])
    chi2 = stats.chi2_contingency(table, correction=False)[0]
    assert association(codes, cats, False)[1] == pytest.approx(np.sqrt(chi2 / 6))


def test_statsmodels_not_imported_without_adjust():
    code = ("import sys, numpy as np; from fairlandmark import audit_arrays; t = np.zeros((8, 1, 2)); "
            "audit_arrays(t, t, {'s': list('FFFFMMMM')}, spacing_mm=1.0, min_group_size=1, significance=False); "
            "print('statsmodels' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- reports: findings, HTML, CLI ----------------------------------------------------------------------------

def _confounded_files(tmp_path, n=300, k=3):
    rng = np.random.default_rng(21)
    sex, site, errors = _study(rng, n, k, site_effect=1.0, imbalance=0.85)
    ids = [f"img{i}" for i in range(n)]
    preds = pd.DataFrame({"image_id": np.repeat(ids, k), "keypoint": np.tile(np.arange(1, k + 1), n),
                          "error_mm": errors.ravel()})
    meta = pd.DataFrame({"image_id": ids, "sex": sex, "site": site})
    preds.to_csv(tmp_path / "p.csv", index=False)
    meta.to_csv(tmp_path / "m.csv", index=False)
    return tmp_path / "p.csv", tmp_path / "m.csv"


def test_findings_and_html_say_whether_flagged_gaps_survive(tmp_path):
    from fairlandmark.render.adjusted_power import adjustment_lines
    from fairlandmark.render.html import to_html

    p, m = _confounded_files(tmp_path)
    res = audit(p, m, attributes=["sex"], adjust=["site"], significance=QUICK)
    doc = res.to_dict()
    lines = adjustment_lines(doc)
    flagged = [r for r in doc["per_keypoint"] if r["significant"]]
    assert len(lines) == len(flagged) > 0
    for line, rec in zip(lines, flagged):
        verdict = "survives adjustment" if rec["adjusted"]["sdr_significant"] else "does not survive adjustment"
        assert line.startswith(f"sex, keypoint {rec['keypoint']}") and verdict in line and "for site" in line
    page = to_html(doc, figures=False)
    assert "Adjusted gaps" in page and "adjustment for site" in page


def test_cli_audit_adjust(tmp_path, capsys):
    from fairlandmark.cli.main import main

    p, m = _confounded_files(tmp_path)
    out = tmp_path / "a.json"
    code = main(["audit", str(p), str(m), "-a", "sex", "--adjust", "site", "--permutations", "199",
                 "--bootstrap", "0", "--baseline-repeats", "0", "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "Adjusted for site" in text
    doc = json.loads(out.read_text())
    assert doc["adjustment"]["covariates"] == ["site"] and "adjusted" in doc["per_keypoint"][0]
    code = main(["audit", str(p), str(m), "-a", "sex", "--adjust", "scanner", "-q", "--no-significance"])
    err = capsys.readouterr().err
    assert code == 2 and "no column 'scanner'" in err and err.count("\n") == 1
