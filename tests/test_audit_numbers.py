"""Every number of an audit against hand computation and an independent slow computation.

The reference implementation below uses plain Python loops over rows, runs,
groups, keypoints and group *pairs* (not max - min), and nothing from
fairlandmark. The audit must reproduce it to rtol 1e-12 on random data, in
pixels and in mm, with and without runs, with missing predictions and a group
below ``min_group_size``; and on the real ISBI 2015 junior-vs-senior errors.
"""

from __future__ import annotations

import json
import math
import statistics
import warnings

import numpy as np
import pandas as pd
import pytest

import fairlandmark
from fairlandmark import FairlandmarkWarning, InputError, audit
from fairlandmark.inputs.convert import convert

RTOL = 1e-12
NAN = float("nan")


# --------------------------------------------------------------------------
# Independent reference: plain loops, no fairlandmark.
# --------------------------------------------------------------------------
def _mean(xs):
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return sum(xs) / len(xs) if xs else NAN


def _sd(xs):
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if len(xs) < 2:
        return NAN
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _max_pair_gap(values):
    """Largest |v_g - v_h| over all pairs of the given (group -> value) dict, by pairs."""
    names = list(values)
    if len(names) < 2:
        return NAN
    best = -1.0
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            best = max(best, abs(values[names[i]] - values[names[j]]))
    return best


def reference_audit(preds, meta, *, attributes, thresholds, min_group_size, spacing_mm=None, wrist=None,
                    bins=None, families=None, intersection=True):
    """Slow, obvious computation of every audit number from a long DataFrame."""
    bins = bins or {}
    families = families or {}
    has_run = "run" in preds.columns
    # 1. radial error of every (run, image, keypoint)
    true_at = {}
    if wrist is not None:
        for row in preds.itertuples(index=False):
            run = str(row.run) if has_run else "0"
            true_at[(run, str(row.image_id), int(row.keypoint))] = (row.true_x, row.true_y)
    errors = {}  # (run, image) -> {kp: error or None}
    for row in preds.itertuples(index=False):
        run = str(row.run) if has_run else "0"
        image, kp = str(row.image_id), int(row.keypoint)
        if "error_mm" in preds.columns:
            err = None if pd.isna(row.error_mm) else float(row.error_mm)
        elif pd.isna(row.pred_x) or pd.isna(row.pred_y):
            err = None
        else:
            err = math.sqrt((row.pred_x - row.true_x) ** 2 + (row.pred_y - row.true_y) ** 2)
            if spacing_mm is not None:
                err *= spacing_mm
            elif "spacing_mm" in preds.columns:
                err *= row.spacing_mm
            elif wrist is not None:
                a, b, mm = wrist
                ax, ay = true_at[(run, image, a)]
                bx, by = true_at[(run, image, b)]
                err *= mm / math.sqrt((ax - bx) ** 2 + (ay - by) ** 2)
        errors.setdefault((run, image), {})[kp] = err
    runs = sorted({r for r, _ in errors})
    keypoints = sorted({kp for d in errors.values() for kp in d})

    # 2. group label of every image, per attribute (and the intersection)
    label = {}
    for _, m in meta.iterrows():
        image = str(m["image_id"])
        for a in attributes:
            v = m[a]
            if a in bins:
                cut = bins[a]
                label[(a, image)] = f"{a}<{cut:g}" if float(v) < cut else f"{a}>={cut:g}"
            else:
                label[(a, image)] = str(v).strip()
    audited = list(attributes)
    if intersection and len(attributes) >= 2:
        name = "&".join(attributes)
        audited.append(name)
        for _, m in meta.iterrows():
            image = str(m["image_id"])
            label[(name, image)] = "&".join(label[(a, image)] for a in attributes)

    out = {"per_keypoint": {}, "per_group": {}, "summary": {}, "overall": {}, "groups": {}, "runs": runs,
           "keypoints": keypoints}
    for a in audited:
        groups = sorted({label[(a, image)] for (_, image) in errors})
        # per run, group, keypoint
        n, sdr, mre, miss = {}, {}, {}, {}
        for r in runs:
            for g in groups:
                images = [im for (rr, im) in errors if rr == r and label[(a, im)] == g]
                n[(r, g)] = len(images)
                for kp in keypoints:
                    errs = [errors[(r, im)][kp] for im in images]
                    present = [e for e in errs if e is not None]
                    miss[(r, g, kp)] = len(errs) - len(present)
                    mre[(r, g, kp)] = sum(present) / len(present) if present else NAN
                    for t in thresholds:
                        hits = sum(1 for e in present if e <= t)
                        sdr[(t, r, g, kp)] = hits / len(images) if images else NAN
        valid = {(r, g): n[(r, g)] >= min_group_size for r in runs for g in groups}
        dp_run, gap_run = {}, {}
        for r in runs:
            for kp in keypoints:
                dp_run[(r, kp)] = _max_pair_gap({g: sdr[(thresholds[0], r, g, kp)] for g in groups
                                                 if valid[(r, g)] and not math.isnan(sdr[(thresholds[0], r, g, kp)])})
                gap_run[(r, kp)] = _max_pair_gap({g: mre[(r, g, kp)] for g in groups
                                                  if valid[(r, g)] and not math.isnan(mre[(r, g, kp)])})
        valid_all = {g: all(valid[(r, g)] for r in runs) for g in groups}
        valid_any = {g: any(valid[(r, g)] for r in runs) for g in groups}
        for kp in keypoints:
            # The pair: each group's SDR averaged over the runs where it is in DP.
            mean_sdr = {g: _mean([sdr[(thresholds[0], r, g, kp)] for r in runs if valid[(r, g)]])
                        for g in groups if valid_any[g]}
            mean_sdr = {g: v for g, v in mean_sdr.items() if not math.isnan(v)}
            out["per_keypoint"][(a, kp)] = {
                "dp": _mean([dp_run[(r, kp)] for r in runs]), "dp_std": _sd([dp_run[(r, kp)] for r in runs]),
                "mre_gap": _mean([gap_run[(r, kp)] for r in runs]),
                "mre_gap_std": _sd([gap_run[(r, kp)] for r in runs]),
                "pair_gap": _max_pair_gap(mean_sdr), "mean_sdr": mean_sdr,
            }
            for g in groups:
                rec = {"n_images": sum(n[(r, g)] for r in runs), "n_missing": sum(miss[(r, g, kp)] for r in runs),
                       "in_dp": valid_all[g], "mre": _mean([mre[(r, g, kp)] for r in runs]),
                       "mre_std": _sd([mre[(r, g, kp)] for r in runs])}
                for t in thresholds:
                    rec[f"sdr_{t:g}"] = _mean([sdr[(t, r, g, kp)] for r in runs])
                    rec[f"sdr_{t:g}_std"] = _sd([sdr[(t, r, g, kp)] for r in runs])
                out["per_group"][(a, g, kp)] = rec
        for g in groups:
            out["groups"][(a, g)] = {"n_images": sum(n[(r, g)] for r in runs),
                                     "n_images_min_run": min(n[(r, g)] for r in runs), "in_dp": valid_all[g]}
        for fam, members in [("all", keypoints)] + list(families.items()):
            per_run = [_mean([dp_run[(r, kp)] for kp in members]) for r in runs]
            dps = [(out["per_keypoint"][(a, kp)]["dp"], kp) for kp in members]
            best, best_kp = NAN, None
            for value, kp in dps:
                if not math.isnan(value) and (best_kp is None or value > best):
                    best, best_kp = value, kp
            out["summary"][(a, fam)] = {"n_keypoints": len(members), "mean_dp": _mean(per_run),
                                        "mean_dp_std": _sd(per_run), "max_dp": best, "max_dp_keypoint": best_kp}

    for fam, members in [("all", keypoints)] + list(families.items()):
        mre_runs, sdr_runs = [], {t: [] for t in thresholds}
        n_pred = n_missing = 0
        for r in runs:
            errs = [errors[(rr, im)][kp] for (rr, im) in errors if rr == r for kp in members]
            present = [e for e in errs if e is not None]
            n_pred += len(errs)
            n_missing += len(errs) - len(present)
            mre_runs.append(sum(present) / len(present) if present else NAN)
            for t in thresholds:
                sdr_runs[t].append(sum(1 for e in present if e <= t) / len(errs))
        rec = {"n_keypoints": len(members), "n_predictions": n_pred, "n_missing": n_missing,
               "mre": _mean(mre_runs), "mre_std": _sd(mre_runs)}
        for t in thresholds:
            rec[f"sdr_{t:g}"] = _mean(sdr_runs[t])
            rec[f"sdr_{t:g}_std"] = _sd(sdr_runs[t])
        out["overall"][fam] = rec
    return out


