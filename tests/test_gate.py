"""fairlandmark gate: exit codes, config files, JUnit XML with exactly the right failures."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest


from fairlandmark.cli import main
from fairlandmark.exceptions import InputError
from fairlandmark.gate import TOLERANCE as TOL
from fairlandmark.gate import GateRules, load_rules, run_gate


@pytest.fixture(scope="module")
def docs(make_doc):
    return {"sig": make_doc(10, significance=True, privacy=True, real_significance=False),
            "plain": make_doc(10), "base": make_doc(10, seed=1)}


@pytest.fixture
def files(tmp_path, docs, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no stray fairlandmark.toml / pyproject.toml is picked up
    for name, doc in docs.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(doc))
    return tmp_path


def junit_failures(path):
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    cases = root.findall("./testsuite/testcase")
    assert int(root.get("tests")) == len(cases)
    failed = {(c.get("classname"), c.get("name")) for c in cases if c.find("failure") is not None}
    assert int(root.get("failures")) == len(failed)
    for suite in root.findall("testsuite"):
        assert int(suite.get("tests")) == len(suite.findall("testcase"))
        assert int(suite.get("failures")) == len(suite.findall("testcase/failure"))
    return cases, failed


def _case(rule, attribute, keypoint):
    return f"fairlandmark.gate.{rule}.{attribute}", f"{attribute} / keypoint {keypoint}"


def test_pass_exit_0_and_junit(files, docs):
    rc = main(["gate", "sig.json", "--max-dp", "1", "--max-mean-dp", "1", "--max-mre", "100", "--min-sdr", "0",
               "--max-privacy-bacc", "1", "--junit", "j.xml", "--markdown", "g.md", "-q"])
    assert rc == 0
    cases, failed = junit_failures(files / "j.xml")
    n_rows = len(docs["sig"]["per_keypoint"])
    assert len(cases) == n_rows + 3 + 1 + 1 + 2  # max_dp per row, mean DP per attribute, MRE, SDR, privacy x 2
    assert failed == set()
    md = (files / "g.md").read_text()
    assert md.startswith("## fairlandmark gate: ✅ passed") and "## Audit summary" in md


def test_fail_exit_1_with_exactly_the_right_failures(files, docs):
    doc = docs["sig"]
    limit = 0.15
    rc = main(["gate", "sig.json", "--max-dp", str(limit), "--max-mre", "100", "--junit", "j.xml",
               "--markdown", "g.md", "--json", "g.json", "-q"])
    expected = {_case("max_dp", r["attribute"], r["keypoint"]) for r in doc["per_keypoint"] if r["dp"] > limit + TOL}
    assert expected and rc == 1
    cases, failed = junit_failures(files / "j.xml")
    assert failed == expected
    assert len(cases) == len(doc["per_keypoint"]) + 1
    fail = next(c for c in cases if c.find("failure") is not None).find("failure")
    assert fail.get("type") == "max_dp" and f"> {limit:g}" in fail.get("message")
    md = (files / "g.md").read_text()
    assert "❌ failed" in md and f"**Failures** ({len(expected)})" in md
    checks = json.loads((files / "g.json").read_text())
    assert checks["n_failed"] == len(expected) and checks["passed"] is False


def test_only_significant_counts_significant_rows(files, docs):
    doc = docs["sig"]
    limit = 0.05
    rc = main(["gate", "sig.json", "--max-dp", str(limit), "--only-significant", "--junit", "j.xml", "-q"])
    expected = {_case("max_dp", r["attribute"], r["keypoint"]) for r in doc["per_keypoint"]
                if r["dp"] > limit + TOL and r["significant"]}
    all_over = {_case("max_dp", r["attribute"], r["keypoint"]) for r in doc["per_keypoint"] if r["dp"] > limit + TOL}
    assert expected and expected < all_over and rc == 1
    assert junit_failures(files / "j.xml")[1] == expected


def test_every_rule_against_hand_computed_values(docs):
    doc, base = docs["sig"], docs["base"]
    allrow = next(r for r in doc["overall"] if r["family"] == "all")
    mean_dp = {r["attribute"]: r["mean_dp"] for r in doc["summary"] if r["family"] == "all"}
    mid = sorted(mean_dp.values())[1]
    rules = GateRules(max_mean_dp=mid, max_mre=allrow["mre"], min_sdr={"2": allrow["sdr_2"] + 0.01, "4": 0.0},
                      max_privacy_balanced_accuracy=0.6, max_dp_regression=0.1, max_mean_dp_regression=0.0,
                      max_mre_regression=1.0)
    res = run_gate(doc, rules, baseline=base)
    failed = {(c.rule, c.attribute, c.keypoint, c.threshold) for c in res.failures}
    bdp = {(r["attribute"], r["keypoint"]): r["dp"] for r in base["per_keypoint"]}
    bmean = {r["attribute"]: r["mean_dp"] for r in base["summary"] if r["family"] == "all"}
    expected = {("max_mean_dp", a, None, None) for a, v in mean_dp.items() if v > mid + TOL}
    expected |= {("min_sdr", None, None, "2")}  # the value equal to max_mre passes (tolerance)
    expected |= {("max_privacy_balanced_accuracy", "sex", None, None)}  # 0.71 > 0.6; age_group 0.53 passes
    expected |= {("max_dp_regression", r["attribute"], r["keypoint"], None) for r in doc["per_keypoint"]
                 if r["dp"] - bdp[(r["attribute"], r["keypoint"])] > 0.1 + TOL}
    expected |= {("max_mean_dp_regression", a, None, None) for a, v in mean_dp.items() if v > bmean[a] + TOL}
    assert failed == expected
    assert not res.passed and res.exit_code == 1
    assert {c.rule for c in res.checks} == {"max_mean_dp", "max_mre", "min_sdr", "max_privacy_balanced_accuracy",
                                            "max_dp_regression", "max_mean_dp_regression", "max_mre_regression"}
    only_sex = run_gate(doc, GateRules(max_dp=1.0, attributes=("sex",)))
    assert {c.attribute for c in only_sex.checks} == {"sex"} and len(only_sex.checks) == 10


def test_config_file_and_flags_override(files):
    (files / "fairlandmark.toml").write_text('[gate]\nmax_dp = 0.0\nmax_mre = 100\n[audit]\nother = 1\n')
    assert main(["gate", "sig.json", "-q"]) == 1  # found in the current folder
    assert main(["gate", "sig.json", "-q", "--max-dp", "1"]) == 0  # flag overrides the file
    assert main(["gate", "sig.json", "-q", "--no-config", "--max-mre", "100"]) == 0
    sub = files / "cfg"
    sub.mkdir()
    (sub / "gate.toml").write_text('[gate]\nbaseline = "../base.json"\nmax_mre_regression = 10.0\n')
    assert main(["gate", "plain.json", "-q", "--config", str(sub / "gate.toml")]) == 0  # path relative to the file


def test_pyproject_table(files):
    (files / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.fairlandmark.gate]\nmax_dp = 1.0\n')
    rules = load_rules()
    assert rules.max_dp == 1.0 and rules.source.endswith("pyproject.toml")
    assert main(["gate", "sig.json", "-q"]) == 0
    (files / "pyproject.toml").write_text('[tool.fairlandmark.gate]\nmax_dp = 1.0\nmin_sdrr = 0.5\n')
    with pytest.raises(InputError, match=r"pyproject.toml: unknown key 'min_sdrr' in \[tool.fairlandmark.gate\]"):
        load_rules()


@pytest.mark.parametrize("text, message", [
    ("[gate]\nmax_dpp = 0.1\n", r"fairlandmark.toml: unknown key 'max_dpp' in \[gate\]"),
    ("[gate]\nmax_dp = 'high'\n", r"fairlandmark.toml \[gate\]: max_dp must be a number in \[0, 1\]"),
    ("[gate]\nmax_dp = 1.5\n", r"max_dp must be a number in \[0, 1\], got 1.5"),
    ("[gate]\nmax_dp_only_significant = 1\nmax_dp = 0.1\n", r"max_dp_only_significant must be true or false"),
    ("max_dp = 0.1\n", r"fairlandmark.toml: 'max_dp' must be inside the \[gate\] table"),
    ("[gate\nmax_dp = 0.1\n", r"fairlandmark.toml: not valid TOML"),
    ("gate = 3\n", r"\[gate\] must be a table"),
    ("[gate]\nmin_sdr = {\"2\" = 2}\n", r"min_sdr\[2\] must be a number"),
    ("[gate]\nattributes = \"sex\"\nmax_dp = 0.1\n", r"attributes must be a list"),
    ("[gate]\nmax_dp_regression = 0.1\n", r"max_dp_regression needs a baseline"),
    ("[gate]\n", r"no gate rules"),
])
def test_bad_config_exit_2_one_line(files, capsys, text, message):
    import re

    (files / "fairlandmark.toml").write_text(text)
    assert main(["gate", "sig.json"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert re.search(message, err), err


@pytest.mark.parametrize("args, message", [
    (["plain.json", "--max-dp", "0.1", "--only-significant"], "has no significance fields"),
    (["plain.json", "--max-privacy-bacc", "0.6"], "has no privacy block"),
    (["plain.json", "--min-sdr", "7=0.5"], "threshold 7 is not in audit"),
    (["plain.json", "--max-dp", "0.1", "--attribute", "race"], "'race' is not in audit"),
    (["missing.json", "--max-dp", "0.1"], "missing.json: file not found"),
    (["plain.json", "--max-dp-regression", "0.1"], "needs a baseline"),
    (["plain.json", "--max-dp", "0.1", "--config", "nowhere.toml"], "nowhere.toml: config file not found"),
    (["plain.json"], "no gate rules"),
])
def test_input_errors_exit_2(files, capsys, args, message):
    assert main(["gate", *args]) == 2
    assert message in " ".join(capsys.readouterr().err.split())


def test_usage_errors_exit_2(files, capsys):
    assert main(["gate", "plain.json", "--max-dp", "2"]) == 2
    assert main(["gate", "plain.json", "--max-dp", "x"]) == 2
    assert main(["gate", "plain.json", "--min-sdr", "a=b"]) == 2
    assert main(["gate"]) == 2


def test_markdown_to_stdout_and_regression_flags(files, capsys, docs):
    rc = main(["gate", "plain.json", "--baseline", "base.json", "--max-dp-regression", "0", "--markdown", "-", "-q"])
    out = capsys.readouterr().out
    b = {(r["attribute"], r["keypoint"]): r["dp"] for r in docs["base"]["per_keypoint"]}
    worse = [r for r in docs["plain"]["per_keypoint"] if r["dp"] - b[(r["attribute"], r["keypoint"])] > 1e-9]
    assert worse and rc == 1
    assert out.startswith("## fairlandmark gate: ❌ failed") and f"**Failures** ({len(worse)})" in out


def test_equal_to_limit_passes(make_doc):
    doc = make_doc(3)
    top = max(r["dp"] for r in doc["per_keypoint"])
    assert run_gate(doc, {"max_dp": top}).passed
    assert not run_gate(doc, {"max_dp": top - 1e-6}).passed
    with pytest.raises(InputError, match="unknown key 'maxdp'"):
        run_gate(doc, {"maxdp": 0.1})


def test_real_significance_and_privacy_output():
    """The gate and the report read what the real significance and privacy layers write."""
    import warnings

    import numpy as np
    from sklearn.ensemble import RandomForestClassifier

    import fairlandmark as fl
    from fairlandmark.render.html import to_html

    rng = np.random.default_rng(0)
    true = rng.uniform(0, 500, (60, 5, 2))
    err = rng.normal(0, 8, true.shape)
    sex = np.array(["F", "M"] * 30)
    err[sex == "F", 1] *= 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fl.audit_arrays(true + err, true, {"sex": sex}, spacing_mm=0.1, min_group_size=5,
                              significance=dict(permutations=300, bootstrap=50, baseline_repeats=50, seed=0),
                              privacy=dict(n_permutations=5, n_repeats=1,
                                           estimator=RandomForestClassifier(n_estimators=10, random_state=0)))
    doc = res.to_dict()
    analysis = doc["privacy"]["attributes"]["sex"]["analyses"][0]
    bacc = analysis["balanced_accuracy"]
    sig = {r["keypoint"] for r in doc["per_keypoint"] if r["significant"]}
    assert 2 in sig
    result = run_gate(doc, GateRules(max_dp=0.0, max_dp_only_significant=True,
                                     max_privacy_balanced_accuracy=bacc - 0.01))
    failed = {(c.rule, c.keypoint) for c in result.failures}
    assert failed == {("max_dp", k) for k in sig} | {("max_privacy_balanced_accuracy", None)}
    assert run_gate(doc, GateRules(max_privacy_balanced_accuracy=bacc)).passed
    html = to_html(doc, figures=False)
    assert analysis["risk_line"].replace("<", "&lt;") in html


def test_values_the_audit_could_not_compute_fail_their_checks(tmp_path):
    import numpy as np

    import fairlandmark

    rng = np.random.default_rng(0)
    true = rng.uniform(0, 100, (40, 3, 2))
    pred = true + rng.normal(0, 1, true.shape)
    pred[:, 2] = np.nan  # keypoint 3 never predicted
    sex = ["F", "M"] * 20
    strict = fairlandmark.audit_arrays(pred, true, {"sex": sex}, spacing_mm=1.0, min_group_size=1000, significance=False)
    result = run_gate(strict, GateRules(max_dp=0.01, max_mean_dp=0.001))
    assert not result.passed and result.exit_code == 1
    assert all(not c.passed for c in result.checks) and len(result.checks) == 3 + 1
    assert "counted as a failure" in result.checks[0].message
    lost = fairlandmark.audit_arrays(np.full_like(pred, np.nan), true, {"sex": sex}, spacing_mm=1.0,
                                     min_group_size=1, significance=False)
    result = run_gate(lost, GateRules(max_mre=1.0, min_sdr={None: 0.0}))
    mre = next(c for c in result.checks if c.rule == "max_mre")
    sdr = next(c for c in result.checks if c.rule == "min_sdr")
    assert not mre.passed and "cannot be checked" in mre.message
    assert sdr.passed  # missing predictions are misses: SDR is 0, a real value
    ok = fairlandmark.audit_arrays(pred[:, :2], true[:, :2], {"sex": sex}, spacing_mm=1.0, min_group_size=1, significance=False)
    assert run_gate(ok, GateRules(max_dp=1.0, max_mre=100.0)).passed


def test_dp_regression_refuses_audits_at_different_primary_thresholds(files):
    import numpy as np

    import fairlandmark

    rng = np.random.default_rng(0)
    true = rng.uniform(0, 100, (40, 3, 2))
    pred = true + rng.normal(0, 2, true.shape)
    for name, thr in (("at2.json", 2.0), ("at4.json", 4.0)):
        fairlandmark.audit_arrays(pred, true, {"sex": ["F", "M"] * 20}, spacing_mm=1.0, min_group_size=1,
                                  thresholds_mm=[thr], significance=False).to_json(files / name)
    with pytest.raises(InputError, match=r"DP is at 4 mm there but at 2 mm here; audit both with the same first"):
        run_gate(str(files / "at2.json"), GateRules(max_dp_regression=0.05, baseline=str(files / "at4.json")))
    # The MRE does not depend on the threshold: that regression is still checked.
    assert run_gate(str(files / "at2.json"), GateRules(max_mre_regression=0.0, baseline=str(files / "at4.json"))).passed
