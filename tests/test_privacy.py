"""Attribute inference (issue 4): real properties, not smoke.

* a planted group effect is found (high balanced accuracy, small p, the right keypoints);
* the real ISBI 2015 inter-observer errors with random labels stay at chance;
* folds never split an image (a 1-nearest-neighbour memoriser would expose a leak);
* class-too-small, bad options and bad files are one-line InputErrors / exit 2;
* the same seed gives the same bytes, for any n_jobs.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from fairlandmark.audit import prepare_study
from fairlandmark.cli import main
from fairlandmark.exceptions import FairlandmarkWarning, InputError
from fairlandmark.stats.folds import stratified_image_folds
from fairlandmark.stats.privacy import (
    _pipeline,
    attribute_inference,
    audit_privacy,
    default_estimator,
    privacy_block,
    row_folds,
)

FAST = dict(estimator=default_estimator(n_estimators=15), n_repeats=2)


def _synthetic(n_images=80, k=6, runs=1, effect=0.0, effect_kps=(2, 5), missing=0.0, seed=0, classes=("old", "young")):
    """Long-format errors (error_mm) with a planted shift on ``effect_kps`` for the first class."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"img{i:03d}" for i in range(n_images)])
    target = np.array(classes)[np.arange(n_images) % len(classes)]
    sex = np.where(rng.random(n_images) < 0.5, "F", "M")
    frames = []
    for r in range(runs):
        err = rng.gamma(2.0, 1.0, size=(n_images, k))
        for kp in effect_kps:
            err[target == classes[0], kp - 1] += effect
        err[rng.random(err.shape) < missing] = np.nan
        frames.append(pd.DataFrame({"run": str(r), "image_id": np.repeat(ids, k),
                                    "keypoint": np.tile(np.arange(1, k + 1), n_images), "error_mm": err.ravel()}))
    preds = pd.concat(frames, ignore_index=True)
    meta = pd.DataFrame({"image_id": ids, "age_group": target, "sex": sex})
    return preds, meta


def _wide(path):
    frame = pd.read_csv(path, header=None, dtype={0: str})
    return frame[0].to_numpy(), frame.iloc[:, 1:].to_numpy(float).reshape(len(frame), -1, 2)


# -- the two central properties ------------------------------------------------


def test_planted_effect_is_found_with_small_p_and_right_keypoints():
    preds, meta = _synthetic(n_images=80, runs=2, effect=2.0, missing=0.03)
    with pytest.warns(FairlandmarkWarning, match="missing prediction"):
        res = attribute_inference(preds, meta, target="age_group", n_permutations=19, seed=1,
                                  permutation_test="refit", **FAST)
    row = res.scores.iloc[0]
    assert row["balanced_accuracy"] > 0.85
    assert row["p_value"] == pytest.approx(1 / 20)  # no permuted labelling reached the observed score
    assert row["null_mean"] < 0.65
    assert row["roc_auc"] > 0.9
    assert row["n_rows"] == 160 and row["n_images"] == 80 and row["n_missing"] > 0
    assert set(res.importance["keypoint"].head(2)) == {2, 5}
    assert res.top_keypoints()[:2] in ([2, 5], [5, 2])
    assert res.risk_line.startswith("errors predict age_group with balanced accuracy 0.")
    assert "(chance 0.50, p = 0.05)" in res.risk_line
    assert res.risk_line.endswith(f"most informative keypoints: {', '.join(map(str, res.top_keypoints()))}")