# --------------------------------------------------------------------------
# Comparison of an AuditResult (tables and JSON) with the reference.
# --------------------------------------------------------------------------
def close(actual, expected, what):
    actual = np.nan if actual is None else actual
    expected = np.nan if expected is None else expected
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=1e-15, equal_nan=True, err_msg=what)


def compare(res, ref, thresholds, families=()):
    pk = res.per_keypoint
    assert len(pk) == len(ref["per_keypoint"])
    for row in pk.to_dict("records"):
        key = (row["attribute"], int(row["keypoint"]))
        exp = ref["per_keypoint"][key]
        for col in ("dp", "dp_std", "mre_gap", "mre_gap_std"):
            close(row[col], exp[col], f"per_keypoint {key} {col}")
        # The pair: two distinct groups whose run-mean SDR gap is the largest pairwise gap.
        if math.isnan(exp["pair_gap"]):
            assert pd.isna(row["pair"]) and pd.isna(row["group_high"]), key
        else:
            hi, lo = row["group_high"], row["group_low"]
            assert hi != lo and row["pair"] == f"{hi} vs {lo}"
            close(exp["mean_sdr"][hi] - exp["mean_sdr"][lo], exp["pair_gap"], f"pair {key}")
    pg = res.per_group
    assert len(pg) == len(ref["per_group"])
    for row in pg.to_dict("records"):
        key = (row["attribute"], row["group"], int(row["keypoint"]))
        exp = ref["per_group"][key]
        assert row["n_images"] == exp["n_images"] and row["n_missing"] == exp["n_missing"], key
        assert bool(row["in_dp"]) == exp["in_dp"], key
        for col in ["mre", "mre_std"] + [f"sdr_{t:g}{s}" for t in thresholds for s in ("", "_std")]:
            close(row[col], exp[col], f"per_group {key} {col}")
    for row in res.groups.to_dict("records"):
        exp = ref["groups"][(row["attribute"], row["group"])]
        assert (row["n_images"], row["n_images_min_run"], row["in_dp"]) == (
            exp["n_images"], exp["n_images_min_run"], exp["in_dp"])
    assert len(res.groups) == len(ref["groups"])
    sm = res.summary
    assert len(sm) == len(ref["summary"])
    for row in sm.to_dict("records"):
        key = (row["attribute"], row["family"])
        exp = ref["summary"][key]
        assert row["n_keypoints"] == exp["n_keypoints"]
        for col in ("mean_dp", "mean_dp_std", "max_dp"):
            close(row[col], exp[col], f"summary {key} {col}")
        assert row["max_dp_keypoint"] == exp["max_dp_keypoint"], key
    ov = res.overall
    assert list(ov["family"]) == ["all"] + list(families)
    for row in ov.to_dict("records"):
        exp = ref["overall"][row["family"]]
        assert (row["n_predictions"], row["n_missing"]) == (exp["n_predictions"], exp["n_missing"])
        for col in ["mre", "mre_std"] + [f"sdr_{t:g}{s}" for t in thresholds for s in ("", "_std")]:
            close(row[col], exp[col], f"overall {row['family']} {col}")

    # The JSON carries the same numbers (NaN as null).
    doc = json.loads(res.to_json())
    assert doc["schema_version"] == "1.0" and doc["unit"] == res.unit
    assert doc["n_runs"] == len(ref["runs"]) and doc["thresholds"] == list(thresholds)
    assert len(doc["per_keypoint"]) == len(ref["per_keypoint"])
    primary = thresholds[0]
    for rec in doc["per_keypoint"]:
        a, kp = rec["attribute"], rec["keypoint"]
        assert isinstance(kp, int)
        exp = ref["per_keypoint"][(a, kp)]
        close(rec["dp"], exp["dp"], f"json dp {a} {kp}")
        close(rec["dp_std"], exp["dp_std"], f"json dp_std {a} {kp}")
        assert (rec["pair"] is None) == math.isnan(exp["pair_gap"])
        for g, value in rec["sdr_by_group"].items():
            e = ref["per_group"][(a, g, kp)]
            close(value, e[f"sdr_{primary:g}"], f"json sdr {a} {g} {kp}")
            close(rec["mre_by_group"][g], e["mre"], f"json mre {a} {g} {kp}")
            assert rec["n_by_group"][g] == e["n_images"]
            assert rec["n_missing_by_group"][g] == e["n_missing"]
            for t in thresholds:
                close(rec["sdr_by_threshold"][f"{t:g}"][g], e[f"sdr_{t:g}"], f"json sdr@{t} {a} {g} {kp}")
        assert len(rec["sdr_by_group"]) == sum(1 for (aa, _, k) in ref["per_group"] if aa == a and k == kp)
    for rec in doc["summary"]:
        exp = ref["summary"][(rec["attribute"], rec["family"])]
        close(rec["mean_dp"], exp["mean_dp"], "json summary mean_dp")
        close(rec["mean_dp_std"], exp["mean_dp_std"], "json summary mean_dp_std")
    for rec in doc["overall"]:
        exp = ref["overall"][rec["family"]]
        close(rec["mre"], exp["mre"], "json overall mre")
        close(rec[f"sdr_{primary:g}"], exp[f"sdr_{primary:g}"], "json overall sdr")


