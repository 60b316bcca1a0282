"""Pixel spacing from DICOM headers, written here with pydicom (no external data)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

pydicom = pytest.importorskip("pydicom")

from pydicom.dataset import FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from fairlandmark import FairlandmarkWarning, InputError, audit  # noqa: E402
from fairlandmark.cli import main  # noqa: E402
from fairlandmark.inputs.dicom import read_dicom_spacing, spacing_columns  # noqa: E402


def write_dicom(path, *, pixel=None, imager=None, magnification=None, uid=None):
    """A minimal DICOM file with the given spacing attributes (headers only)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    if pixel is not None:
        ds.PixelSpacing = list(pixel)
    if imager is not None:
        ds.ImagerPixelSpacing = list(imager)
    if magnification is not None:
        ds.EstimatedRadiographicMagnificationFactor = magnification
    ds.save_as(str(path), enforce_file_format=True)
    return ds.SOPInstanceUID


def long_frame(n=12, seed=0):
    rng = np.random.default_rng(seed)
    true = rng.uniform(0, 300, (n, 2, 2))
    pred = true + rng.normal(0, 12, true.shape)
    frame = pd.DataFrame({"image_id": np.repeat([f"{i:03d}" for i in range(n)], 2), "keypoint": np.tile([1, 2], n),
                          "pred_x": pred[..., 0].ravel(), "pred_y": pred[..., 1].ravel(),
                          "true_x": true[..., 0].ravel(), "true_y": true[..., 1].ravel()})
    meta = pd.DataFrame({"image_id": [f"{i:03d}" for i in range(n)], "sex": ["F", "M"] * (n // 2)})
    return frame, meta, pred, true


def test_pixel_spacing_anisotropic_against_hand_case(tmp_path):
    # PixelSpacing is [row (y), column (x)]: dx scales by 0.2, dy by 0.1.
    write_dicom(tmp_path / "a.dcm", pixel=[0.1, 0.2])
    write_dicom(tmp_path / "b.dcm", pixel=[0.1, 0.1])
    frame = pd.DataFrame({"image_id": ["a", "b"], "keypoint": [1, 1], "pred_x": [13.0, 0.0], "pred_y": [40.0, 0.0],
                          "true_x": [10.0, 0.0], "true_y": [0.0, 0.0]})
    meta = pd.DataFrame({"image_id": ["a", "b"], "sex": ["F", "M"]})
    res = audit(frame, meta, spacing_from_dicom=tmp_path, significance=False, min_group_size=1, thresholds_mm=(4.1,))
    # hypot(3 * 0.2, 40 * 0.1) = hypot(0.6, 4.0)
    assert res.per_group["mre"].iloc[0] == pytest.approx(np.hypot(0.6, 4.0), rel=1e-15)
    assert res.per_group["sdr_4.1"].iloc[0] == 1.0  # 4.045 <= 4.1; swapping x/y would give 8.002
    table = read_dicom_spacing(tmp_path, image_ids=["a"])
    assert table[["spacing_x_mm", "spacing_y_mm"]].iloc[0].tolist() == [0.2, 0.1]


def test_dicom_route_equals_long_csv_route(tmp_path):
    frame, meta, pred, true = long_frame()
    rng = np.random.default_rng(1)
    spacing = rng.uniform(0.08, 0.15, (12, 2)).round(3)
    spacing[::3, 1] = spacing[::3, 0]  # some images with square pixels
    for i in range(12):
        write_dicom(tmp_path / f"{i:03d}.dcm", pixel=[spacing[i, 1], spacing[i, 0]])  # [y, x]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairlandmarkWarning)
        via_dicom = audit(frame, meta, spacing_from_dicom=tmp_path, significance=False, min_group_size=1)
        csv_frame = frame.assign(spacing_x_mm=np.repeat(spacing[:, 0], 2), spacing_y_mm=np.repeat(spacing[:, 1], 2))
        via_csv = audit(csv_frame, meta, significance=False, min_group_size=1)
    np.testing.assert_array_equal(via_dicom.study.errors, via_csv.study.errors)
    expected = np.hypot((pred - true)[..., 0] * spacing[:, None, 0], (pred - true)[..., 1] * spacing[:, None, 1])
    np.testing.assert_allclose(via_dicom.study.errors, expected, rtol=1e-14)
    pd.testing.assert_frame_equal(via_dicom.per_group, via_csv.per_group)


def test_square_pixels_bit_identical_to_spacing_mm(tmp_path):
    frame, meta, _, _ = long_frame()
    for i in range(12):
        write_dicom(tmp_path / f"{i:03d}.dcm", pixel=[0.1, 0.1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairlandmarkWarning)
        a = audit(frame, meta, spacing_from_dicom=tmp_path, significance=False, min_group_size=1)
        b = audit(frame, meta, spacing_mm=0.1, significance=False, min_group_size=1)
    np.testing.assert_array_equal(a.study.errors, b.study.errors)


def test_imager_pixel_spacing_with_magnification_and_warning(tmp_path):
    write_dicom(tmp_path / "m.dcm", imager=[0.15, 0.15], magnification=1.1)
    write_dicom(tmp_path / "n.dcm", imager=[0.2, 0.1])
    with pytest.warns(FairlandmarkWarning, match=r"2 DICOM file\(s\) have no PixelSpacing .*divided by "
                                                 r"EstimatedRadiographicMagnificationFactor where present \(1 file"):
        table = read_dicom_spacing(tmp_path).set_index("image_id")
    assert table.loc["m", "spacing_x_mm"] == pytest.approx(0.15 / 1.1, rel=1e-15)
    assert table.loc["n", ["spacing_x_mm", "spacing_y_mm"]].tolist() == [0.1, 0.2]
    assert table.loc["n", "attribute"] == "ImagerPixelSpacing"
    # PixelSpacing wins over ImagerPixelSpacing.
    write_dicom(tmp_path / "p.dcm", pixel=[0.3, 0.3], imager=[0.15, 0.15])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairlandmarkWarning)
        assert read_dicom_spacing(tmp_path, image_ids=["p"])["spacing_x_mm"].tolist() == [0.3]


def test_match_by_uid(tmp_path):
    uid = write_dicom(tmp_path / "whatever.dcm", pixel=[0.1, 0.1])
    write_dicom(tmp_path / "other.dcm", pixel=[0.5, 0.5])
    table = read_dicom_spacing(tmp_path, match="uid", image_ids=[uid])
    assert table["image_id"].tolist() == [str(uid)] and table["spacing_x_mm"].tolist() == [0.1]
    uid2 = write_dicom(tmp_path / "third.dcm", pixel=[1.0, 1.0])
    frame = pd.DataFrame({"image_id": [str(uid), str(uid2)], "keypoint": [1, 1], "pred_x": [3.0, 0.0],
                          "pred_y": [4.0, 0.0], "true_x": [0.0, 0.0], "true_y": [0.0, 0.0]})
    meta = pd.DataFrame({"image_id": [str(uid), str(uid2)], "sex": ["F", "M"]})
    res = audit(frame, meta, spacing_from_dicom=tmp_path, dicom_match="uid", significance=False, min_group_size=1)
    assert res.per_group["mre"].iloc[0] == pytest.approx(0.5)


@pytest.mark.parametrize("kwargs, pattern", [
    ({}, r"x\.dcm: has neither PixelSpacing nor ImagerPixelSpacing"),
    ({"pixel": [0.1, 0.0]}, r"x\.dcm: PixelSpacing is .*must be two positive numbers"),
    ({"imager": [0.1, 0.1], "magnification": 0.0}, r"x\.dcm: EstimatedRadiographicMagnificationFactor is"),
])
def test_unusable_spacing_names_the_file(tmp_path, kwargs, pattern):
    write_dicom(tmp_path / "x.dcm", **kwargs)
    with pytest.raises(InputError, match=pattern):
        read_dicom_spacing(tmp_path)


def test_missing_files_and_conflicts(tmp_path):
    frame, meta, _, _ = long_frame(n=4)
    write_dicom(tmp_path / "000.dcm", pixel=[0.1, 0.1])
    with pytest.raises(InputError, match=r"3 image\(s\) have no DICOM file matched by stem \(e\.g\. '001'"):
        audit(frame, meta, spacing_from_dicom=tmp_path, significance=False, min_group_size=1)
    with pytest.raises(InputError, match=r"already has a pixel-to-mm scale \(spacing_mm\)"):
        audit(frame, meta, spacing_from_dicom=tmp_path, spacing_mm=0.1, significance=False, min_group_size=1)
    (tmp_path / "bad.dcm").write_text("not dicom")
    with pytest.raises(InputError, match=r"bad\.dcm: cannot be read as DICOM"):
        read_dicom_spacing(tmp_path)
    with pytest.raises(InputError, match=r"not a folder"):
        read_dicom_spacing(tmp_path / "nope")


def test_cli_convert_and_audit(tmp_path, capsys):
    frame, meta, pred, true = long_frame()
    folder = tmp_path / "scans"
    folder.mkdir()
    for i in range(12):
        write_dicom(folder / f"{i:03d}.dcm", pixel=[0.1, 0.12])
    preds, meta_path, out = tmp_path / "p.csv", tmp_path / "m.csv", tmp_path / "long.csv"
    frame.to_csv(preds, index=False)
    meta.to_csv(meta_path, index=False)
    truth = tmp_path / "truth.csv"
    truth.write_text("".join(f"{i:03d}," + ",".join(repr(float(v)) for v in true[i].ravel()) + "\n" for i in range(12)))
    wide = tmp_path / "pred.csv"
    wide.write_text("".join(f"{i:03d}," + ",".join(repr(float(v)) for v in pred[i].ravel()) + "\n" for i in range(12)))
    assert main(["convert", "--truth", str(truth), "--pred", str(wide), "--out", str(out),
                 "--spacing-from-dicom", str(folder)]) == 0
    long = pd.read_csv(out, dtype={"image_id": str})
    assert long["spacing_x_mm"].unique().tolist() == [0.12] and long["spacing_y_mm"].unique().tolist() == [0.1]
    j1, j2 = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["audit", str(preds), str(meta_path), "--spacing-from-dicom", str(folder), "--no-significance",
                 "--min-group-size", "1", "--json", str(j1), "-q"]) == 0
    assert main(["audit", str(out), str(meta_path), "--no-significance", "--min-group-size", "1",
                 "--json", str(j2), "-q"]) == 0
    import json

    d1, d2 = json.loads(j1.read_text()), json.loads(j2.read_text())
    assert d1["per_keypoint"] == d2["per_keypoint"]
    assert main(["convert", "--truth", str(truth), "--pred", str(wide), "--out", str(tmp_path / "x.csv"),
                 "--spacing-from-dicom", str(folder), "--spacing-mm", "0.1"]) == 2
    assert "give only one pixel-to-mm scale" in " ".join(capsys.readouterr().err.split())


def test_spacing_columns_square_and_not():
    table = pd.DataFrame({"image_id": ["a", "b"], "spacing_x_mm": [0.1, 0.2], "spacing_y_mm": [0.1, 0.2]})
    assert list(spacing_columns(["b", "a", "a"], table)) == ["spacing_mm"]
    table["spacing_y_mm"] = [0.1, 0.3]
    cols = spacing_columns(["b", "a"], table)
    assert cols["spacing_x_mm"].tolist() == [0.2, 0.1] and cols["spacing_y_mm"].tolist() == [0.3, 0.1]


def test_cli_coco_with_dicom_spacing_by_file_stem(tmp_path):
    import json

    rng = np.random.default_rng(3)
    n = 8
    true = rng.uniform(10, 200, (n, 2, 2)).round(1)
    pred = (true + rng.normal(0, 10, true.shape)).round(1)
    gt = {"categories": [{"id": 1, "name": "hand", "keypoints": ["a", "b"]}],
          "images": [{"id": 50 + i, "file_name": f"dx/{i:03d}.dcm", "sex": "FM"[i % 2]} for i in range(n)],
          "annotations": [{"image_id": 50 + i, "category_id": 1, "keypoints": [*true[i, 0], 2, *true[i, 1], 2]}
                          for i in range(n)]}
    res = [{"image_id": 50 + i, "category_id": 1, "score": 1.0, "keypoints": [*pred[i, 0], 1, *pred[i, 1], 1]}
           for i in range(n)]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(res))
    folder = tmp_path / "dx"
    folder.mkdir()
    spacing = rng.uniform(0.1, 0.2, (n, 2)).round(3)  # (x, y)
    for i in range(n):
        write_dicom(folder / f"{i:03d}.dcm", pixel=[spacing[i, 1], spacing[i, 0]])
    out, meta = tmp_path / "long.csv", tmp_path / "meta.csv"
    assert main(["convert", "--truth", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "res.json"),
                 "--out", str(out), "--image-key", "file_stem", "--spacing-from-dicom", str(folder),
                 "--metadata-from-coco", str(meta)]) == 0
    long = pd.read_csv(out, dtype={"image_id": str})
    assert long["image_id"].iloc[0] == "000"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairlandmarkWarning)
        result = audit(str(out), str(meta), significance=False, min_group_size=1)
    d = pred - true
    expected = np.hypot(d[..., 0] * spacing[:, None, 0], d[..., 1] * spacing[:, None, 1])
    np.testing.assert_allclose(result.study.errors, expected, rtol=1e-12)