def test_real_interobserver_errors_with_random_labels_stay_at_chance(shared_data):
    folder = shared_data
    if not (folder / "isbi2015_all_junior.csv").exists() or not (folder / "isbi2015_all_senior.csv").exists():
        pytest.skip(f"ISBI 2015 junior/senior annotation files not in {folder}")
    ids, junior = _wide(folder / "isbi2015_all_junior.csv")
    senior_ids, senior = _wide(folder / "isbi2015_all_senior.csv")
    senior = senior[pd.Index(senior_ids).get_indexer(ids)]
    n, k, _ = junior.shape
    assert (n, k) == (400, 19)
    preds = pd.DataFrame({"image_id": np.repeat(ids, k), "keypoint": np.tile(np.arange(1, k + 1), n),
                          "pred_x": junior[..., 0].ravel(), "pred_y": junior[..., 1].ravel(),
                          "true_x": senior[..., 0].ravel(), "true_y": senior[..., 1].ravel()})
    labels = np.random.default_rng(2024).permutation(np.repeat(["young", "old"], n // 2))
    meta = pd.DataFrame({"image_id": ids, "age_group": labels})
    res = attribute_inference(preds, meta, target="age_group", spacing_mm=1.0, n_permutations=19, seed=0, **FAST)
    row = res.scores.iloc[0]
    assert res.unit == "mm"
    assert row["majority_rate"] == 0.5 and row["chance"] == 0.5
    assert abs(row["balanced_accuracy"] - 0.5) < 0.08
    assert abs(row["accuracy"] - 0.5) < 0.08
    assert row["p_value"] > 0.1
    assert "do not predict age_group better than chance" in res.risk_line


# -- folds -------------------------------------------------------------------------


def test_row_folds_never_split_an_image_and_match_the_cnn_control_folds():
    rng = np.random.default_rng(0)
    ids = np.array([f"i{j:02d}" for j in range(30)])
    labels = np.array(["a", "b", "c"])[np.arange(30) % 3]
    # three runs, each holding a random subset of the images (as hold-outs do), in shuffled order
    rows = [(r, i) for r in range(3) for i in ids if rng.random() < 0.8]
    rng.shuffle(rows)
    row_image = np.array([i for _, i in rows])
    row_label = labels[pd.Index(ids).get_indexer(row_image)]
    folds = row_folds(row_image, row_label, n_splits=4, seed=7)
    present = np.unique(row_image)
    control = stratified_image_folds(present, labels[pd.Index(ids).get_indexer(present)], n_splits=4, seed=7)
    tested = []
    for (train, test), (_, control_test) in zip(folds, control):
        assert set(row_image[train]).isdisjoint(row_image[test])
        assert sorted(np.concatenate([train, test])) == list(range(len(rows)))
        assert set(row_image[test]) == set(control_test)  # identical folds to the image classifier
        tested.extend(set(row_image[test]))
    assert sorted(tested) == sorted(present)  # every image tested exactly once


def test_folds_do_not_leak_a_memorised_image_across_runs():
    # Each image has unique, random errors, repeated identically in 4 runs, and a random label.
    # A 1-nearest-neighbour classifier memorises images: if any image were in both train and test,
    # it would look it up and score ~1.0. With image-level folds it cannot beat chance.
    rng = np.random.default_rng(5)
    n, k, runs = 60, 4, 4
    ids = np.array([f"m{i:02d}" for i in range(n)])
    err = rng.gamma(2.0, 1.0, size=(n, k))
    preds = pd.concat([pd.DataFrame({"run": str(r), "image_id": np.repeat(ids, k),
                                     "keypoint": np.tile(np.arange(1, k + 1), n), "error_mm": err.ravel()})
                       for r in range(runs)])
    meta = pd.DataFrame({"image_id": ids, "grp": rng.permutation(np.repeat(["x", "y"], n // 2))})
    res = attribute_inference(preds, meta, target="grp", estimator=KNeighborsClassifier(n_neighbors=1),
                              n_permutations=0, n_repeats=1)
    assert res.scores.iloc[0]["n_rows"] == n * runs
    assert res.scores.iloc[0]["balanced_accuracy"] < 0.7
    assert res.folds["n_test_images"].sum() == n
    assert (res.folds["n_test_rows"] == res.folds["n_test_images"] * runs).all()
    # the same memoriser with row-level folds (an image split across runs) would be perfect:
    from sklearn.model_selection import StratifiedKFold

    X, y = np.tile(err, (runs, 1)), np.tile(meta["grp"].to_numpy(), runs)
    leaky = cross_val_score(KNeighborsClassifier(n_neighbors=1), X, y,
                            cv=StratifiedKFold(5, shuffle=True, random_state=0))
    assert leaky.mean() > 0.95


def test_observed_score_equals_sklearn_cross_val_score_on_the_same_folds():
    preds, meta = _synthetic(n_images=50, effect=1.0, missing=0.05, seed=3)
    with pytest.warns(FairlandmarkWarning):
        res = attribute_inference(preds, meta, target="age_group", n_permutations=0, seed=4, **FAST)
    study = res.study
    y = study.coding.base_codes["age_group"]
    cv = row_folds(study.row_image, y, n_splits=5, seed=4)
    expected = cross_val_score(_pipeline(FAST["estimator"], 4), study.errors, y, cv=cv, scoring="balanced_accuracy")
    assert res.scores.iloc[0]["balanced_accuracy"] == pytest.approx(expected.mean(), abs=1e-12)
    assert list(res.folds["balanced_accuracy"]) == pytest.approx(list(expected), abs=1e-12)
    assert np.isnan(res.scores.iloc[0]["p_value"])
    assert "no permutation test" in res.risk_line


# -- missing predictions, within, multiclass ---------------------------------------------


def test_missingness_itself_is_a_feature_and_nothing_is_dropped():
    preds, meta = _synthetic(n_images=60, k=4, effect_kps=(), seed=8)
    old = set(meta.loc[meta["age_group"] == "old", "image_id"])
    drop = preds["image_id"].isin(old) & (preds["keypoint"] == 3)
    preds.loc[drop, "error_mm"] = np.nan  # the model fails on keypoint 3 for every old image
    with pytest.warns(FairlandmarkWarning, match="median error of its keypoint"):
        res = attribute_inference(preds, meta, target="age_group", n_permutations=9, **FAST)
    row = res.scores.iloc[0]
    assert row["n_rows"] == 60 and row["n_missing"] == 30
    assert row["balanced_accuracy"] > 0.95
    assert res.importance["keypoint"].iloc[0] == 3
    assert "median" in res.to_dict()["missing_policy"]


def test_within_repeats_inside_each_level():
    preds, meta = _synthetic(n_images=100, effect=2.0, seed=9)
    res = attribute_inference(preds, meta, target="age_group", within="sex", n_permutations=9,
                              permutation_test="refit", **FAST)
    sc = res.scores
    assert list(sc["analysis"]) == ["sex=F", "sex=M"] and list(sc["level"]) == ["F", "M"]
    for row in sc.to_dict("records"):
        sub = meta[meta["sex"] == row["level"]]
        assert row["n_images"] == len(sub)
        assert row["images_by_class"] == sub["age_group"].value_counts().sort_index().to_dict()
        assert row["p_value"] == pytest.approx(0.1)
    assert [line.split(":")[0] for line in res.risk_lines] == ["within sex=F", "within sex=M"]
    assert set(res.importance["analysis"]) == {"sex=F", "sex=M"}
    # a binned attribute's groups already name it: "age<14", not "age=age<14"
    meta["age"] = np.where(meta["age_group"] == "old", 16, 11)
    res = attribute_inference(preds, meta, target="sex", within="age", bins={"age": [14]}, n_permutations=0, **FAST)
    assert list(res.scores["analysis"]) == ["age<14", "age>=14"] == list(res.scores["level"])
    assert res.risk_lines[0].startswith("within age<14: errors predict sex")


def test_three_classes_chance_and_auc():
    preds, meta = _synthetic(n_images=60, effect=3.0, seed=2, classes=("a", "b", "c"))
    res = attribute_inference(preds, meta, target="age_group", n_permutations=0, progress=True, **FAST)
    row = res.scores.iloc[0]
    assert row["n_classes"] == 3 and row["chance"] == pytest.approx(1 / 3)
    assert 0.5 < row["roc_auc"] <= 1.0


# -- errors -----------------------------------------------------------------------


def test_class_smaller_than_the_folds_is_a_clear_error():
    preds, meta = _synthetic(n_images=40, seed=1)
    keep = meta[(meta["age_group"] == "young") | meta.index.isin([0, 2, 4])]
    preds = preds[preds["image_id"].isin(keep["image_id"])]
    with pytest.raises(InputError, match=r"class 'old' has 3 image\(s\), fewer than the 5 folds; use n_splits 3"):
        attribute_inference(preds, keep, target="age_group")
    res = attribute_inference(preds, keep, target="age_group", n_splits=3, n_permutations=0, **FAST)
    assert res.scores.iloc[0]["images_by_class"] == {"old": 3, "young": 20}
    meta2 = meta.copy()
    meta2.loc[meta2["age_group"] == "old", "sex"] = "M"
    meta2.loc[[0], "sex"] = "F"  # one old woman only
    with pytest.raises(InputError, match=r"class 'old' has 1 image\(s\) within sex=F.*drop within sex"):
        attribute_inference(preds, meta2.loc[meta2["image_id"].isin(keep["image_id"])], target="age_group",
                            within="sex")
    meta3 = meta.assign(sex=np.where(meta["age_group"] == "old", "M", "F"))
    with pytest.raises(InputError, match=r"single class \('young'\) within sex=F"):
        attribute_inference(*_synthetic(n_images=40, seed=1)[:1], meta3, target="age_group", within="sex")


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_splits=1), "n_splits"),
    (dict(n_permutations=-1), "n_permutations"),
    (dict(seed=-3), "seed"),
    (dict(n_jobs=0), "n_jobs"),
    (dict(estimator=LinearRegression()), "not a scikit-learn classifier"),
    (dict(within="age_group"), "is the target itself"),
    (dict(target="nope"), "missing column 'nope'"),
])
def test_bad_options_are_input_errors(kwargs, message):
    preds, meta = _synthetic(n_images=20, seed=0)
    kwargs = {"target": "age_group", **kwargs}
    with pytest.raises(InputError, match=message) as info:
        attribute_inference(preds, meta, **kwargs)
    assert "\n" not in str(info.value)


# -- reproducibility, study input, audit section ------------------------------------


def test_same_seed_gives_identical_output_for_any_n_jobs():
    preds, meta = _synthetic(n_images=40, runs=2, effect=0.7, seed=6)
    opts = dict(target="age_group", n_permutations=6, seed=11, **FAST)
    a = attribute_inference(preds, meta, **opts).to_json()
    b = attribute_inference(preds, meta, **opts).to_json()
    c = attribute_inference(preds, meta, n_jobs=2, **opts).to_json()
    assert a == b == c
    d = attribute_inference(preds, meta, **{**opts, "seed": 12}).to_json()
    assert d != a


def test_study_input_and_audit_privacy_section():
    preds, meta = _synthetic(n_images=40, effect=2.0, seed=4)
    study = prepare_study(preds, meta, attributes=["age_group", "sex"])
    with pytest.raises(InputError, match="pass metadata=None"):
        attribute_inference(study, meta, target="age_group")
    results = audit_privacy(study, within="sex", n_permutations=0, n_splits=3, **FAST)
    assert [r.target for r in results] == ["age_group", "sex"]
    assert [r.within for r in results] == ["sex", None]
    doc = results[0].to_dict()
    json.dumps(doc, allow_nan=False)
    assert doc["kind"] == "attribute_inference" and doc["schema_version"] == "1.0"
    assert [a["analysis"] for a in doc["analyses"]] == ["sex=F", "sex=M"]
    assert {"balanced_accuracy", "p_value", "importance", "risk_line", "top_keypoints"} <= set(doc["analyses"][0])
    block = privacy_block(results)
    assert set(block["attributes"]) == {"age_group", "sex"}
    report = pytest.importorskip("fairlandmark.render.html")
    records = report.privacy_records({"privacy": json.loads(json.dumps(block))})
    assert [(r["attribute"], r["analysis"]) for r in records] == [
        ("age_group", "sex=F"), ("age_group", "sex=M"), ("sex", "all")]


# -- CLI ------------------------------------------------------------------------------


def _files(tmp_path, **kwargs):
    preds, meta = _synthetic(**kwargs)
    p, m = tmp_path / "preds.csv", tmp_path / "meta.csv"
    preds.to_csv(p, index=False)
    meta.to_csv(m, index=False)
    return str(p), str(m)


def test_cli_end_to_end(tmp_path, capsys):
    p, m = _files(tmp_path, n_images=80, runs=2, effect=2.0, seed=3)
    out = tmp_path / "privacy.json"
    args = ["privacy", p, m, "--target", "age_group", "--within", "sex", "--folds", "3", "--permutations", "19",
            "--trees", "10", "--repeats", "2", "--seed", "2", "--json", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "Attribute inference" in text and "within sex=F: errors predict age_group" in text
    doc = json.loads(out.read_text())
    assert doc["target"] == "age_group" and doc["within"] == "sex" and doc["n_splits"] == 3
    assert len(doc["analyses"]) == 2 and len(doc["analyses"][0]["importance"]) == 6
    first = out.read_text()
    assert main(args + ["--quiet"]) == 0
    assert out.read_text() == first  # same seed, same bytes
    quiet = capsys.readouterr().out
    assert quiet.splitlines()[0].startswith("within sex=F: errors")


def _exit_code(argv):
    try:
        return main(argv)
    except SystemExit as exc:  # argparse usage errors
        return exc.code


@pytest.mark.parametrize("extra, message", [
    (["--target", "nope"], "missing column 'nope'"),
    (["--target", "age_group", "--folds", "30"], "fewer than the 30 folds; use --folds 20"),
    (["--target", "age_group", "--folds", "1"], "--folds"),
    (["--target", "age_group", "--n-jobs", "0"], "--n-jobs"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, extra, message):
    p, m = _files(tmp_path, n_images=40, seed=3)
    code = _exit_code(["privacy", p, m, "--permutations", "0", "--trees", "5", *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_audit_privacy_arguments_run_the_section(capsys):
    import argparse

    from fairlandmark.cli.privacy import add_audit_privacy_arguments, privacy_from_audit_args
    from fairlandmark.render.console import render_privacy
    from fairlandmark.render.console import make_console

    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    add_audit_privacy_arguments(parser)
    preds, meta = _synthetic(n_images=40, effect=2.0, seed=4)
    study = prepare_study(preds, meta, attributes=["age_group", "sex"])
    assert privacy_from_audit_args(study, parser.parse_args([])) == []  # opt-in
    args = parser.parse_args(["--privacy", "--privacy-permutations", "19", "--privacy-trees", "5",
                              "--privacy-folds", "3", "--privacy-repeats", "1", "--seed", "3"])
    results = privacy_from_audit_args(study, args)
    assert [r.target for r in results] == ["age_group", "sex"] and results[0].settings["seed"] == 3
    render_privacy(results[0], make_console())
    assert "errors predict age_group" in capsys.readouterr().out