# --------------------------------------------------------------------------
# Random studies
# --------------------------------------------------------------------------
def random_study(seed, *, n_images=40, n_kp=5, runs=None, missing=0.08, spacing_column=False):
    """Long predictions and metadata with a small site 'C' (3 images) and missing predictions."""
    rng = np.random.default_rng(seed)
    ids = [f"{i:03d}" for i in range(1, n_images + 1)]
    site = np.array(["A"] * (n_images - 3 - n_images // 2) + ["B"] * (n_images // 2) + ["C"] * 3)
    rng.shuffle(site)
    meta = pd.DataFrame({"image_id": ids, "sex": rng.choice(["F", "M"], n_images), "site": site,
                         "age": rng.integers(9, 19, n_images)})
    frames = []
    for run in runs or [None]:
        # Each run (hold-out) sees its own ~85% of the images.
        chosen = sorted(rng.choice(n_images, size=int(n_images * 0.85), replace=False)) if run else range(n_images)
        for i in chosen:
            true = rng.uniform(0, 500, size=(n_kp, 2))
            # Per-image, per-keypoint difficulty, so that groups differ.
            pred = true + rng.normal(0, 1, size=(n_kp, 2)) * rng.uniform(5, 30, size=(n_kp, 1))
            lost = rng.random(n_kp) < missing
            pred[lost] = np.nan
            frame = pd.DataFrame({"image_id": ids[i], "keypoint": np.arange(1, n_kp + 1),
                                  "pred_x": pred[:, 0], "pred_y": pred[:, 1],
                                  "true_x": true[:, 0], "true_y": true[:, 1]})
            if spacing_column:
                frame["spacing_mm"] = rng.choice([0.08, 0.1, 0.125])
            if run:
                frame.insert(0, "run", run)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True), meta


STUDIES = {
    # name: (study kwargs, audit kwargs, thresholds)
    "px_one_run": (dict(), dict(), (20.0, 25.0)),
    "mm_spacing_one_run": (dict(), dict(spacing_mm=0.1), (2.0, 2.5, 4.0)),
    "mm_spacing_runs": (dict(runs=["h1", "h2", "h3"]), dict(spacing_mm=0.1), (2.0, 4.0)),
    "px_runs": (dict(runs=["h1", "h2"]), dict(), (15.0,)),
    "mm_column_runs": (dict(runs=["s1", "s2", "s3"], spacing_column=True), dict(), (2.0, 3.0)),
    "mm_wrist_runs": (dict(runs=["h1", "h2"]), dict(wrist_width="1,5,50"), (2.0, 4.0, 10.0)),
}


@pytest.fixture(params=["one block", "blocks of 7 rows"])
def sum_blocks(request, monkeypatch):
    """The observed sums as one block (paper scale) or in many row blocks (how a million images are summed)."""
    if request.param != "one block":
        import importlib

        from fairlandmark.stats import kernel

        monkeypatch.setattr(importlib.import_module("fairlandmark.audit"), "_SUM_BLOCK_ROWS", 7)
        monkeypatch.setattr(kernel, "LABEL_SUM_BLOCK_ROWS", 7)
    return request.param


@pytest.mark.parametrize("name", list(STUDIES))
def test_audit_equals_independent_computation(name, sum_blocks):
    study_kw, audit_kw, thresholds = STUDIES[name]
    preds, meta = random_study(sum(map(ord, name)), **study_kw)
    families = {"first": [1, 2], "rest": [3, 4, 5]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairlandmarkWarning)
        res = audit(preds, meta, attributes=["sex", "site", "age"], bins={"age": [14]}, thresholds_mm=thresholds,
                    min_group_size=5, families=families, **audit_kw, significance=False)
    wrist = (1, 5, 50.0) if "wrist_width" in audit_kw else None
    ref = reference_audit(preds, meta, attributes=["sex", "site", "age"], bins={"age": 14}, thresholds=thresholds,
                          min_group_size=5, spacing_mm=audit_kw.get("spacing_mm"), wrist=wrist, families=families)
    compare(res, ref, thresholds, families)
    # The study really exercises what it claims to.
    assert res.unit == ("px" if name.startswith("px") else "mm")
    assert res.n_runs == len(study_kw.get("runs", [None]))
    assert res.overall["n_missing"].iloc[0] > 0
    assert not res.groups.set_index(["attribute", "group"]).loc[("site", "C"), "in_dp"]
    assert res.attributes == ["sex", "site", "age", "sex&site&age"]
    assert set(res.groups.loc[res.groups["attribute"] == "age", "group"]) == {"age<14", "age>=14"}


def test_precomputed_error_column_equals_independent_computation():
    preds, meta = random_study(7, runs=["a", "b"])
    err = np.hypot(preds["pred_x"] - preds["true_x"], preds["pred_y"] - preds["true_y"]) * 0.1
    frame = preds[["run", "image_id", "keypoint"]].assign(error_mm=err)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairlandmarkWarning)
        res = audit(frame, meta, attributes=["sex", "site"], thresholds_mm=(2.0, 3.0), min_group_size=5, significance=False)
        via_coords = audit(preds, meta, attributes=["sex", "site"], thresholds_mm=(2.0, 3.0), min_group_size=5,
                           spacing_mm=0.1, significance=False)
    ref = reference_audit(frame, meta, attributes=["sex", "site"], thresholds=(2.0, 3.0), min_group_size=5)
    compare(res, ref, (2.0, 3.0))
    assert res.unit == "mm"
    pd.testing.assert_frame_equal(res.per_keypoint, via_coords.per_keypoint, rtol=1e-12)


