"""Power planning: agreement with a closed form, consistency of MDD and sample size,
plans from audits and assumptions, and the validation by simulated audits
(planted MDD is flagged at the requested power)."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import optimize, stats

from fairlandmark import audit_arrays
from fairlandmark.exceptions import InputError
from fairlandmark.stats.power import (
    PlanDesign,
    detectable_curve,
    detectable_dp,
    images_for_gap,
    min_detectable_dp_for_audit,
    per_test_level,
    plan_from_assumptions,
    plan_from_audit,
    power_at_gap,
)



def _benchmark(name):
    """A benchmark script as a module (benchmarks/ is not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _closed_form_mdd(p, n1, n2, level, power):
    """Two groups, one run: two-sided normal test of a difference of proportions, continuity-corrected."""
    z_a = stats.norm.isf(level / 2)
    cc = 0.5 * (1 / n1 + 1 / n2)

    def power_at(d):
        hi = min(max(p + d * n2 / (n1 + n2), d), 1.0)  # the smaller group 1 moves more; pooled SDR stays p
        lo = hi - d
        pooled = (n1 * hi + n2 * lo) / (n1 + n2)
        sd0 = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        sd1 = np.sqrt(hi * (1 - hi) / n1 + lo * (1 - lo) / n2)
        return stats.norm.sf((z_a * sd0 + cc - d) / sd1)

    return optimize.brentq(lambda d: power_at(d) - power, 1e-4, 0.99)


@pytest.mark.parametrize("p, n1, n2, m", [(0.7, 100, 100, 1), (0.85, 60, 150, 10), (0.5, 40, 40, 19)])
def test_two_groups_one_run_match_the_closed_form(p, n1, n2, m):
    design = PlanDesign([[n1, n2]])
    expected = _closed_form_mdd(p, n1, n2, 0.05 / m, 0.8)
    normal = detectable_dp(p, design, alpha=0.05, n_tests=m, n_sim=20000, method="normal")[0]
    assert normal == pytest.approx(expected, abs=0.006)
    # The binomial (discrete) computation, used for reports, lands near the continuity-corrected closed form.
    assert detectable_dp(p, design, alpha=0.05, n_tests=m)[0] == pytest.approx(expected, abs=0.025)


def test_power_at_zero_gap_is_at_most_the_per_test_level():
    design = PlanDesign(np.array([[40, 30, 25], [42, 28, 26]]))  # three groups, two disjoint runs
    size = power_at_gap([0.6, 0.8], 0.0, design, alpha=0.05, n_tests=2, n_sim=40000)
    assert (size <= 0.025 + 3 * np.sqrt(0.025 / 40000)).all()
    # ... and the power grows with the gap.
    powers = power_at_gap(np.full(4, 0.6), [0.05, 0.1, 0.2, 0.3], design, alpha=0.05, n_tests=2)
    assert (np.diff(powers) > 0).all()


def test_detectable_dp_is_where_power_reaches_the_target():
    design = PlanDesign(np.array([[50, 50, 30]]))
    sdr = np.array([0.6, 0.9])
    mdd = detectable_dp(sdr, design, power=0.8, alpha=0.05, n_tests=5)
    at = power_at_gap(sdr, mdd, design, alpha=0.05, n_tests=5)
    below = power_at_gap(sdr, mdd - 0.01, design, alpha=0.05, n_tests=5)
    assert (at >= 0.8).all() and (below < 0.8).all()
    # Larger groups, more runs of data, fewer tests: smaller MDD.
    assert (detectable_dp(sdr, PlanDesign(np.array([[100, 100, 60]])), n_tests=5) < mdd).all()
    assert (detectable_dp(sdr, design, n_tests=1) < mdd).all()


def test_images_for_gap_is_the_smallest_design_reaching_the_target():
    need = images_for_gap([0.7, 0.9], 0.1, n_groups=2, alpha=0.05, n_tests=19)
    for sdr, n in zip([0.7, 0.9], need):
        enough = detectable_dp(sdr, PlanDesign.equal(n, 2), alpha=0.05, n_tests=19, method="normal")[0]
        short = detectable_dp(sdr, PlanDesign.equal(n - 2, 2), alpha=0.05, n_tests=19, method="normal")[0]
        assert enough <= 0.1 + 2 ** -14 < short + 0.003  # within the bisection width
    # Textbook order of magnitude: n = (z_{1-a/2m} + z_0.8)^2 * 2 p (1 - p) / d^2 at p = 0.7.
    z = stats.norm.isf(0.05 / 19 / 2) + stats.norm.isf(0.2)
    assert need[0] == pytest.approx(z ** 2 * 2 * 0.21 / 0.01, rel=0.05)


def test_equal_designs_count_distinct_images_per_group():
    folds = PlanDesign.equal(120, 2, n_runs=3)
    shared = PlanDesign.equal(120, 2, n_runs=3, shared_images=True)
    np.testing.assert_array_equal(folds.sizes, np.full((3, 2), 40.0))  # 120 images dealt over 3 folds
    np.testing.assert_array_equal(shared.sizes, np.full((3, 2), 120.0))  # the same 120 images in every run
    # The audit averages per-fold gaps: splitting the same images into folds costs some power (the folded noise
    # of each fold's |gap| does not average away), but not more than a quarter of the detectable gap here.
    single = detectable_dp(0.7, PlanDesign.equal(120, 2))[0]
    assert single < detectable_dp(0.7, folds)[0] < 1.25 * single


def test_options_are_checked():
    with pytest.raises(InputError, match="correction"):
        per_test_level(0.05, 3, "bonferroni")
    with pytest.raises(InputError, match="alpha"):
        per_test_level(1.5, 3)
    with pytest.raises(InputError, match="group sizes"):
        PlanDesign([[100]])
    with pytest.raises(InputError, match="sdr"):
        detectable_dp(1.2, PlanDesign([[10, 10]]))
    assert np.isnan(detectable_dp(0.5, PlanDesign([[2, 2]]), n_tests=100)[0])  # nothing detectable


# -- plans ---------------------------------------------------------------------------------------------

def _audit_doc(seed=0, n=120, k=4, permutations=999):
    rng = np.random.default_rng(seed)
    sex = np.repeat(["F", "M"], [n // 3, n - n // 3])
    err = rng.gamma(2.0, 0.9, (n, k))
    true = np.zeros((n, k, 2))
    pred = true.copy()
    pred[..., 0] = err
    site = rng.choice(["a", "b"], n)
    res = audit_arrays(pred, true, {"sex": sex, "site": site}, spacing_mm=1.0,
                       significance=dict(permutations=permutations, bootstrap=0, baseline_repeats=0,
                                         correction="holm"))
    return json.loads(res.to_json())


def test_plan_from_audit_uses_the_audits_design():
    doc = _audit_doc()
    plan = plan_from_audit(doc, target_dp=0.2, n_sim=1000)
    t = plan.table
    assert len(t) == 3 * 4 and plan.settings["n_tests"] == 12
    assert plan.settings["correction"] == "holm" and plan.settings["alpha"] == 0.05
    sex = t[t["attribute"] == "sex"].iloc[0]
    assert sex["n_by_group"] == {"F": 40, "M": 80}
    rec = next(r for r in doc["per_keypoint"] if r["attribute"] == "sex")
    assert sex["sdr"] == pytest.approx(rec["sdr"])
    # The same number as planning the design by hand.
    direct = detectable_dp(rec["sdr"], PlanDesign([[40, 80]]), alpha=0.05, n_tests=12, correction="holm",
                           n_sim=1000, permutations=999)[0]
    assert sex["min_detectable_dp"] == pytest.approx(direct)
    assert (t["n_per_group_for_target"] > 0).all()
    out = plan.to_dict()
    for key in ("min_detectable_dp", "power", "alpha", "correction", "n_per_group_for_target"):
        assert key in out["records"][0]
    frame = min_detectable_dp_for_audit(doc, n_sim=1000)
    assert list(frame["keypoint"][:4]) == doc["keypoints"]
    assert {"min_detectable_dp", "observed_dp", "significant"} <= set(frame.columns)


def test_plan_warns_when_permutations_cannot_reach_the_level():
    doc = _audit_doc(permutations=99)  # smallest p 0.01 > 0.05 / 12
    plan = plan_from_audit(doc, target_dp=None, n_sim=500)
    assert plan.warnings and "--permutations" in plan.warnings[0]
    assert plan.table["min_detectable_dp"].isna().all()


def test_plan_from_assumptions_and_curve():
    plan = plan_from_assumptions([0.7, 0.8, 0.9], {"F": 80, "M": 120}, target_dp=0.1, n_sim=1000)
    t = plan.table
    assert list(t["keypoint"]) == [1, 2, 3] and t["pair"].iloc[0] == "F vs M"
    assert plan.settings["n_tests"] == 3
    curve = detectable_curve(plan, [40, 160, 640], n_sim=500)
    med = curve[curve["which"] == "median SDR"]["min_detectable_dp"].to_numpy()
    assert (np.diff(med) < 0).all()  # more images, smaller detectable gap
    # Quadrupling the images about halves the MDD.
    assert med[1] / med[0] == pytest.approx(0.5, abs=0.08)


def test_plan_figure_draws():
    pytest.importorskip("matplotlib")
    from fairlandmark.render.plan_figures import detectable_dp_figure

    plan = plan_from_assumptions([0.7, 0.9], {"F": 80, "M": 120}, target_dp=0.1, n_sim=300)
    fig = detectable_dp_figure(detectable_curve(plan, [40, 160], n_sim=300), plan, target_dp=0.1)
    assert fig.axes[0].get_xscale() == "log"


# -- validation: the real audit flags the planted MDD at the planned power ----------------------------------

@pytest.mark.slow
def test_planted_mdd_is_flagged_at_the_planned_power_by_the_real_audit():
    """200 simulated studies (2 groups of 100, SDR 0.7, 5 tests, Holm) through the audit's permutation test."""
    simulate = _benchmark("power_validation").simulate_flag_rate
    mdd, rate = simulate((100, 100), 1, False, 5, 0.7, "holm", 499, n_studies=200)
    assert 0.1 < mdd < 0.4
    assert abs(rate - 0.8) <= 0.07


# -- CLI --------------------------------------------------------------------------------------------------

def _cli(argv):
    from fairlandmark.cli import plan as plan_cli

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    plan_cli.register(sub)
    args = parser.parse_args(["plan", *argv])
    return args.handler(args)


def test_cli_plan_from_audit_and_from_assumptions(tmp_path, capsys):
    doc = _audit_doc()
    (tmp_path / "audit.json").write_text(json.dumps(doc))
    assert _cli([str(tmp_path / "audit.json"), "--json", str(tmp_path / "plan.json"), "--simulations", "500"]) == 0
    out = json.loads((tmp_path / "plan.json").read_text())
    assert len(out["records"]) == 12 and out["settings"]["target_dp"] == 0.1
    text = capsys.readouterr().out
    assert "minimal detectable DP" in text and "images per group" in text
    assert _cli(["--sdr", "0.7,0.8", "--group-sizes", "F=100,M=90", "--tests", "4", "--json",
                 str(tmp_path / "assumed.json"), "--simulations", "500", "-q"]) == 0
    assumed = json.loads((tmp_path / "assumed.json").read_text())
    assert assumed["settings"]["n_tests"] == 4 and len(assumed["records"]) == 2


@pytest.mark.parametrize("argv, match", [
    ([], "give an audit JSON"),
    (["--sdr", "0.7"], "only one of"),
    (["--group-sizes", "F=1,M=4"], "expected NAME=N"),
    (["--sdr", "1.7", "--group-sizes", "F=10,M=10"], "between 0 and 1"),
])
def test_cli_plan_bad_input_is_one_line(argv, match):
    with pytest.raises((InputError, SystemExit)) as info:
        _cli(argv)
    if isinstance(info.value, InputError):
        assert match in str(info.value) and "\n" not in str(info.value)


def test_report_lines_for_keypoints_that_are_not_significant():
    from fairlandmark.render.adjusted_power import detectable_context, detectable_lines

    doc = _audit_doc()
    frame = min_detectable_dp_for_audit(doc, n_sim=500)
    lines = detectable_lines(doc, frame)
    quiet = frame[~frame["significant"].astype(bool)]
    assert len(quiet) > 0
    head = [ln for ln in lines if not ln.startswith("  ")]
    assert len(head) == quiet["attribute"].nunique()
    sex = quiet[quiet["attribute"] == "sex"]["min_detectable_dp"]
    low, high = f"{sex.min():.2f}", f"{sex.max():.2f}"
    assert (f"a gap of {low} with" if low == high else f"a gap of {low} to {high} (by keypoint)") in head[0]
    kp_lines = [ln for ln in lines if ln.startswith("  keypoint")]
    first = quiet.iloc[0]
    assert f"no gap above {first['min_detectable_dp']:.2f} could be seen" in kp_lines[0]
    context = detectable_context(doc, frame)
    assert "smallest gap this study could have detected" in context["intro"] and context["lines"] == head
    doc_without = dict(doc, per_keypoint=[{k: v for k, v in r.items() if k != "significant"}
                                          for r in doc["per_keypoint"]])
    assert detectable_lines(doc_without, frame) == []
