"""Procrustes alignment and the fairness map (figure, HTML, demo report)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

import fairlandmark
from fairlandmark.exceptions import InputError
from fairlandmark.stats import procrustes
from fairlandmark.stats.procrustes import generalized_procrustes, optimal_rotation


def _rotation(theta):
    c, s = np.cos(theta), np.sin(theta)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)


def _procrustes_distance(a, b):
    """Residual of the best similarity fit of b onto a, both centred and unit size (written with scipy)."""
    from scipy.linalg import orthogonal_procrustes

    a = a - a.mean(0)
    b = b - b.mean(0)
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    r, _ = orthogonal_procrustes(b, a)
    return float(np.linalg.norm(b @ r - a))


def test_generalized_procrustes_recovers_the_template():
    rng = np.random.default_rng(0)
    template = rng.normal(size=(12, 2)) * 20
    n = 200
    shapes = (template[None] + rng.normal(0, 0.5, (n, 12, 2))) @ _rotation(rng.uniform(0, 2 * np.pi, n))
    shapes = shapes * rng.uniform(0.5, 2.0, (n, 1, 1)) + rng.uniform(-100, 100, (n, 1, 2))
    res = generalized_procrustes(shapes)
    assert res.converged
    assert _procrustes_distance(template, res.mean_shape) < 0.01
    # Each aligned shape is at its Procrustes optimum against the mean (no better rotation exists).
    unit_mean = res.mean_shape / np.linalg.norm(res.mean_shape)
    for i in range(0, n, 37):
        assert abs(np.linalg.norm(res.aligned[i] - unit_mean) - _procrustes_distance(unit_mean, shapes[i])) < 1e-9
    # Centred, unit centroid size.
    np.testing.assert_allclose(res.aligned.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(np.sqrt((res.aligned ** 2).sum(axis=(1, 2))), 1, atol=1e-12)


def test_mean_shape_keeps_the_first_image_orientation_and_scale():
    rng = np.random.default_rng(1)
    template = rng.normal(size=(8, 2)) * 10
    shapes = np.stack([template + rng.normal(0, 0.2, template.shape) for _ in range(30)])
    res = generalized_procrustes(shapes @ _rotation(0.0) + 5.0)
    centred = template - template.mean(0)
    np.testing.assert_allclose(res.mean_shape, centred, atol=0.5)  # same frame, same size (no rotation)


def test_optimal_rotation_never_reflects():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(50, 6, 2))
    b = a * np.array([1.0, -1.0])  # mirror images: the best orthogonal map is a reflection
    r = optimal_rotation(a, b)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)


def test_degenerate_input_is_refused():
    with pytest.raises(InputError, match="all its landmarks at one point"):
        generalized_procrustes(np.zeros((2, 3, 2)))
    with pytest.raises(InputError, match=r"expected configurations of shape \(n, K, 2\)"):
        generalized_procrustes(np.zeros((2, 3)))


def _result(k, *, names=False, seed=0, n=80, significance=None):
    rng = np.random.default_rng(seed)
    true = rng.uniform(0, 100, (n, k, 2))
    pred = true + rng.normal(0, 1, true.shape)
    pred[1::2, 0] += rng.normal(0, 3, (n // 2, 2))  # keypoint 1 worse for group M
    kps = [f"landmark-{i}" for i in range(k)] if names else None
    return fairlandmark.audit_arrays(pred, true, {"sex": ["F", "M"] * (n // 2), "site": rng.choice(["a", "b"], n)},
                                     spacing_mm=1.0, keypoints=kps, significance=significance, curves=False)


def test_anatomy_in_json_matches_procrustes_of_unique_images():
    res = _result(10)
    doc = res.to_dict()
    block = doc["anatomy"]
    assert block["keypoints"] == list(range(1, 11)) and block["n_images"] == 80 and block["unit"] == "mm"
    expected = generalized_procrustes(res.study.true_xy).mean_shape
    np.testing.assert_allclose(block["mean_shape"], expected)


@pytest.mark.parametrize("k, names", [(10, False), (50, False), (19, True)])
def test_map_renders_for_10_to_50_keypoints_and_names(k, names):
    pytest.importorskip("matplotlib")
    from fairlandmark.render.fairness_map import fairness_map

    res = _result(k, names=names)
    fig = fairness_map(res)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
    assert len(panels) == 3  # sex, site, sex&site
    labels = {t.get_text() for t in panels[0].texts}
    assert labels == {str(x) for x in res.keypoints}


def test_map_colours_dp_above_chance_and_marks_significance():
    pytest.importorskip("matplotlib")
    from fairlandmark.render.fairness_map import fairness_map, map_values

    res = _result(10, significance=dict(permutations=999, bootstrap=0, baseline_repeats=100))
    doc = res.to_dict()
    values, significant, survives, label = map_values(doc, "sex")
    pk = res.per_keypoint[res.per_keypoint["attribute"] == "sex"]
    np.testing.assert_allclose(values, pk["dp"] - pk["baseline_mean"])
    assert label.startswith("DP above chance") and survives is None
    np.testing.assert_array_equal(significant, pk["significant"].to_numpy())
    assert significant[0]  # the planted keypoint
    values, _, _, label = map_values(doc, "sex", color_by="dp")
    np.testing.assert_allclose(values, pk["dp"])
    # "Survives adjustment" is drawn when the per-keypoint records carry adjusted.significant.
    for rec in doc["per_keypoint"]:
        rec["adjusted"] = {"significant": rec["keypoint"] == 1 and rec["attribute"] == "sex"}
    _, _, survives, _ = map_values(doc, "sex")
    assert survives.tolist() == [True] + [False] * 9
    fig = fairness_map(doc, attribute="sex")
    assert "survives adjustment" in [t.get_text() for t in fig.legends[0].get_texts()]
    with pytest.raises(InputError, match="color_by"):
        map_values(doc, "sex", color_by="rainbow")


def test_no_coordinates_no_map_with_a_note():
    pytest.importorskip("matplotlib")
    from fairlandmark.render.fairness_map import fairness_map
    from fairlandmark.render.html import to_html

    frame = pd.DataFrame({"image_id": np.repeat(["a", "b", "c", "d"], 2), "keypoint": np.tile([1, 2], 4),
                          "error_mm": [1.0, 2.0, 3.0, 1.0, 2.0, 2.0, 1.0, 3.0]})
    meta = pd.DataFrame({"image_id": ["a", "b", "c", "d"], "sex": ["F", "F", "M", "M"]})
    res = fairlandmark.audit(frame, meta, min_group_size=1)
    doc = res.to_dict()
    assert doc["anatomy"] is None
    with pytest.raises(InputError, match="needs landmark coordinates"):
        fairness_map(doc)
    html = to_html(doc)
    assert "The fairness map needs landmark coordinates" in html


def test_demo_report_has_the_fairness_map(tmp_path):
    pytest.importorskip("matplotlib")
    from fairlandmark.cli import main

    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--images", "120", "--runs", "2", "--permutations", "50",
                 "--bootstrap", "20", "--quiet"])
    assert code == 0
    html = (out / "report.html").read_text()
    assert "Fairness map: each keypoint at its mean position after Procrustes alignment" in html
    import json

    doc = json.loads((out / "audit.json").read_text())
    assert len(doc["anatomy"]["mean_shape"]) == 37 and doc["curves"]["records"]


def test_anatomy_of_a_large_archive_comes_from_an_evenly_spaced_sample(monkeypatch):
    from fairlandmark.stats import procrustes

    res = _result(10)
    full = res.to_dict()["anatomy"]
    monkeypatch.setattr(procrustes, "MAX_SHAPE_IMAGES", 20)
    block = procrustes.mean_shape_of_study(res.study)
    assert block["n_images"] == 20 and "evenly spaced sample of 20 of the 80 images" in block["method"]
    picked = np.linspace(0, 79, 20).round().astype(int)  # the study's images are one row block each, in order
    np.testing.assert_allclose(block["mean_shape"], generalized_procrustes(res.study.true_xy[picked]).mean_shape)
    assert full["n_images"] == 80
    # With a real anatomy (a template, rotated, scaled and jittered per image), a sample of a quarter of the
    # images already gives nearly the same mean shape as all of them.
    rng = np.random.default_rng(3)
    template = rng.uniform(0, 100, (10, 2))
    angles = rng.normal(0, 0.2, 80)
    true = (template @ _rotation(angles)) * rng.uniform(0.9, 1.1, (80, 1, 1)) + rng.normal(0, 1.5, (80, 10, 2))
    study = fairlandmark.audit_arrays(true + rng.normal(0, 1, true.shape), true, {"sex": ["F", "M"] * 40},
                                      spacing_mm=1.0, significance=None, curves=False).study
    sampled = procrustes.mean_shape_of_study(study)["mean_shape"]
    monkeypatch.setattr(procrustes, "MAX_SHAPE_IMAGES", 10_000)
    everything = procrustes.mean_shape_of_study(study)["mean_shape"]
    assert _procrustes_distance(np.array(sampled), np.array(everything)) < 0.02


def test_the_facade_keeps_predicted_coordinates_only_for_measurements():
    rng = np.random.default_rng(4)
    true = rng.uniform(0, 100, (40, 5, 2))
    preds = pd.DataFrame({"image_id": np.repeat(np.arange(40).astype(str), 5), "keypoint": np.tile(np.arange(1, 6), 40),
                          "pred_x": (true[..., 0] + 1).ravel(), "pred_y": true[..., 1].ravel(),
                          "true_x": true[..., 0].ravel(), "true_y": true[..., 1].ravel()})
    meta = pd.DataFrame({"image_id": np.arange(40).astype(str), "sex": ["F", "M"] * 20})
    plain = fairlandmark.audit(preds, meta, spacing_mm=1.0, significance=False, curves=False)
    assert plain.study.pred_xy is None and plain.study.true_xy is not None  # the anatomy still has its shapes
    assert plain.to_dict()["anatomy"]["n_images"] == 40
    from fairlandmark.audit import prepare_study

    np.testing.assert_array_equal(prepare_study(preds, meta, spacing_mm=1.0).pred_xy[..., 0], true[..., 0] + 1)


@pytest.mark.parametrize("scale", ["spacing_mm", "spacing column", "wrist_width", "pixels"])
def test_coordinates_are_scaled_in_place_only_when_the_study_made_the_predictions(scale):
    # prepare_study scales the coordinates of predictions it validated itself where they lie; predictions
    # the caller validated (and may use again) are copied. Both give the same coordinates, bit for bit.
    from fairlandmark.audit import prepare_study
    from fairlandmark.inputs.schema import check_predictions

    rng = np.random.default_rng(7)
    n, k = 30, 4
    true = rng.uniform(0, 500, (n, k, 2))
    frame = pd.DataFrame({"image_id": np.repeat(np.arange(n).astype(str), k), "keypoint": np.tile(np.arange(1, k + 1), n),
                          "pred_x": (true[..., 0] + rng.normal(0, 3, (n, k))).ravel(),
                          "pred_y": (true[..., 1] + rng.normal(0, 3, (n, k))).ravel(),
                          "true_x": true[..., 0].ravel(), "true_y": true[..., 1].ravel()})
    options = {"spacing_mm": {"spacing_mm": 0.137}, "wrist_width": {"wrist_width": (1, 3, 50.0)}}.get(scale, {})
    if scale == "spacing column":
        frame["spacing_mm"] = np.repeat(rng.uniform(0.05, 0.2, n), k)
    meta = pd.DataFrame({"image_id": np.arange(n).astype(str), "sex": ["F", "M"] * (n // 2)})
    validated = check_predictions(frame)
    before = validated.true.copy(), validated.pred.copy()
    theirs = prepare_study(validated, meta, attributes=["sex"], **options)
    np.testing.assert_array_equal(validated.true, before[0])  # the caller's arrays are left as they were
    np.testing.assert_array_equal(validated.pred, before[1])
    ours = prepare_study(frame, meta, attributes=["sex"], **options)
    np.testing.assert_array_equal(ours.true_xy, theirs.true_xy)
    np.testing.assert_array_equal(ours.pred_xy, theirs.pred_xy)
    np.testing.assert_array_equal(ours.errors, theirs.errors)
    if scale == "pixels":
        np.testing.assert_array_equal(ours.true_xy, before[0])
    else:
        assert not np.array_equal(ours.true_xy, before[0])  # scaled


def test_optimal_rotation_of_three_dimensional_shapes_is_a_rotation():
    # The 2 x 2 determinant shortcut is for 2-D landmarks; other shapes take the general determinant.
    rng = np.random.default_rng(5)
    source = rng.normal(size=(6, 3))
    rot = optimal_rotation(source, source @ np.diag([1.0, 1.0, -1.0]))
    assert np.isclose(np.linalg.det(rot), 1.0)


def test_images_with_every_landmark_at_one_point_stay_out_of_the_anatomy():
    # All coordinates 0.1: the mean need not round back to 0.1, so a spread test sees rounding noise, not a shape.
    res = _result(6, n=40)
    true = res.study.true_xy.copy()
    true[3] = 0.1
    true[7] = np.nan
    true[9, :, 0], true[9, :, 1] = 1e-300, 2e-300  # one point, tiny numbers
    true[11] = 0.0
    true[11, 0, 0] = 1e-170  # distinct landmarks whose squared spread underflows to 0: left out, not a crash
    block = procrustes.mean_shape_of_study(dataclasses.replace(res.study, true_xy=true))
    keep = [i for i in range(40) if i not in (3, 7, 9, 11)]
    assert block["n_images"] == len(keep) and "1 image whose landmarks nearly coincide left out" in block["method"]
    np.testing.assert_array_equal(block["mean_shape"], generalized_procrustes(true[keep], align=False).mean_shape)


def test_plane_rotation_in_closed_form_is_the_svd_rotation():
    from fairlandmark.stats.procrustes import plane_rotation

    rng = np.random.default_rng(11)
    source, target = rng.normal(size=(500, 9, 2)), rng.normal(size=(9, 2))
    closed = plane_rotation(source, target)
    np.testing.assert_allclose(closed, optimal_rotation(source, target), rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(closed), 1.0, atol=1e-12)  # a rotation, never a reflection
    mirrored = source * np.array([1.0, -1.0])  # best fitted by a reflection: both give the closest rotation
    np.testing.assert_allclose(plane_rotation(mirrored, target), optimal_rotation(mirrored, target), atol=1e-12)
    pairs = rng.normal(size=(7, 9, 2))  # a target per configuration
    np.testing.assert_allclose(plane_rotation(source[:7], pairs), optimal_rotation(source[:7], pairs), atol=1e-12)
    np.testing.assert_array_equal(plane_rotation(np.zeros((2, 9, 2)), target), np.broadcast_to(np.eye(2), (2, 2, 2)))


def test_a_sampled_anatomy_rotates_in_closed_form_and_a_whole_one_keeps_the_svd_bits(monkeypatch):
    from fairlandmark.stats import procrustes

    study = _result(10).study
    whole = procrustes.mean_shape_of_study(study)
    svd = generalized_procrustes(study.true_xy[study.first_image_rows], align=False)
    np.testing.assert_array_equal(whole["mean_shape"], svd.mean_shape)  # paper scale: bit for bit
    monkeypatch.setattr(procrustes, "MAX_SHAPE_IMAGES", 20)
    sampled = procrustes.mean_shape_of_study(study)
    picked = study.true_xy[study.first_image_rows[np.linspace(0, 79, 20).round().astype(int)]]
    closed = generalized_procrustes(picked, align=False, closed_form=True)
    np.testing.assert_array_equal(sampled["mean_shape"], closed.mean_shape)
    np.testing.assert_allclose(closed.mean_shape, generalized_procrustes(picked, align=False).mean_shape,
                               rtol=0, atol=1e-10)


def test_the_plane_step_sums_the_configurations_rotated_by_plane_rotation():
    from fairlandmark.stats.procrustes import _plane_rotated_sum, plane_rotation

    rng = np.random.default_rng(5)
    shapes, target = rng.normal(size=(60, 7, 2)), np.zeros((7, 2))
    target[:2, 0] = 1.0
    shapes[3] = 0.0
    shapes[3, :3] = [[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]]  # both sums exactly 0: no rotation preferred, kept
    flat, turned = shapes.reshape(60, -1), np.stack([-shapes[..., 1], shapes[..., 0]], -1).reshape(60, -1)
    expected = (shapes @ plane_rotation(shapes, target)).sum(axis=0)
    np.testing.assert_allclose(_plane_rotated_sum(flat, turned, target), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("block", [7, 40, 8192])
@pytest.mark.parametrize("layout", ["one run", "first run holds every image", "runs interleaved"])
def test_the_images_checked_are_each_images_first_row_whatever_the_runs_and_blocks(monkeypatch, block, layout):
    from fairlandmark.stats import procrustes

    rng = np.random.default_rng(3)
    n = 40
    true = rng.uniform(0, 100, (n, 6, 2))
    true[[4, 17, 33]] = 5.0  # at one point: left out
    ids = np.array([f"i{i}" for i in range(n)], dtype=object)
    if layout == "one run":
        rows, run = np.arange(n), np.zeros(n, int)
    elif layout == "first run holds every image":  # first rows 0..n-1, then a second run of half the images
        rows, run = np.r_[np.arange(n), np.arange(0, n, 2)], np.r_[np.zeros(n, int), np.ones(n // 2, int)]
    else:
        rows, run = np.repeat(np.arange(n), 2), np.tile([0, 1], n)
    row_true = true[rows].copy()
    row_true[len(np.unique(rows)):] = 50.0 if layout != "runs interleaved" else row_true[n:]  # later rows differ
    study = _result(6).study
    study = dataclasses.replace(study, errors=np.zeros((len(rows), 6)), row_run=run, row_image=ids[rows],
                                runs=np.array(["r0", "r1"][:run.max() + 1], dtype=object), true_xy=row_true,
                                pred_xy=None, labelled=None, row_image_code=rows)
    monkeypatch.setattr(procrustes, "_CHECK_BLOCK", block)
    got = procrustes.mean_shape_of_study(study)
    firsts = study.first_image_rows
    keep = [i for i in firsts if not np.all(row_true[i] == row_true[i, 0])]
    assert got["n_images"] == len(keep) == n - 3
    np.testing.assert_array_equal(got["mean_shape"], generalized_procrustes(row_true[keep], align=False).mean_shape)