def test_audit_arrays_equals_independent_computation():
    preds, meta = random_study(11, n_kp=3)
    k = 3
    pred = np.stack([preds["pred_x"], preds["pred_y"]], axis=-1).reshape(-1, k, 2)
    true = np.stack([preds["true_x"], preds["true_y"]], axis=-1).reshape(-1, k, 2)
    ids = preds["image_id"].to_numpy()[::k]
    sex = meta.set_index("image_id").loc[ids, "sex"].to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairlandmarkWarning)
        res = fairlandmark.audit_arrays(pred, true, {"sex": sex}, spacing_mm=0.1, image_ids=ids, min_group_size=5, significance=False)
    ref = reference_audit(preds, meta, attributes=["sex"], thresholds=(2.0,), min_group_size=5, spacing_mm=0.1)
    compare(res, ref, (2.0,))


# --------------------------------------------------------------------------
# Hand-computed cases: every expected number written out.
# --------------------------------------------------------------------------
def _frame(rows, run=None):
    cols = ["image_id", "keypoint", "pred_x", "pred_y", "true_x", "true_y"]
    frame = pd.DataFrame(rows, columns=cols)
    if run is not None:
        frame.insert(0, "run", run)
    return frame


# Keypoint 1 errors: a=1, b=3, c=2.0 (exactly the threshold: a hit), d missing.
# Keypoint 2 errors: a=5 (3-4-5), b=0, c=10 (6-8-10), d=5.
HAND = _frame([
    ("a", 1, 0, 1, 0, 0), ("a", 2, 3, 4, 0, 0),
    ("b", 1, 0, 3, 0, 0), ("b", 2, 7, 7, 7, 7),
    ("c", 1, 0, 2, 0, 0), ("c", 2, 16, 18, 10, 10),
    ("d", 1, None, None, 0, 0), ("d", 2, -3, -4, 0, 0),
])
HAND_META = pd.DataFrame({"image_id": ["a", "b", "c", "d"], "sex": ["F", "F", "M", "M"],
                          "age_group": ["young", "old", "young", "old"], "age": [9, 13, 14, 18]})


def _audit(*args, **kw):
    kw.setdefault("significance", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairlandmarkWarning)
        return audit(*args, **kw)


