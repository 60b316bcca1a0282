"""landmarker adapter, audit_arrays' coord_order/per-axis spacing, and Fairlearn metric callables."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from fairlandmark import FairlandmarkWarning, InputError, audit, audit_arrays
from fairlandmark.integrations.fairlearn import mean_radial_error, mre_metric, sdr, sdr_metric
from fairlandmark.integrations.landmarker import audit_landmarker, to_original


def landmarker_batch(rng, n=24, c=3, dim=(256, 256)):
    """Original (x, y) points, and the same points as landmarker holds them after padding and resizing.

    The forward mapping is written from landmarker's documented convention (pad each side to the
    network's aspect ratio, then resize; points in (y, x)), independently of the adapter.
    """
    h = rng.integers(800, 1200, n).astype(float)
    w = rng.integers(600, 1000, n).astype(float)
    ratio = dim[0] / dim[1]
    pad_x = np.floor(np.maximum(h / ratio - w, 0) / 2)
    pad_y = np.floor(np.maximum(ratio * w - h, 0) / 2)
    true_xy = np.stack([rng.uniform(0, w[:, None], (n, c)), rng.uniform(0, h[:, None], (n, c))], axis=-1)
    pred_xy = true_xy + rng.normal(0, 15, true_xy.shape)
    spacing_yx = np.stack([rng.uniform(0.08, 0.12, n), rng.uniform(0.08, 0.12, n)], axis=1)

    def forward(xy):
        y = (xy[..., 1] + pad_y[:, None]) * dim[0] / (h[:, None] + 2 * pad_y[:, None])
        x = (xy[..., 0] + pad_x[:, None]) * dim[1] / (w[:, None] + 2 * pad_x[:, None])
        return np.stack([y, x], axis=-1)

    return dict(true_xy=true_xy, pred_xy=pred_xy, true_yx=forward(true_xy), pred_yx=forward(pred_xy),
                dim=dim, dim_orig=np.stack([h, w], axis=1), padding=np.stack([pad_y, pad_x], axis=1),
                spacing_yx=spacing_yx)


def test_to_original_hand_case():
    # 1000 x 800 (H x W) padded by 100 px left and right, resized to 256 x 256.
    pts = to_original([[[64.0, 32.0]]], [[[0.0, 0.0]]], dim=(256, 256), dim_orig=[[1000, 800]],
                      padding=[[0, 100]], pixel_spacing=[[0.1, 0.2]])
    # y = 64 * 1000 / 256 = 250; x = 32 * 1000 / 256 - 100 = 25; true x = -100 (in the padding).
    assert pts.pred.tolist() == [[[25.0, 250.0]]]
    assert pts.true.tolist() == [[[-100.0, 0.0]]]
    assert pts.spacing_xy.tolist() == [[0.2, 0.1]]
    # Without dim/dim_orig the points are original pixels already: only the order changes.
    assert to_original([[[1.0, 2.0]]], [[[3.0, 4.0]]]).pred.tolist() == [[[2.0, 1.0]]]


def test_audit_landmarker_equals_original_points():
    rng = np.random.default_rng(4)
    b = landmarker_batch(rng)
    sex = np.array(["F", "M"] * 12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairlandmarkWarning)
        via_adapter = audit_landmarker(b["pred_yx"], b["true_yx"], {"sex": sex}, dim=b["dim"], dim_orig=b["dim_orig"],
                                       padding=b["padding"], pixel_spacing=b["spacing_yx"],
                                           significance=False, min_group_size=1)
        direct = audit_arrays(b["pred_xy"], b["true_xy"], {"sex": sex}, spacing_mm=b["spacing_yx"][:, ::-1],
                              significance=False, min_group_size=1)
    # Hand formula: x and y scaled by their own spacing, then the distance.
    d = b["pred_xy"] - b["true_xy"]
    expected = np.hypot(d[..., 0] * b["spacing_yx"][:, None, 1], d[..., 1] * b["spacing_yx"][:, None, 0])
    np.testing.assert_allclose(via_adapter.study.errors, expected, rtol=1e-9)
    np.testing.assert_allclose(via_adapter.study.errors, direct.study.errors, rtol=1e-9)
    np.testing.assert_array_equal(via_adapter.per_keypoint["dp"], direct.per_keypoint["dp"])


def test_landmarker_own_metrics_agree():
    landmarker_metrics = pytest.importorskip("landmarker.metrics")
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    b = landmarker_batch(rng, n=10, c=2)
    t = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in b.items() if k != "dim"}
    pe = landmarker_metrics.point_error(t["true_yx"], t["pred_yx"], dim=b["dim"], dim_orig=t["dim_orig"],
                                        pixel_spacing=t["spacing_yx"], padding=t["padding"], reduction="none")
    sex = np.array(["F", "M"] * 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairlandmarkWarning)
        res = audit_landmarker(b["pred_yx"], b["true_yx"], {"sex": sex}, dim=b["dim"], dim_orig=b["dim_orig"],
                               padding=b["padding"], pixel_spacing=b["spacing_yx"],
                                   significance=False, min_group_size=1)
    np.testing.assert_allclose(res.study.errors, pe.numpy(), rtol=1e-9)
    rate = landmarker_metrics.sdr(2.0, t["true_yx"], t["pred_yx"], dim=b["dim"], dim_orig=t["dim_orig"],
                                  pixel_spacing=t["spacing_yx"], padding=t["padding"])
    assert res.overall["sdr_2"].iloc[0] * 100 == pytest.approx(rate)


def test_to_original_refuses_bad_input():
    with pytest.raises(InputError, match=r"pred_landmarks: expected shape \(N, C, 2\) in \(y, x\) order"):
        to_original(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(InputError, match=r"give both"):
        to_original(np.zeros((1, 1, 2)), np.zeros((1, 1, 2)), dim=(256, 256))
    with pytest.raises(InputError, match=r"padding: expected 2 values \(y, x\) or shape \(1, 2\)"):
        to_original(np.zeros((1, 1, 2)), np.zeros((1, 1, 2)), dim=(8, 8), dim_orig=[8, 8], padding=[1, 2, 3])
    with pytest.raises(InputError, match=r"pixel_spacing: every value must be > 0"):
        to_original(np.zeros((1, 1, 2)), np.zeros((1, 1, 2)), pixel_spacing=[0.1, 0.0])


def test_audit_arrays_coord_order_and_axis_spacing():
    rng = np.random.default_rng(2)
    n = 16
    true = rng.uniform(0, 100, (n, 2, 2))
    pred = true + rng.normal(0, 8, true.shape)
    spacing_xy = np.stack([np.full(n, 0.2), np.full(n, 0.1)], axis=1)
    groups = {"sex": ["F", "M"] * (n // 2)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairlandmarkWarning)
        xy = audit_arrays(pred, true, groups, spacing_mm=spacing_xy, significance=False, min_group_size=1)
        yx = audit_arrays(pred[..., ::-1], true[..., ::-1], groups, spacing_mm=spacing_xy[:, ::-1], coord_order="yx",
                          significance=False, min_group_size=1)
        frame = pd.DataFrame({"image_id": np.repeat(np.arange(n).astype(str), 2), "keypoint": np.tile([1, 2], n),
                              "pred_x": pred[..., 0].ravel(), "pred_y": pred[..., 1].ravel(),
                              "true_x": true[..., 0].ravel(), "true_y": true[..., 1].ravel(),
                              "spacing_x_mm": 0.2, "spacing_y_mm": 0.1})
        long = audit(frame, pd.DataFrame({"image_id": np.arange(n).astype(str), **groups}),
                     significance=False, min_group_size=1)
    np.testing.assert_array_equal(xy.study.errors, yx.study.errors)
    np.testing.assert_array_equal(xy.study.errors, long.study.errors)
    d = pred - true
    np.testing.assert_allclose(xy.study.errors, np.hypot(d[..., 0] * 0.2, d[..., 1] * 0.1), rtol=1e-15)
    with pytest.raises(InputError, match=r"coord_order: must be 'xy' or 'yx'"):
        audit_arrays(pred, true, groups, coord_order="xyz")
    with pytest.raises(InputError, match=r"spacing_mm: expected a number, shape \(N,\) or shape \(N, 2\)"):
        audit_arrays(pred, true, groups, spacing_mm=np.ones((n, 3)))


# -- Fairlearn ------------------------------------------------------------------------


def fairness_data(rng, n=90):
    true = rng.uniform(0, 200, (n, 3, 2))
    pred = true + rng.normal(0, 14, true.shape)
    pred[rng.random((n, 3)) < 0.08] = np.nan  # missing predictions
    true[rng.random((n, 3)) < 0.1] = np.nan  # unlabelled points
    site = np.array(["A", "B", "C"])[rng.integers(0, 3, n)]
    spacing = rng.uniform(0.08, 0.14, n)
    return true, pred, site, spacing


def test_metric_functions_hand_cases():
    t = [[0, 0], [0, 0], [0, 0], [np.nan, np.nan]]
    p = [[1, 0], [3, 0], [np.nan, np.nan], [0, 0]]
    # errors 1, 3, missing, unlabelled: SDR@2 = 1 hit of 3 labelled; MRE = (1 + 3) / 2.
    assert sdr(t, p, phi=2.0) == pytest.approx(1 / 3)
    assert mean_radial_error(t, p) == 2.0
    assert sdr_metric(2.0, spacing_mm=[[0.5, 1.0]] * 4)(t, p) == pytest.approx(2 / 3)  # x scaled by 0.5
    with pytest.raises(InputError, match=r"y_true: expected points of shape \(N, 2\)"):
        sdr(np.zeros((3, 3)), np.zeros((3, 3)))
    with pytest.raises(InputError, match=r"phi: must be a positive number"):
        sdr_metric(0)


def test_metricframe_difference_equals_dp():
    fairlearn_metrics = pytest.importorskip("fairlearn.metrics")
    rng = np.random.default_rng(12)
    true, pred, site, spacing = fairness_data(rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairlandmarkWarning)
        res = audit_arrays(pred, true, {"site": site}, spacing_mm=spacing, thresholds_mm=(2.0,),
                           significance=False, min_group_size=1)
    by_group = res.to_metricframe_like("site")
    mre_by_group = res.to_metricframe_like("site", metric="mre")
    for k in range(3):
        mf = fairlearn_metrics.MetricFrame(
            metrics={"sdr": sdr_metric(2.0), "mre": mre_metric()}, y_true=true[:, k], y_pred=pred[:, k],
            sensitive_features=site, sample_params={"sdr": {"spacing_mm": spacing}, "mre": {"spacing_mm": spacing}})
        assert mf.difference()["sdr"] == pytest.approx(res.per_keypoint["dp"].iloc[k], abs=1e-15)
        np.testing.assert_allclose(mf.by_group["sdr"].to_numpy(), by_group[k + 1].to_numpy(), atol=1e-15)
        np.testing.assert_allclose(mf.by_group["mre"].to_numpy(), mre_by_group[k + 1].to_numpy(), rtol=1e-13)
        assert mf.difference()["mre"] == pytest.approx(res.per_keypoint["mre_gap"].iloc[k], rel=1e-12)


def test_to_metricframe_like_shape_and_errors():
    rng = np.random.default_rng(1)
    true, pred, site, spacing = fairness_data(rng, n=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairlandmarkWarning)
        res = audit_arrays(pred, true, {"site": site, "sex": ["F", "M"] * 15}, spacing_mm=0.1,
                           thresholds_mm=(2.0, 4.0), significance=False, min_group_size=1, intersection=False)
    frame = res.to_metricframe_like("sex", threshold=4.0)
    assert frame.index.name == "sex" and frame.index.tolist() == ["F", "M"] and frame.columns.tolist() == [1, 2, 3]
    pg = res.per_group.set_index(["attribute", "group", "keypoint"])
    assert frame.loc["M", 2] == pg.loc[("sex", "M", 2), "sdr_4"]
    with pytest.raises(InputError, match="not audited"):
        res.to_metricframe_like("age")
    with pytest.raises(InputError, match="threshold 3"):
        res.to_metricframe_like("sex", threshold=3)


def test_readme_formats_example_runs(tmp_path):
    """The README's "Other formats" example runs as written (its own assert checks DP = difference())."""
    pytest.importorskip("fairlearn")
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Other formats"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairlandmarkWarning)
        exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
