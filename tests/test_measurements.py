"""Clinical measurements: geometry, presets, per-group numbers and tests, CLI.

Every number is checked against an independent computation written here with
plain Python loops (math.acos, if/elif classes), not the package's numpy code.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from fairlandmark.audit import audit, prepare_study
from fairlandmark.exceptions import InputError
from fairlandmark.inputs.convert import convert
from fairlandmark.inputs.measurements import (
    PRESETS, check_measurements, classify, load_measurements, measurement_values,
)
from fairlandmark.stats.measurements import audit_measurements


# -- an independent implementation of the ISBI 2015 definitions (plain loops) --------------------------------------
def _vec(p, q):
    return (q[0] - p[0], q[1] - p[1])


def _angle(u, v):
    c = (u[0] * v[0] + u[1] * v[1]) / (math.hypot(*u) * math.hypot(*v))
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


def _cross(u, v):
    return u[0] * v[1] - u[1] * v[0]


def _isbi_values(pts):
    """The eight ISBI 2015 measurements of one image; ``pts[i]`` is landmark i (1-based)."""
    sna = _angle(_vec(pts[2], pts[1]), _vec(pts[2], pts[5]))
    snb = _angle(_vec(pts[2], pts[1]), _vec(pts[2], pts[6]))
    anb = sna - snb
    fh_pp = _angle(_vec(pts[4], pts[3]), _vec(pts[17], pts[18]))
    if _cross(_vec(pts[4], pts[3]), _vec(pts[17], pts[18])) < 0:
        fh_pp = -fh_pp
    odi = _angle(_vec(pts[8], pts[10]), _vec(pts[6], pts[5])) + fh_pp
    npog_ab = _angle(_vec(pts[2], pts[7]), _vec(pts[5], pts[6]))
    if _cross(_vec(pts[2], pts[7]), _vec(pts[5], pts[6])) > 0:
        npog_ab = -npog_ab
    apdi = _angle(_vec(pts[3], pts[4]), _vec(pts[2], pts[7])) + npog_ab + fh_pp
    fhi = math.dist(pts[1], pts[10]) / math.dist(pts[2], pts[8])
    fma = _angle(_vec(pts[1], pts[2]), _vec(pts[10], pts[9]))
    mw = math.dist(pts[11], pts[12])
    if pts[12][0] < pts[11][0]:
        mw = -mw
    return {"ANB": anb, "SNB": snb, "SNA": sna, "ODI": odi, "APDI": apdi, "FHI": fhi, "FMA": fma, "MW": mw}


def _isbi_class(name, v):
    limits = {"ANB": (3.2, 5.7), "SNB": (74.6, 78.7), "SNA": (79.4, 83.2), "ODI": (68.4, 80.5),
              "APDI": (77.6, 85.2), "FHI": (0.65, 0.75), "FMA": (26.8, 31.4)}
    if name == "MW":
        if v < 0:
            return 0
        if v < 2:
            return 1
        return 2 if v < 4.5 else 3
    lo, hi = limits[name]
    if v < lo:
        return 0
    return 1 if v < hi else 2


TOLERANCE = {"ANB": 2.0, "SNB": 2.0, "SNA": 2.0, "ODI": 3.0, "APDI": 3.0, "FHI": 0.02, "FMA": 2.0, "MW": 1.0}


def _read_wide(path):
    rows = {}
    with open(path) as handle:
        for line in handle:
            cells = line.strip().split(",")
            xy = [float(c) for c in cells[1:]]
            rows[cells[0]] = {i + 1: (xy[2 * i], xy[2 * i + 1]) for i in range(len(xy) // 2)}
    return rows


def close(a, b, what, tol=1e-9):
    assert abs(a - b) <= tol * max(1.0, abs(b)), f"{what}: {a} != {b}"


# -- geometry by hand ----------------------------------------------------------------------------------------------
def test_geometry_hand_cases():
    mset = check_measurements([
        {"name": "right", "kind": "angle", "points": ["a", "o", "b"]},
        {"name": "lines", "kind": "line_angle", "points": ["o", "a", "o", "b"]},
        {"name": "lines signed", "kind": "line_angle", "points": ["o", "b", "o", "a"], "signed": True},
        {"name": "ob", "kind": "distance", "points": ["o", "b"]},
        {"name": "oa x-signed", "kind": "distance", "points": ["a", "o"], "signed": "x"},
        {"name": "ratio", "kind": "ratio", "points": ["o", "b", "o", "a"]},
        {"name": "ratio of", "kind": "ratio", "of": ["ob", "oa x-signed"]},
        {"name": "diff", "kind": "difference", "of": ["right", "lines signed"]},
        {"name": "sum", "kind": "sum", "of": ["right", "ob"], "weights": [2, -1]},
    ])
    xy = np.array([[[3.0, 0.0], [0.0, 0.0], [0.0, 4.0]]])  # a, o, b
    v = measurement_values(xy, ["a", "o", "b"], mset)[0]
    # o->b = (0, 4), o->a = (3, 0): cross((0,4),(3,0)) = 0*0 - 4*3 < 0, so the signed angle is -90.
    expected = [90.0, 90.0, -90.0, 4.0, -3.0, 4.0 / 3.0, 4.0 / -3.0, 180.0, 176.0]
    np.testing.assert_allclose(v, expected, atol=1e-12)
    # A missing landmark makes every measurement using it NaN, and only those.
    xy[0, 2] = np.nan
    v = measurement_values(xy, ["a", "o", "b"], mset)[0]
    assert np.isnan(v[[0, 1, 2, 3, 5, 6, 7, 8]]).all() and v[4] == -3.0


def test_classes_boundaries():
    m = load_measurements("isbi2015").by_name["MW"]
    assert classify(np.array([-0.1, 0.0, 1.99, 2.0, 4.5, 9.0, np.nan]), m).tolist() == [0, 1, 1, 2, 3, 3, -1]
    m = check_measurements([{"name": "x", "kind": "distance", "points": [1, 2], "cuts": [1, 2]}]).by_name["x"]
    assert m.classes == ("< 1", "1 to 2", ">= 2")


def test_presets_are_valid_and_documented():
    for name in PRESETS:
        mset = load_measurements(name)
        assert mset.reported and all(m.description for m in mset.measurements)
    isbi = load_measurements("isbi2015")
    assert [m.name for m in isbi.reported] == ["ANB", "SNB", "SNA", "ODI", "APDI", "FHI", "FMA", "MW"]
    assert "Medical Image Analysis" in isbi.citation
    assert max(isbi.keypoints()) <= 19 and max(load_measurements("dha").keypoints()) <= 37


# -- validation ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("definition, message", [
    ({"name": "x", "kind": "curvature", "points": [1, 2]}, "kind 'curvature' is not one of"),
    ({"name": "x", "kind": "angle", "points": [1, 2]}, "needs 'points' with 3 keypoints"),
    ({"name": "x", "kind": "difference", "of": ["y"]}, "needs 'of' = 2 names"),
    ({"name": "x", "kind": "difference", "of": ["y", "z"]}, "'of' names 'y', which is not defined"),
    ({"name": "x", "kind": "distance", "points": [1, 2], "tolerance": -1}, "'tolerance' must be a positive"),
    ({"name": "x", "kind": "distance", "points": [1, 2], "cuts": [2, 1]}, "'cuts' must be finite numbers in incr"),
    ({"name": "x", "kind": "distance", "points": [1, 2], "cuts": [1], "classes": ["a"]}, "'classes' needs 2 labels"),
    ({"name": "x", "kind": "distance", "points": [1, 2], "classes": ["a"]}, "'classes' given without 'cuts'"),
    ({"name": "x", "kind": "distance", "points": [1, 2], "signed": True}, "'signed' must be false or 'x' or 'y'"),
    ({"name": "x", "kind": "distance", "points": [1, 2], "colour": "red"}, "unknown key 'colour'"),
    ({"kind": "distance", "points": [1, 2]}, "needs a 'name'"),
])
def test_bad_definitions_get_one_clear_line(definition, message):
    with pytest.raises(InputError, match=message) as info:
        check_measurements([definition], source="m.toml")
    assert "\n" not in str(info.value) and str(info.value).startswith("m.toml: measurement")


def test_cycles_and_duplicates_and_unknown_keypoints():
    with pytest.raises(InputError, match="refers back to itself"):
        check_measurements([{"name": "a", "kind": "difference", "of": ["b", "c"]},
                            {"name": "b", "kind": "difference", "of": ["a", "c"]},
                            {"name": "c", "kind": "distance", "points": [1, 2]}])
    with pytest.raises(InputError, match="defined twice"):
        check_measurements([{"name": "a", "kind": "distance", "points": [1, 2]}] * 2)
    mset = check_measurements([{"name": "a", "kind": "distance", "points": [1, 9]}])
    with pytest.raises(InputError, match="uses keypoint 9, which the predictions do not have"):
        measurement_values(np.zeros((1, 2, 2)), [1, 2], mset)


def test_toml_file_and_errors(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('[[measurement]]\nname = "SNA"\nkind = "angle"\npoints = [1, 2, 5]\ntolerance = 2.0\n'
                    'cuts = [79.4, 83.2]\nclasses = ["retro", "normal", "pro"]\n')
    mset = load_measurements(path)
    assert mset.reported[0].cuts == (79.4, 83.2) and mset.source == str(path)
    bad = tmp_path / "bad.toml"
    bad.write_text("[[measurement]\nname=")
    with pytest.raises(InputError, match=r"bad.toml: not valid TOML"):
        load_measurements(bad)
    with pytest.raises(InputError, match=r"no such file and not a preset; the presets are isbi2015, dha"):
        load_measurements(tmp_path / "missing.toml")


# -- per-group numbers against loops --------------------------------------------------------------------------------
def _synthetic(n=60, runs=2, seed=0, missing=()):
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(runs):
        for i in range(n):
            for k, (x, y) in enumerate([(0.0, 0.0), (30.0, 0.0), (10.0, 25.0)], start=1):
                px, py = x + rng.normal(0, 1.5), y + rng.normal(0, 1.5)
                if (r, i, k) in missing:
                    px = py = np.nan
                rows.append({"run": str(r), "image_id": f"im{i}", "keypoint": k, "pred_x": px, "pred_y": py,
                             "true_x": x + rng.normal(0, 2), "true_y": y + rng.normal(0, 2)})
    frame = pd.DataFrame(rows)
    meta = pd.DataFrame({"image_id": [f"im{i}" for i in range(n)], "sex": rng.choice(["F", "M"], n)})
    return frame, meta


DEFS = [{"name": "angle at 1", "kind": "angle", "points": [2, 1, 3], "tolerance": 3.0, "cuts": [38.0, 42.0]},
        {"name": "d12", "kind": "distance", "points": [1, 2], "tolerance": 2.0},
        {"name": "ratio", "kind": "ratio", "points": [1, 3, 1, 2], "cuts": [0.9]}]


def _loop_stats(frame, meta, defs):
    """Per (measurement, run, group): MAE over present, success and agreement rates, with plain loops."""
    pts = {}
    for row in frame.itertuples():
        pts.setdefault((row.run, row.image_id), {})[row.keypoint] = ((row.pred_x, row.pred_y), (row.true_x, row.true_y))
    sex = dict(zip(meta["image_id"], meta["sex"]))
    out = {}
    for d in defs:
        for (run, image), kp in pts.items():
            vals = []
            for which in (0, 1):
                p = {k: v[which] for k, v in kp.items()}
                if any(math.isnan(c) for xy in p.values() for c in xy):
                    vals.append(math.nan)
                elif d["kind"] == "angle":
                    a, o, b = (p[i] for i in d["points"])
                    vals.append(_angle(_vec(o, a), _vec(o, b)))
                elif d["kind"] == "distance":
                    vals.append(math.dist(p[d["points"][0]], p[d["points"][1]]))
                else:
                    a, b, c, e = (p[i] for i in d["points"])
                    vals.append(math.dist(a, b) / math.dist(c, e))
            pred, true = vals
            err = abs(pred - true)
            cell = out.setdefault((d["name"], run, sex[image]), {"err": [], "succ": 0, "agree": 0, "n": 0})
            cell["n"] += 1
            if not math.isnan(err):
                cell["err"].append(err)
                if "tolerance" in d and err <= d["tolerance"]:
                    cell["succ"] += 1
                if "cuts" in d:
                    cls = [sum(v >= c for c in d["cuts"]) for v in (pred, true)]
                    cell["agree"] += cls[0] == cls[1]
    return out


def test_group_numbers_match_loops_with_runs_and_missing():
    frame, meta = _synthetic(missing={("0", 3, 1), ("1", 7, 3)})
    study = prepare_study(frame, meta, attributes=["sex"], spacing_mm=1.0)
    res = audit_measurements(study, DEFS, min_group_size=1)
    ref = _loop_stats(frame, meta, DEFS)
    for rec in res.records:
        name = rec["measurement"]
        for g in ("F", "M"):
            cells = [ref[(name, r, g)] for r in ("0", "1")]
            close(rec["mae_by_group"][g], np.mean([np.mean(c["err"]) for c in cells]), f"{name} MAE {g}")
            assert rec["n_by_group"][g] == sum(c["n"] for c in cells)
            assert rec["n_missing_by_group"][g] == sum(c["n"] - len(c["err"]) for c in cells)
            if rec["success_by_group"] is not None:
                close(rec["success_by_group"][g], np.mean([c["succ"] / c["n"] for c in cells]), f"{name} success")
            if rec["agreement_by_group"] is not None:
                close(rec["agreement_by_group"][g], np.mean([c["agree"] / c["n"] for c in cells]), f"{name} agree")
        kind = rec["dp_of"]
        per_run = [abs(ref[(name, r, "F")][{"success": "succ", "agreement": "agree"}[kind]] / ref[(name, r, "F")]["n"]
                       - ref[(name, r, "M")][{"success": "succ", "agreement": "agree"}[kind]] / ref[(name, r, "M")]["n"])
                   for r in ("0", "1")]
        close(rec["dp"], np.mean(per_run), f"{name} dp")
        close(rec["dp_std"], np.std(per_run, ddof=1), f"{name} dp std")
    assert [r["dp_of"] for r in res.records] == ["success", "success", "agreement"]


def test_success_test_uses_the_keypoint_permutations():
    """A measurement whose success equals keypoint 1's hit gets exactly keypoint 1's DP p-value."""
    rng = np.random.default_rng(3)
    n = 80
    err = rng.gamma(2.0, 1.0, n) * np.where(np.arange(n) % 2 == 0, 1.0, 1.3)
    frame = pd.DataFrame({
        "image_id": np.repeat([f"i{i}" for i in range(n)], 2), "keypoint": np.tile([1, 2], n),
        "true_x": np.tile([10.0, 0.0], n), "true_y": 0.0,
        "pred_x": np.column_stack([10.0 + err, np.zeros(n)]).ravel(), "pred_y": 0.0})
    meta = pd.DataFrame({"image_id": [f"i{i}" for i in range(n)], "sex": ["F", "M"] * (n // 2),
                         "site": rng.choice(["a", "b"], n)})
    options = dict(permutations=499, bootstrap=0, baseline_repeats=50, seed=11)
    res = audit(frame, meta, attributes=["sex", "site"], spacing_mm=1.0, thresholds_mm=[2.0], significance=options,
                measurements=[{"name": "d", "kind": "distance", "points": [2, 1], "tolerance": 2.0}], curves=False)
    pk = res.per_keypoint[res.per_keypoint["keypoint"] == 1].set_index("attribute")
    for rec in res.measurements.records:
        a = rec["attribute"]
        close(rec["dp"], pk.loc[a, "dp"], f"dp {a}")
        assert rec["success_test"]["p_value"] == pk.loc[a, "p_value"]
        close(rec["success_test"]["baseline_mean"], pk.loc[a, "baseline_mean"], f"baseline {a}")


def test_confusion_matrices_match_loops():
    frame, meta = _synthetic(runs=1, seed=5)
    study = prepare_study(frame, meta, attributes=["sex"], spacing_mm=1.0)
    res = audit_measurements(study, DEFS, min_group_size=1)
    rec = next(r for r in res.records if r["measurement"] == "angle at 1")
    expected = {g: np.zeros((3, 3), int) for g in ("F", "M")}
    sex = dict(zip(meta["image_id"], meta["sex"]))
    for i, image in enumerate(study.row_image):
        t, p = res.true_values[i, 0], res.pred_values[i, 0]
        expected[sex[image]][sum(t >= c for c in (38.0, 42.0)), sum(p >= c for c in (38.0, 42.0))] += 1
    for g in ("F", "M"):
        assert rec["confusion_by_group"][g] == expected[g].tolist()
        close(rec["agreement_by_group"][g], np.trace(expected[g]) / expected[g].sum(), "agreement = trace")


def test_error_mm_input_has_no_measurements():
    frame = pd.DataFrame({"image_id": ["a", "b"], "keypoint": 1, "error_mm": [1.0, 2.0]})
    meta = pd.DataFrame({"image_id": ["a", "b"], "sex": ["F", "M"]})
    with pytest.raises(InputError, match="needs landmark coordinates"):
        audit(frame, meta, min_group_size=1, measurements="isbi2015")


# -- the real ISBI 2015 files: junior as prediction, senior as truth ------------------------------------------------
def test_isbi2015_junior_vs_senior_cli_equals_independent_computation(shared_data, tmp_path):
    junior, senior = shared_data / "isbi2015_all_junior.csv", shared_data / "isbi2015_all_senior.csv"
    if not junior.exists() or not senior.exists():
        pytest.skip(f"ISBI 2015 files not in {shared_data}")
    from fairlandmark.cli import main

    long = convert(junior, senior, spacing_mm=1.0)
    preds = tmp_path / "preds.csv"
    long.to_csv(preds, index=False)
    rng = np.random.default_rng(17)
    ids = sorted(long["image_id"].unique())
    meta = pd.DataFrame({"image_id": ids, "sex": rng.choice(["F", "M"], len(ids)),
                         "age": rng.integers(9, 19, len(ids))})
    meta_path = tmp_path / "meta.csv"
    meta.to_csv(meta_path, index=False)
    out = tmp_path / "audit.json"
    code = main(["audit", str(preds), str(meta_path), "-a", "sex", "-a", "age", "--bin", "age=14",
                 "--measurements", "isbi2015", "--permutations", "200", "--bootstrap", "50",
                 "--baseline-repeats", "20", "--json", str(out), "--quiet"])
    assert code == 0
    doc = json.loads(out.read_text())

    pred_pts, true_pts = _read_wide(junior), _read_wide(senior)
    values = {i: (_isbi_values(pred_pts[i]), _isbi_values(true_pts[i])) for i in true_pts}
    group = {"sex": dict(zip(meta["image_id"], meta["sex"])),
             "age": {i: "age<14" if a < 14 else "age>=14" for i, a in zip(meta["image_id"], meta["age"])}}
    group["sex&age"] = {i: f"{group['sex'][i]}&{group['age'][i]}" for i in ids}
    records = {(r["attribute"], r["measurement"]): r for r in doc["measurements"]}
    assert len(records) == 3 * 8
    for (attribute, name), rec in records.items():
        by = {}
        for i, (p, t) in values.items():
            g = group[attribute][i]
            err = abs(p[name] - t[name])
            cell = by.setdefault(g, [0, 0.0, 0, 0])
            cell[0] += 1
            cell[1] += err
            cell[2] += err <= TOLERANCE[name]
            cell[3] += _isbi_class(name, p[name]) == _isbi_class(name, t[name])
        for g, (n, err_sum, succ, agree) in by.items():
            assert rec["n_by_group"][g] == n
            close(rec["mae_by_group"][g], err_sum / n, f"{attribute} {name} MAE {g}")
            close(rec["success_by_group"][g], succ / n, f"{attribute} {name} success {g}")
            close(rec["agreement_by_group"][g], agree / n, f"{attribute} {name} agreement {g}")
        rates = [by[g][2] / by[g][0] for g in by if by[g][0] >= 10]
        close(rec["dp"], max(rates) - min(rates), f"{attribute} {name} dp")
        assert rec["p_value"] is not None and rec["p_adjusted"] >= rec["p_value"]
        assert isinstance(rec["significant"], bool)
    # Real disagreements: the two doctors' landmarks put some images in different classes.
    overall_agree = np.mean([_isbi_class(n, p[n]) == _isbi_class(n, t[n]) for p, t in values.values() for n in p])
    assert 0.6 < overall_agree < 0.95
    assert doc["measurement_settings"]["name"] == "isbi2015"


def test_cli_measurement_errors_exit_2(tmp_path, capsys):
    from fairlandmark.cli import main

    frame, meta = _synthetic(runs=1)
    frame.to_csv(tmp_path / "p.csv", index=False)
    meta.to_csv(tmp_path / "m.csv", index=False)
    bad = tmp_path / "bad.toml"
    bad.write_text('[[measurement]]\nname = "x"\nkind = "angle"\npoints = [1, 2]\n')
    out = tmp_path / "a.json"
    code = main(["audit", str(tmp_path / "p.csv"), str(tmp_path / "m.csv"), "--spacing-mm", "1",
                 "--measurements", str(bad), "--json", str(out), "--no-significance"])
    err = capsys.readouterr().err
    assert code == 2 and "needs 'points' with 3 keypoints" in err and "Traceback" not in err
    assert not out.exists()