def test_hand_computed_single_run():
    res = _audit(HAND, HAND_META, attributes=["sex"], spacing_mm=1.0, thresholds_mm=(2.0, 4.0), min_group_size=1,
                 families={"one": [1], "two": [2]})
    pg = res.per_group.set_index(["group", "keypoint"])
    # kp 1: F = {1, 3}, M = {2.0 (hit, inclusive), missing}
    assert pg.loc[("F", 1), "sdr_2"] == 0.5 and pg.loc[("M", 1), "sdr_2"] == 0.5
    assert pg.loc[("F", 1), "sdr_4"] == 1.0 and pg.loc[("M", 1), "sdr_4"] == 0.5  # the missing one misses at 4 too
    assert pg.loc[("F", 1), "mre"] == 2.0 and pg.loc[("M", 1), "mre"] == 2.0  # missing left out of MRE
    assert pg.loc[("M", 1), "n_images"] == 2 and pg.loc[("M", 1), "n_missing"] == 1
    # kp 2: F = {5, 0}, M = {10, 5}
    assert pg.loc[("F", 2), "sdr_2"] == 0.5 and pg.loc[("M", 2), "sdr_2"] == 0.0
    assert pg.loc[("F", 2), "mre"] == 2.5 and pg.loc[("M", 2), "mre"] == 7.5
    pk = res.per_keypoint.set_index("keypoint")
    assert pk.loc[1, "dp"] == 0.0 and pk.loc[2, "dp"] == 0.5
    assert pk.loc[2, "pair"] == "F vs M" and (pk.loc[2, "group_high"], pk.loc[2, "group_low"]) == ("F", "M")
    # A zero gap still names two distinct groups.
    assert {pk.loc[1, "group_high"], pk.loc[1, "group_low"]} == {"F", "M"}
    assert pk.loc[2, "mre_gap"] == 5.0
    assert np.isnan(pk.loc[2, "dp_std"])  # one run: no std
    sm = res.summary.set_index("family")
    assert sm.loc["all", "mean_dp"] == 0.25 and sm.loc["all", "max_dp"] == 0.5
    assert sm.loc["all", "max_dp_keypoint"] == 2
    assert sm.loc["one", "mean_dp"] == 0.0 and sm.loc["two", "mean_dp"] == 0.5
    ov = res.overall.set_index("family")
    assert ov.loc["all", "mre"] == pytest.approx(26 / 7, rel=1e-15)  # (1+3+2+5+0+10+5)/7
    assert ov.loc["all", "sdr_2"] == 3 / 8 and ov.loc["all", "sdr_4"] == 4 / 8
    assert (ov.loc["all", "n_predictions"], ov.loc["all", "n_missing"]) == (8, 1)
    assert ov.loc["one", "mre"] == 2.0 and ov.loc["two", "mre"] == 5.0
    doc = json.loads(res.to_json())
    rec = {r["keypoint"]: r for r in doc["per_keypoint"]}
    assert rec[2]["dp"] == 0.5 and rec[2]["pair"] == ["F", "M"] and rec[2]["dp_std"] is None
    assert rec[1]["sdr_by_group"] == {"F": 0.5, "M": 0.5} and rec[1]["n_by_group"] == {"F": 2, "M": 2}
    assert rec[1]["n_missing_by_group"] == {"F": 0, "M": 1}
    assert rec[2]["mre_by_group"] == {"F": 2.5, "M": 7.5}
    assert rec[2]["sdr_by_threshold"] == {"2": {"F": 0.5, "M": 0.0}, "4": {"F": 0.5, "M": 0.0}}
    assert doc["unit"] == "mm" and doc["families"] == {"one": [1], "two": [2]}
    assert any("1 missing prediction" in w for w in doc["warnings"])


def test_hand_computed_runs_mean_and_sample_std():
    # Run 1: F = {1, 1}, M = {3, 3} -> SDR 1 vs 0, DP 1.  Run 2: F = {1, 3}, M = {1, 3} -> DP 0.
    run1 = _frame([("a", 1, 0, 1, 0, 0), ("b", 1, 0, 1, 0, 0), ("c", 1, 0, 3, 0, 0), ("d", 1, 0, 3, 0, 0)], "r1")
    run2 = _frame([("a", 1, 0, 1, 0, 0), ("b", 1, 0, 3, 0, 0), ("c", 1, 0, 1, 0, 0), ("d", 1, 0, 3, 0, 0)], "r2")
    res = _audit(pd.concat([run1, run2]), HAND_META, attributes=["sex"], spacing_mm=1.0, min_group_size=1)
    pk = res.per_keypoint.iloc[0]
    assert pk["dp"] == 0.5
    assert pk["dp_std"] == pytest.approx(math.sqrt(0.5), rel=1e-15)  # sample std (ddof=1) of {1, 0}
    pg = res.per_group.set_index("group")
    assert pg.loc["F", "sdr_2"] == 0.75 and pg.loc["F", "sdr_2_std"] == pytest.approx(math.sqrt(0.125), rel=1e-15)
    assert pg.loc["M", "mre"] == 2.5 and pg.loc["M", "mre_std"] == pytest.approx(math.sqrt(0.5), rel=1e-15)
    assert pg.loc["F", "n_images"] == 4  # summed over runs
    ov = res.overall.iloc[0]
    assert ov["mre"] == 2.0 and ov["mre_std"] == 0.0 and ov["sdr_2"] == 0.5
    sm = res.summary.iloc[0]
    assert sm["mean_dp"] == 0.5 and sm["mean_dp_std"] == pytest.approx(math.sqrt(0.5), rel=1e-15)
    assert res.n_runs == 2 and json.loads(res.to_json())["runs"] == ["r1", "r2"]


