"""COCO keypoints input and unlabelled ground truth (v = 0).

Numbers are checked against plain loops over images written here, and the
COCO route against the long-CSV route on the same data.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from fairlandmark import FairlandmarkWarning, InputError, audit
from fairlandmark.cli import main
from fairlandmark.inputs.coco import coco_metadata, coco_to_long, read_coco_predictions, read_coco_truth
from fairlandmark.inputs.convert import write_long
from fairlandmark.stats.significance import SignificanceOptions

NAMES = ["sella", "nasion", "menton"]


def make_coco(rng, n=40, unlabelled=0.15, missing=0.05, noise=2.0):
    """A COCO ground truth and results pair, plus the same data as plain arrays."""
    true = rng.uniform(50, 450, size=(n, 3, 2)).round(1)
    pred = (true + rng.normal(0, noise, size=true.shape)).round(2)
    vis = np.where(rng.random((n, 3)) < unlabelled, 0, rng.choice([1, 2], size=(n, 3)))
    score = np.where(rng.random((n, 3)) < missing, 0.0, rng.uniform(0.2, 1.0, size=(n, 3)).round(3))
    sex = np.where(np.arange(n) % 2 == 0, "F", "M")
    age = rng.integers(9, 19, size=n)
    images = [{"id": 100 + i, "file_name": f"scans/{i:03d}.png", "width": 512, "height": 512,
               "sex": str(sex[i]), "age": int(age[i]), "site": "A" if i < n // 2 else "B"} for i in range(n)]
    anns = []
    for i in range(n):
        kp = np.concatenate([np.where(vis[i, :, None] > 0, true[i], 0.0), vis[i, :, None]], axis=1)
        anns.append({"id": 1000 + i, "image_id": 100 + i, "category_id": 3, "keypoints": kp.ravel().tolist(),
                     "num_keypoints": int((vis[i] > 0).sum()), "area": 1000.0, "iscrowd": 0})
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "skull", "keypoints": NAMES}]}
    results = [{"image_id": 100 + i, "category_id": 3, "score": 0.9,
                "keypoints": np.concatenate([pred[i], score[i, :, None]], axis=1).ravel().tolist()}
               for i in range(n)]
    return gt, results, dict(true=true, pred=pred, vis=vis, score=score, sex=sex, age=age)


def write_json(path, doc):
    path.write_text(json.dumps(doc))
    return str(path)


@pytest.fixture
def coco_files(tmp_path):
    rng = np.random.default_rng(7)
    gt, results, arrays = make_coco(rng)
    return write_json(tmp_path / "gt.json", gt), write_json(tmp_path / "res.json", results), arrays


def loop_metrics(arrays, spacing, threshold):
    """Per (sex, keypoint): SDR over labelled images, MRE over labelled and predicted ones, by plain loops."""
    out = {}
    n = len(arrays["sex"])
    for g in ("F", "M"):
        for k, name in enumerate(NAMES):
            hits = labelled = present = 0
            err_sum = 0.0
            for i in range(n):
                if arrays["sex"][i] != g or arrays["vis"][i, k] == 0:
                    continue
                labelled += 1
                if arrays["score"][i, k] == 0:
                    continue  # a miss
                d = spacing * float(np.sqrt(((arrays["pred"][i, k] - arrays["true"][i, k]) ** 2).sum()))
                present += 1
                err_sum += d
                hits += d <= threshold
            out[(g, name)] = (hits / labelled, err_sum / present, labelled, labelled - present)
    return out


def test_coco_to_long_matches_hand_built_frame(coco_files):
    gt, res, a = coco_files
    frame = coco_to_long(res, gt)
    n = len(a["sex"])
    assert list(frame.columns) == ["image_id", "keypoint", "pred_x", "pred_y", "true_x", "true_y"]
    assert frame["image_id"].tolist() == [str(100 + i) for i in range(n) for _ in NAMES]
    assert frame["keypoint"].tolist() == NAMES * n
    lab = (a["vis"] > 0).ravel()
    np.testing.assert_array_equal(frame["true_x"].to_numpy()[lab], a["true"][..., 0].ravel()[lab])
    assert frame["true_x"].isna().to_numpy().tolist() == (~lab).tolist()
    assert frame["true_y"].isna().to_numpy().tolist() == (~lab).tolist()
    has = (a["score"] > 0).ravel()
    np.testing.assert_array_equal(frame["pred_y"].to_numpy()[has], a["pred"][..., 1].ravel()[has])
    assert frame["pred_x"].isna().to_numpy().tolist() == (~has).tolist()


def test_unlabelled_numbers_against_loops(coco_files):
    gt, res, a = coco_files
    frame = coco_to_long(res, gt)
    meta = coco_metadata(read_coco_truth(gt))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairlandmarkWarning)
        result = audit(frame, meta, attributes=["sex"], spacing_mm=0.1, thresholds_mm=(0.2,),
                       significance=False, min_group_size=1)
    expected = loop_metrics(a, 0.1, 0.2)
    pg = result.per_group.set_index(["group", "keypoint"])
    for (g, name), (sdr, mre, labelled, missing) in expected.items():
        row = pg.loc[(g, name)]
        assert row["sdr_0.2"] == pytest.approx(sdr, abs=1e-12)
        assert row["mre"] == pytest.approx(mre, rel=1e-12)
        assert row["n_missing"] == missing
        assert row["n_unlabelled"] == row["n_images"] - labelled
    pk = result.per_keypoint.set_index("keypoint")
    for name in NAMES:
        assert pk.loc[name, "dp"] == pytest.approx(abs(expected[("F", name)][0] - expected[("M", name)][0]),
                                                   abs=1e-12)
        n_lab = expected[("F", name)][2] + expected[("M", name)][2]
        hits = expected[("F", name)][0] * expected[("F", name)][2] + expected[("M", name)][0] * expected[("M", name)][2]
        assert pk.loc[name, "sdr"] == pytest.approx(hits / n_lab, abs=1e-12)
    overall = result.overall.set_index("family").loc["all"]
    assert overall["n_predictions"] == int((a["vis"] > 0).sum())
    assert overall["n_missing"] == int(((a["vis"] > 0) & (a["score"] == 0)).sum())
    doc = result.to_dict()
    rec = doc["per_keypoint"][0]
    assert set(rec["n_unlabelled_by_group"]) == {"F", "M"}
    assert any("no ground truth" in w for w in doc["warnings"])


def test_unlabelled_point_equals_image_left_out():
    """An unlabelled point gives that keypoint the numbers of the data without that image, not a miss."""
    rng = np.random.default_rng(3)
    n = 30
    true = rng.uniform(0, 100, (n, 2, 2))
    pred = true + rng.normal(0, 1.5, true.shape)
    sex = np.array(["F", "M"] * (n // 2))
    frame = pd.DataFrame({"image_id": np.repeat(np.arange(n).astype(str), 2), "keypoint": np.tile([1, 2], n),
                          "pred_x": pred[..., 0].ravel(), "pred_y": pred[..., 1].ravel(),
                          "true_x": true[..., 0].ravel(), "true_y": true[..., 1].ravel()})
    meta = pd.DataFrame({"image_id": np.arange(n).astype(str), "sex": sex})
    unlabelled = [0, 3, 4]  # images with no ground truth for keypoint 1
    masked = frame.copy()
    rows = masked["image_id"].isin([str(i) for i in unlabelled]) & (masked["keypoint"] == 1)
    masked.loc[rows, ["true_x", "true_y"]] = np.nan
    dropped = frame[~frame["image_id"].isin([str(i) for i in unlabelled])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairlandmarkWarning)
        a = audit(masked, meta, attributes=["sex"], spacing_mm=1.0, significance=False, min_group_size=1)
        b = audit(dropped, meta, attributes=["sex"], spacing_mm=1.0, significance=False, min_group_size=1)
        full = audit(frame, meta, attributes=["sex"], spacing_mm=1.0, significance=False, min_group_size=1)
    ga, gb, gf = (r.per_group.set_index(["group", "keypoint"]) for r in (a, b, full))
    for g in ("F", "M"):
        assert ga.loc[(g, 1), "sdr_2"] == gb.loc[(g, 1), "sdr_2"]
        assert ga.loc[(g, 1), "mre"] == pytest.approx(gb.loc[(g, 1), "mre"], rel=1e-14)
        assert ga.loc[(g, 1), "n_missing"] == 0
        # Keypoint 2 is labelled everywhere: the full data's numbers.
        assert ga.loc[(g, 2), "sdr_2"] == gf.loc[(g, 2), "sdr_2"]
    assert a.per_keypoint.set_index("keypoint").loc[1, "dp"] == b.per_keypoint.set_index("keypoint").loc[1, "dp"]


def test_unlabelled_significance_consistent():
    """Permutations, bootstrap and baseline run with per-keypoint denominators; observed through float32 = float64."""
    rng = np.random.default_rng(11)
    n = 60
    true = rng.uniform(0, 100, (n, 2, 2))
    pred = true + rng.normal(0, 1.5, true.shape)
    true[rng.random((n, 2)) < 0.3] = np.nan  # unlabelled points
    sex = np.array(["F", "M"] * (n // 2))
    from fairlandmark import audit_arrays
    from fairlandmark.stats.significance import _Context  # noqa: PLC2701 - test of the internal kernel path

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairlandmarkWarning)
        res = audit_arrays(pred, true, {"sex": sex}, spacing_mm=1.0, min_group_size=1,
                           significance=SignificanceOptions(permutations=199, bootstrap=199, baseline_repeats=50))
    pk = res.per_keypoint
    assert pk["p_value"].between(1 / 200, 1).all()
    assert (pk["dp_ci_low"] <= pk["dp_ci_high"]).all()
    ctx = _Context(res.study, res.thresholds, res.min_group_size, res.observed)
    dp32, _ = ctx.identity_stats("sex")
    np.testing.assert_array_equal(dp32, res.observed["sex"].dp.mean(axis=0))


def test_unlabelled_permutation_type_one_error():
    """Null data whose labelling depends on the group: the permutation test keeps its level."""
    rng = np.random.default_rng(2026)
    n, n_sets, alpha = 40, 120, 0.1
    p_values = []
    sex = np.array(["F"] * (n // 2) + ["M"] * (n // 2))
    from fairlandmark import audit_arrays

    for _ in range(n_sets):
        true = np.zeros((n, 1, 2))
        pred = rng.normal(0, 1.6, (n, 1, 2))
        labelled = rng.random(n) < np.where(sex == "F", 0.5, 0.9)  # F loses many labels
        true[~labelled] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FairlandmarkWarning)
            res = audit_arrays(pred, true, {"sex": sex}, spacing_mm=1.0, min_group_size=1,
                               significance=SignificanceOptions(permutations=99, bootstrap=0, baseline_repeats=0))
        p_values.append(res.per_keypoint["p_value"].iloc[0])
    rate = np.mean(np.asarray(p_values) <= alpha)
    # Binomial(120, 0.1): mean 12, sd 3.3; the bound allows ~2.4 sd.
    assert rate <= alpha + 0.07, rate


def test_round_trip_through_csv_and_cli(coco_files, tmp_path):
    gt, res, a = coco_files
    out, meta_out = tmp_path / "long.csv", tmp_path / "meta.csv"
    assert main(["convert", "--truth", gt, "--pred", res, "--out", str(out),
                 "--metadata-from-coco", str(meta_out)]) == 0
    meta = pd.read_csv(meta_out, dtype={"image_id": str})
    assert list(meta.columns) == ["image_id", "sex", "age", "site"]
    assert meta["sex"].tolist() == list(a["sex"])
    direct = coco_to_long(res, gt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairlandmarkWarning)
        from_csv = audit(str(out), str(meta_out), attributes=["sex", "site"], spacing_mm=0.1,
                         significance=False, min_group_size=1)
        from_frame = audit(direct, coco_metadata(gt), attributes=["sex", "site"], spacing_mm=0.1,
                           significance=False, min_group_size=1)
    pd.testing.assert_frame_equal(from_csv.per_group, from_frame.per_group)
    pd.testing.assert_frame_equal(from_csv.per_keypoint, from_frame.per_keypoint)


def test_no_unlabelled_keeps_columns(tmp_path):
    rng = np.random.default_rng(1)
    gt, results, _ = make_coco(rng, unlabelled=0.0)
    g, r = write_json(tmp_path / "g.json", gt), write_json(tmp_path / "r.json", results)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairlandmarkWarning)
        res = audit(coco_to_long(r, g), coco_metadata(g), attributes=["sex"], spacing_mm=0.1,
                    significance=False, min_group_size=1)
    assert res.study.labelled is None
    assert "n_unlabelled" not in res.per_group.columns
    assert "n_unlabelled_by_group" not in res.to_dict()["per_keypoint"][0]


def test_image_key_file_stem_and_metadata(coco_files):
    gt, res, a = coco_files
    frame = coco_to_long(res, gt, image_key="file_stem")
    assert frame["image_id"].iloc[0] == "000"
    meta = coco_metadata(read_coco_truth(gt, image_key="file_stem"), fields=["age"])
    assert meta.columns.tolist() == ["image_id", "age"]
    assert meta["age"].tolist() == a["age"].tolist()


def test_instances_refused_or_largest(tmp_path):
    rng = np.random.default_rng(5)
    gt, results, arrays = make_coco(rng, n=6, unlabelled=0.0, missing=0.0)
    extra = dict(gt["annotations"][2], id=99, area=5000.0,
                 keypoints=[1.0, 1.0, 2, 2.0, 2.0, 2, 3.0, 3.0, 2])
    gt["annotations"].append(extra)
    g = write_json(tmp_path / "g.json", gt)
    with pytest.raises(InputError, match=r"image '102' has 2 annotations of category 'skull'.*pass instance largest"):
        read_coco_truth(g)
    truth = read_coco_truth(g, instance="largest")
    assert truth.true[2].tolist() == [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]
    # Predictions: the highest score wins.
    better = dict(results[4], score=0.95, keypoints=[9.0, 9.0, 1.0] * 3)
    results.append(better)
    r = write_json(tmp_path / "r.json", results)
    with pytest.raises(InputError, match=r"image '104' has 2 predictions"):
        read_coco_predictions(r, truth)
    pred, has = read_coco_predictions(r, truth, instance="largest")
    assert pred[4].tolist() == [[9.0, 9.0]] * 3 and has.all()
    # Crowd annotations are ignored.
    gt["annotations"][-1]["iscrowd"] = 1
    assert read_coco_truth(write_json(tmp_path / "g2.json", gt)).true[2].tolist() == arrays["true"][2].tolist()


@pytest.mark.parametrize("mutate, pattern", [
    (lambda gt, r: gt["annotations"][1].update(keypoints=[1, 2, 2]),
     r"gt\.json: annotation 1 \(image 101\) has 3 keypoint values; category 'skull' has 3 keypoints, so give "
     r"3 x 3 = 9"),
    (lambda gt, r: r[2].update(keypoints=[1, 2, 1] * 4),
     r"res\.json: prediction 2 \(image 102\) has 12 keypoint values"),
    (lambda gt, r: gt["annotations"][0].update(image_id=999),
     r"gt\.json: annotation 0 refers to image_id 999, which is not in the ground truth"),
    (lambda gt, r: r[1].update(image_id=999),
     r"res\.json: prediction 1 refers to image_id 999, which is not in the ground truth"),
    (lambda gt, r: gt["categories"][1].pop("keypoints"),
     r"gt\.json: no category has a 'keypoints' list of names"),
    (lambda gt, r: r[0].update(category_id=42),
     r"res\.json: prediction 0 has category_id 42, which is not a category of the ground truth"),
    (lambda gt, r: gt.pop("annotations"),
     r"gt\.json: a COCO ground-truth file .* 'annotations' is missing"),
    (lambda gt, r: gt["images"].append({"id": 100}),
     r"gt\.json: image id 100 appears twice"),
    (lambda gt, r: gt["annotations"][0]["keypoints"].__setitem__(0, "x"),
     r"gt\.json: annotation 0 \(image 100\): keypoint values must be numbers"),
    (lambda gt, r: gt["categories"].append({"id": 4, "name": "hand", "keypoints": ["a"]}),
     r"categories 'skull', 'hand' all have keypoints; choose one with category"),
    (lambda gt, r: gt["categories"][1].update(keypoints=["a", "a", "b"]),
     r"names keypoint 'a' twice"),
    (lambda gt, r: [p.update(category_id=1) for p in r],
     r"res\.json: no prediction has category_id 3"),
])
def test_malformed(tmp_path, mutate, pattern):
    rng = np.random.default_rng(0)
    gt, results, _ = make_coco(rng, n=4)
    mutate(gt, results)
    g, r = write_json(tmp_path / "gt.json", gt), write_json(tmp_path / "res.json", results)
    with pytest.raises(InputError, match=pattern):
        coco_to_long(r, g)


def test_cli_errors_exit_2(tmp_path, capsys, coco_files):
    gt, res, _ = coco_files
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["convert", "--truth", str(bad), "--pred", res, "--out", str(tmp_path / "o.csv")]) == 2
    assert "is not valid JSON" in " ".join(capsys.readouterr().err.split())
    wide = tmp_path / "t.csv"
    wide.write_text("a,1,2\n")
    assert main(["convert", "--truth", str(wide), "--pred", str(wide), "--out", str(tmp_path / "o.csv"),
                 "--category", "skull"]) == 2
    assert "--category: applies to COCO files" in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "o.csv").exists()


def test_half_empty_truth_is_refused():
    frame = pd.DataFrame({"image_id": ["a"], "keypoint": [1], "pred_x": [1.0], "pred_y": [1.0],
                          "true_x": [np.nan], "true_y": [2.0]})
    meta = pd.DataFrame({"image_id": ["a"], "sex": ["F"]})
    with pytest.raises(InputError, match=r"row 2, column 'true_x' is empty; every row needs a ground-truth "
                                         r"coordinate \(leave both true_x and true_y empty"):
        audit(frame, meta, significance=False, min_group_size=1)


def test_wrist_width_on_unlabelled_keypoint_is_refused():
    frame = pd.DataFrame({"image_id": ["a", "a"], "keypoint": [1, 5], "pred_x": [1.0, 2.0], "pred_y": [1.0, 2.0],
                          "true_x": [np.nan, 0.0], "true_y": [np.nan, 0.0]})
    meta = pd.DataFrame({"image_id": ["a"], "sex": ["F"]})
    with pytest.raises(InputError, match=r"image 'a' has no ground truth for wrist_width keypoint 1 or 5"):
        audit(frame, meta, wrist_width="1,5,50", significance=False, min_group_size=1)


def test_write_long_keeps_unlabelled_empty(tmp_path, coco_files):
    gt, res, _ = coco_files
    frame = coco_to_long(res, gt)
    out = tmp_path / "l.csv"
    write_long(frame, out)
    back = pd.read_csv(out, dtype={"image_id": str})
    assert back["true_x"].isna().sum() == frame["true_x"].isna().sum() > 0


def test_group_with_few_labelled_images_leaves_that_keypoint_dp():
    """min_group_size also counts labelled images per keypoint: a thin (group, keypoint) is out of its DP."""
    n = 12
    true = np.zeros((n, 2, 2))
    pred = np.zeros((n, 2, 2))
    pred[:6, :, 0] = 3.0  # group F misses everything, M hits everything
    sex = np.array(["F"] * 6 + ["M"] * 6)
    true[:4, 0] = np.nan  # F keeps 2 labelled images of keypoint 1
    from fairlandmark import audit_arrays

    with pytest.warns(FairlandmarkWarning, match=r"attribute 'sex': 1 \(group, keypoint\) pair\(s\) have fewer than "
                                                 r"min_group_size=3 images with ground truth \(e\.g\. group 'F', "
                                                 r"keypoint 1: 2 in run 0\)"):
        res = audit_arrays(pred, true, {"sex": sex}, spacing_mm=1.0, min_group_size=3,
                           significance=SignificanceOptions(permutations=99, bootstrap=20, baseline_repeats=10))
    pk = res.per_keypoint.set_index("keypoint")
    assert np.isnan(pk.loc[1, "dp"]) and np.isnan(pk.loc[1, "p_value"])
    assert pk.loc[2, "dp"] == 1.0
    pg = res.per_group.set_index(["group", "keypoint"])
    assert not pg.loc[("F", 1), "in_dp"] and pg.loc[("F", 2), "in_dp"] and pg.loc[("M", 1), "in_dp"]
    assert pg.loc[("F", 1), "sdr_2"] == 0.0  # still reported
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairlandmarkWarning)
        low = audit_arrays(pred, true, {"sex": sex}, spacing_mm=1.0, significance=False, min_group_size=2)
    assert low.per_keypoint.set_index("keypoint").loc[1, "dp"] == 1.0


def test_cli_spells_options_as_flags(tmp_path, capsys):
    rng = np.random.default_rng(0)
    gt, results, _ = make_coco(rng, n=4)
    gt["annotations"].append(dict(gt["annotations"][0], id=77))
    g, r = write_json(tmp_path / "gt.json", gt), write_json(tmp_path / "res.json", results)
    assert main(["convert", "--truth", g, "--pred", r, "--out", str(tmp_path / "o.csv")]) == 2
    assert "keep one, or pass --instance largest" in " ".join(capsys.readouterr().err.split())