def test_hand_computed_intersection_and_bins():
    res = _audit(HAND, HAND_META, attributes=["sex", "age_group"], spacing_mm=1.0, min_group_size=1)
    assert res.attributes == ["sex", "age_group", "sex&age_group"]
    groups = list(res.groups.loc[res.groups["attribute"] == "sex&age_group", "group"])
    assert groups == ["F&old", "F&young", "M&old", "M&young"]
    pg = res.per_group[res.per_group["attribute"] == "sex&age_group"].set_index(["group", "keypoint"])
    # kp 1: a (F&young) 1, b (F&old) 3, c (M&young) 2.0, d (M&old) missing
    assert [pg.loc[(g, 1), "sdr_2"] for g in groups] == [0.0, 1.0, 0.0, 1.0]
    assert np.isnan(pg.loc[("M&old", 1), "mre"])  # its only prediction is missing
    pk = res.per_keypoint.set_index(["attribute", "keypoint"])
    assert pk.loc[("sex&age_group", 1), "dp"] == 1.0
    # kp 2: a 5, b 0, c 10, d 5 -> SDR 0, 1, 0, 0
    assert pk.loc[("sex&age_group", 2), "dp"] == 1.0 and pk.loc[("sex&age_group", 2), "pair"].startswith("F&old vs ")
    assert pk.loc[("age_group", 2), "dp"] == 0.5  # old {0, 5} -> 0.5, young {5, 10} -> 0
    # --bin age=14: 9, 13 -> age<14; 14, 18 -> age>=14 (the cut belongs to the upper bin)
    binned = _audit(HAND, HAND_META, attributes=["sex", "age"], bins={"age": [14]}, spacing_mm=1.0, min_group_size=1)
    assert list(binned.groups.loc[binned.groups["attribute"] == "age", "group"]) == ["age<14", "age>=14"]
    assert "sex&age" in binned.attributes
    bpg = binned.per_group[binned.per_group["attribute"] == "age"].set_index(["group", "keypoint"])
    assert bpg.loc[("age<14", 1), "sdr_2"] == 0.5 and bpg.loc[("age>=14", 1), "sdr_2"] == 0.5
    assert bpg.loc[("age<14", 2), "mre"] == 2.5 and bpg.loc[("age>=14", 2), "mre"] == 7.5
    assert not _audit(HAND, HAND_META, attributes=["sex", "age_group"], intersection=False,
                      spacing_mm=1.0, min_group_size=1).attributes.count("sex&age_group")


def test_small_group_left_out_of_dp_with_warning():
    meta = HAND_META.assign(site=["A", "A", "A", "B"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FairlandmarkWarning)
        res = audit(HAND, meta, attributes=["site"], spacing_mm=1.0, min_group_size=2, significance=False)
    messages = [str(w.message) for w in caught if w.category is FairlandmarkWarning]
    assert any("group 'B' has 1 image(s) in run 0, below min_group_size=2" in m for m in messages)
    assert any(m.startswith("1 missing prediction(s) (12.5%)") for m in messages)
    groups = res.groups.set_index("group")
    assert groups.loc["B", "n_images"] == 1 and not groups.loc["B", "in_dp"] and groups.loc["A", "in_dp"]
    pk = res.per_keypoint.set_index("keypoint")
    assert np.isnan(pk.loc[1, "dp"]) and pd.isna(pk.loc[1, "pair"])  # only one group left
    assert json.loads(res.to_json())["per_keypoint"][0]["pair"] is None
    # ... but its numbers are still reported
    assert res.per_group.set_index(["group", "keypoint"]).loc[("B", 2), "mre"] == 5.0


def test_scales_wrist_width_spacing_column_and_pixels():
    # Keypoints 1..5; image a: true_1=(0,0), true_5=(100,0) -> 0.5 mm/px; image b: true_5=(30,40) -> 1 mm/px.
    rows = []
    for image, kp5 in (("a", (100, 0)), ("b", (30, 40))):
        for kp in range(1, 6):
            tx, ty = (0, 0) if kp == 1 else kp5 if kp == 5 else (200, 200)
            px, py = (tx, ty + 4) if kp == 2 else (tx, ty)  # a 4 px error on keypoint 2
            rows.append((image, kp, px, py, tx, ty))
    frame = _frame(rows)
    meta = pd.DataFrame({"image_id": ["a", "b"], "who": ["a", "b"]})
    res = _audit(frame, meta, attributes=["who"], wrist_width="1,5,50", min_group_size=1)
    pg = res.per_group.set_index(["group", "keypoint"])
    assert pg.loc[("a", 2), "mre"] == 2.0 and pg.loc[("b", 2), "mre"] == 4.0  # 4 px * 50/100, 4 px * 50/50
    assert res.unit == "mm"
    col = _audit(frame.assign(spacing_mm=np.where(frame["image_id"] == "a", 0.25, 2.0)), meta,
                 attributes=["who"], min_group_size=1).per_group.set_index(["group", "keypoint"])
    assert col.loc[("a", 2), "mre"] == 1.0 and col.loc[("b", 2), "mre"] == 8.0
    glob = _audit(frame, meta, attributes=["who"], spacing_mm=0.5, min_group_size=1)
    assert glob.per_group.set_index(["group", "keypoint"]).loc[("b", 2), "mre"] == 2.0
    same = _audit(frame.assign(spacing_mm=0.5), meta, attributes=["who"], min_group_size=1)
    pd.testing.assert_frame_equal(same.per_group, glob.per_group)
    px = _audit(frame, meta, attributes=["who"], min_group_size=1)
    assert px.unit == "px" and px.per_group.set_index(["group", "keypoint"]).loc[("b", 2), "mre"] == 4.0
    with pytest.raises(InputError, match="only one pixel-to-mm scale"):
        _audit(frame.assign(spacing_mm=0.5), meta, attributes=["who"], spacing_mm=0.5)
    with pytest.raises(InputError, match="already in mm"):
        _audit(frame.assign(error_mm=1.0), meta, attributes=["who"], spacing_mm=0.5)


# --------------------------------------------------------------------------
# Real data: ISBI 2015 junior vs senior annotations (mm already).
# --------------------------------------------------------------------------
def test_isbi2015_junior_vs_senior(shared_data, tmp_path):
    junior, senior = shared_data / "isbi2015_all_junior.csv", shared_data / "isbi2015_all_senior.csv"
    if not junior.exists() or not senior.exists():
        pytest.skip(f"ISBI 2015 files not in {shared_data}")
    long = convert(junior, senior, spacing_mm=1.0)
    assert len(long) == 400 * 19 and long["image_id"].iloc[0] == "001"
    # Independent parse of the raw files.
    raw_p = pd.read_csv(junior, header=None, dtype={0: str}).set_index(0)
    raw_t = pd.read_csv(senior, header=None, dtype={0: str}).set_index(0).loc[raw_p.index]
    dx = raw_p.to_numpy()[:, 0::2] - raw_t.to_numpy()[:, 0::2]
    dy = raw_p.to_numpy()[:, 1::2] - raw_t.to_numpy()[:, 1::2]
    err = np.sqrt(dx ** 2 + dy ** 2)  # (400, 19) in mm
    rng = np.random.default_rng(2015)
    meta = pd.DataFrame({"image_id": raw_p.index, "sex": rng.choice(["F", "M"], 400),
                         "age": rng.integers(9, 19, 400)})
    res = _audit(long, meta, attributes=["sex", "age"], bins={"age": [14]}, thresholds_mm=(2.0, 2.5, 3.0, 4.0))
    ov = res.overall.iloc[0]
    close(ov["mre"], err.mean(), "ISBI MRE")
    for t in (2.0, 2.5, 3.0, 4.0):
        close(ov[f"sdr_{t:g}"], (err <= t).mean(), f"ISBI SDR@{t}")
    assert abs(ov["mre"] - 2.1) < 0.1 and abs(ov["sdr_2"] - 0.62) < 0.01  # the README's figures
    young = (meta["age"] < 14).to_numpy()
    pg = res.per_group[res.per_group["attribute"] == "age"].set_index(["group", "keypoint"])
    pk = res.per_keypoint[res.per_keypoint["attribute"] == "age"].set_index("keypoint")
    for k in range(19):
        s_young, s_old = (err[young, k] <= 2).mean(), (err[~young, k] <= 2).mean()
        close(pg.loc[("age<14", k + 1), "sdr_2"], s_young, f"kp {k + 1}")
        close(pg.loc[("age>=14", k + 1), "mre"], err[~young, k].mean(), f"kp {k + 1}")
        close(pk.loc[k + 1, "dp"], abs(s_young - s_old), f"kp {k + 1}")
    # And the full slow reference on all attributes.
    ref = reference_audit(long, meta, attributes=["sex", "age"], bins={"age": 14}, thresholds=(2.0, 2.5, 3.0, 4.0),
                          min_group_size=10, spacing_mm=None)
    compare(res, ref, (2.0, 2.5, 3.0, 4.0))


def test_digital_hand_atlas_wrist_width_and_families(shared_data, tmp_path):
    truth_path = shared_data / "dha_all.csv"
    if not truth_path.exists():
        pytest.skip(f"{truth_path} not present")
    raw = pd.read_csv(truth_path, header=None, dtype={0: str})
    true = raw.iloc[:, 1:].to_numpy(float).reshape(len(raw), 37, 2)
    rng = np.random.default_rng(1)
    pred = true + rng.normal(0, 6, size=true.shape)  # about 6 px of noise per axis
    pred_path = tmp_path / "pred.csv"
    pd.DataFrame(np.column_stack([raw[0], pred.reshape(len(raw), -1)])).to_csv(pred_path, header=False, index=False)
    long = convert(pred_path, truth_path)
    meta = pd.DataFrame({"image_id": raw[0], "sex": rng.choice(["F", "M"], len(raw)),
                         "age": rng.integers(9, 19, len(raw))})
    res = _audit(long, meta, attributes=["sex", "age"], bins={"age": [14]}, wrist_width="1,5,50",
                 thresholds_mm=(2.0, 4.0, 10.0), families={"wrist": range(1, 19), "fingers": range(19, 38)})
    # Independent: per-image scale 50 mm / |true_1 - true_5|.
    scale = 50.0 / np.linalg.norm(true[:, 0] - true[:, 4], axis=1)
    err = np.linalg.norm(pred - true, axis=2) * scale[:, None]
    ov = res.overall.set_index("family")
    close(ov.loc["all", "mre"], err.mean(), "DHA MRE")
    close(ov.loc["wrist", "mre"], err[:, :18].mean(), "DHA wrist MRE")
    close(ov.loc["fingers", "sdr_4"], (err[:, 18:] <= 4).mean(), "DHA fingers SDR@4")
    old = (meta["age"] >= 14).to_numpy()
    female = (meta["sex"] == "F").to_numpy()
    dp = np.abs((err[old] <= 2).mean(axis=0) - (err[~old] <= 2).mean(axis=0))
    sm = res.summary.set_index(["attribute", "family"])
    close(sm.loc[("age", "wrist"), "mean_dp"], dp[:18].mean(), "DHA DP wrist")
    close(sm.loc[("age", "fingers"), "mean_dp"], dp[18:].mean(), "DHA DP fingers")
    cells = [female & old, female & ~old, ~female & old, ~female & ~old]
    sdr = np.array([(err[c] <= 2).mean(axis=0) for c in cells])
    pk = res.per_keypoint.set_index(["attribute", "keypoint"])
    for k in (1, 20, 37):
        close(pk.loc[("sex&age", k), "dp"], sdr[:, k - 1].max() - sdr[:, k - 1].min(), f"DHA sex&age kp {k}")


def test_keypoint_overall_mre_and_sdr_equal_plain_loops(sum_blocks):
    """per_keypoint's mre/sdr: per run over all images (missing: out of MRE, a miss in SDR), then mean/std."""
    rng = np.random.default_rng(21)
    rows = []
    for run in ("a", "b", "c"):
        for i in range(12):
            for kp in (1, 2):
                err = rng.uniform(0, 4)
                missing = rng.random() < 0.1
                rows.append({"run": run, "image_id": f"{run}{i}", "keypoint": kp, "pred_x": None if missing else err,
                             "pred_y": None if missing else 0.0, "true_x": 0.0, "true_y": 0.0})
    preds = pd.DataFrame(rows)
    meta = pd.DataFrame({"image_id": sorted(set(preds["image_id"]))})
    meta["sex"] = ["F" if i % 2 else "M" for i in range(len(meta))]
    res = fairlandmark.audit(preds, meta, attributes=["sex"], spacing_mm=1.0, thresholds_mm=[2.0], min_group_size=1, significance=False)
    for kp in (1, 2):
        mres, sdrs = [], []
        for run in ("a", "b", "c"):
            errs = [r["pred_x"] for r in rows if r["run"] == run and r["keypoint"] == kp]
            present = [e for e in errs if e is not None]
            mres.append(sum(present) / len(present))
            sdrs.append(sum(1 for e in present if e <= 2.0) / len(errs))
        row = res.per_keypoint.set_index("keypoint").loc[kp]
        assert math.isclose(row["mre"], sum(mres) / 3, rel_tol=1e-12)
        assert math.isclose(row["sdr"], sum(sdrs) / 3, rel_tol=1e-12)
        assert math.isclose(row["mre_std"], statistics.stdev(mres), rel_tol=1e-9)
        rec = next(r for r in res.to_dict()["per_keypoint"] if r["keypoint"] == kp)
        assert math.isclose(rec["mre"], row["mre"]) and math.isclose(rec["sdr_std"], statistics.stdev(sdrs))


def test_json_columns_are_json_safe_value_by_value():
    # The document's per-keypoint records are built from whole columns; each value must be what json_safe
    # gives for it alone: NaN and infinities as None, numpy scalars as Python ones, text and None kept.
    from fairlandmark.audit import _json_columns
    from fairlandmark.files import json_safe

    frame = pd.DataFrame({
        "x": [1.5, np.nan, np.inf, -np.inf, 0.1],
        "finite": [0.1, 0.2, 0.3, 1e300, -0.0],
        "n": np.arange(5, dtype=np.int64), "u": np.arange(5, dtype=np.uint8), "b": [True, False, True, True, False],
        "text": ["F", None, "M", "F vs M", ""], "mixed": pd.Series([1, "a", np.int64(3), np.float32(np.nan), None],
                                                                     dtype=object)})
    got = _json_columns(frame)
    expected = {name: [json_safe(v) for v in frame[name].tolist()] for name in frame.columns}
    # pandas' nullable columns: NA is missing too
    nullable = pd.DataFrame({"f": pd.array([0.5, None], dtype="Float64"), "i": pd.array([1, None], dtype="Int64"),
                             "s": pd.array(["a", None], dtype="string")})
    assert _json_columns(nullable) == {"f": [0.5, None], "i": [1, None], "s": ["a", None]}
    assert got == expected
    for name in frame.columns:
        assert [type(v) for v in got[name]] == [type(v) for v in expected[name]], name
    json.dumps(got, allow_nan=False)


def test_the_document_is_json_safe_with_significance_and_adjustment():
    rng = np.random.default_rng(3)
    n = 60
    preds = pd.DataFrame({"image_id": np.repeat([f"i{i}" for i in range(n)], 2), "keypoint": np.tile([1, 2], n),
                          "error_mm": rng.gamma(2.0, 1.0, 2 * n)})
    preds.loc[3, "error_mm"] = np.nan  # a missing prediction
    meta = pd.DataFrame({"image_id": [f"i{i}" for i in range(n)], "sex": rng.choice(["F", "M"], n),
                         "age": rng.uniform(20, 80, n)})
    res = audit(preds, meta, attributes=["sex"], min_group_size=1, adjust=["age"],
                significance={"permutations": 99, "bootstrap": 49, "baseline_repeats": 9, "seed": 0},
                emit_warnings=False)
    doc = res.to_dict()
    json.dumps(doc, allow_nan=False)
    assert doc == json.loads(json.dumps(doc))  # only JSON types: no numpy scalar, no tuple
    assert list(doc)[list(doc).index("per_keypoint") - 1] == "groups"  # the block keeps its place
    rec = doc["per_keypoint"][0]
    assert rec["dp_std"] is None and isinstance(rec["p_value"], float) and isinstance(rec["adjusted"], dict)
    pg = res.per_group[(res.per_group["keypoint"] == rec["keypoint"])].set_index("group")
    assert rec["n_by_group"] == {g: int(pg.loc[g, "n_images"]) for g in pg.index}
    assert rec["sdr_by_group"] == {g: float(pg.loc[g, "sdr_2"]) for g in pg.index}


def test_each_image_counts_once_across_runs():
    # An image tested in several runs is one image: the document's count and the anatomy's images both come
    # from Study.first_image_rows, checked here against a plain loop.
    rng = np.random.default_rng(4)
    ids = [f"i{i}" for i in range(30)]
    runs = {0: ids[:20], 1: ids[10:], 2: ids[5:25]}
    preds = pd.DataFrame([{"run": r, "image_id": im, "keypoint": k, "pred_x": rng.normal(), "pred_y": 0.0,
                           "true_x": float(k), "true_y": float(k * k)}
                          for r, images in runs.items() for im in images for k in (1, 2, 3)])
    meta = pd.DataFrame({"image_id": ids, "sex": ["F", "M"] * 15})
    res = audit(preds, meta, attributes=["sex"], spacing_mm=1.0, min_group_size=1, significance=False,
                emit_warnings=False)
    seen, expected = set(), []
    for row, image in enumerate(res.study.row_image):
        if image not in seen:
            seen.add(image)
            expected.append(row)
    assert res.study.first_image_rows.tolist() == expected
    doc = res.to_dict()
    assert doc["n_images"] == 30 and doc["anatomy"]["n_images"] == 30
