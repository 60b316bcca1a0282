"""Input schema: reading, validation and the one-line errors of predictions and metadata."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from fairlandmark import FairlandmarkWarning, InputError
from fairlandmark.inputs.radial_error import parse_wrist_width, radial_errors
from fairlandmark.inputs.schema import check_metadata, check_predictions, read_table

HEADER = "image_id,keypoint,pred_x,pred_y,true_x,true_y\n"
GOOD = HEADER + "001,1,1,1,0,0\n001,2,3,4,0,0\n002,1,,,0,0\n002,2,0,1,0,0\n"


def write(path, text):
    path.write_text(text)
    return path


def test_predictions_are_pivoted_with_string_ids(tmp_path):
    preds = check_predictions(write(tmp_path / "p.csv", GOOD))
    assert preds.row_image.tolist() == ["001", "002"]
    assert preds.keypoints.tolist() == [1, 2] and preds.runs.tolist() == ["0"]
    assert preds.pred.shape == (2, 2, 2) and np.isnan(preds.pred[1, 0]).all()  # empty = missing prediction
    assert preds.true[0, 1].tolist() == [0, 0] and preds.spacing is None and preds.error is None


def test_keypoints_sorted_numerically_or_kept_as_names(tmp_path):
    text = HEADER + "a,10,0,0,0,0\na,2,1,1,0,0\nb,2,0,0,0,0\nb,10,5,5,0,0\n"
    preds = check_predictions(write(tmp_path / "p.csv", text))
    assert preds.keypoints.tolist() == [2, 10]  # numeric order, not "10" < "2"
    assert preds.pred[1, 1].tolist() == [5, 5]  # image b, keypoint 10
    named = HEADER + "a,sella,0,0,0,0\na,nasion,1,1,0,0\nb,nasion,0,0,0,0\nb,sella,2,2,0,0\n"
    preds = check_predictions(write(tmp_path / "n.csv", named))
    assert preds.keypoints.tolist() == ["sella", "nasion"]
    assert preds.pred[1, 0].tolist() == [2, 2]


def test_runs_make_one_row_per_run_and_image(tmp_path):
    text = ("run,image_id,keypoint,pred_x,pred_y,true_x,true_y\n"
            "h1,a,1,0,0,0,0\nh2,a,1,1,0,0,0\nh2,b,1,2,0,0,0\n")
    preds = check_predictions(write(tmp_path / "p.csv", text))
    assert preds.runs.tolist() == ["h1", "h2"]
    assert preds.row_run.tolist() == [0, 1, 1] and preds.row_image.tolist() == ["a", "a", "b"]
    assert preds.pred[:, 0, 0].tolist() == [0, 1, 2]


@pytest.mark.parametrize("text, pattern", [
    ("image_id,keypoint,pred_x,pred_y,true_x,tru_y\n1,1,0,0,0,0\n",
     r"needs either the coordinate columns .* \(did you mean 'tru_y'\?\)"),
    ("imageid,keypoint,pred_x,pred_y,true_x,true_y\n1,1,0,0,0,0\n",
     r"missing column 'image_id' \(did you mean 'imageid'\?\); the columns found are: imageid, keypoint"),
    (HEADER + "a,1,0,zero,0,0\n", r"row 2, column 'pred_y': 'zero' is not a number; fix or empty that cell"),
    (HEADER + "a,1,0,0,0,0\na,2,0,0,0,0\na,1,1,1,0,0\n",
     r"row 4 repeats \(run=0, image_id=a, keypoint=1\) first seen on row 2"),
    (HEADER + "a,1,0,0,0,0\na,2,0,0,0,0\nb,1,0,0,0,0\n",
     r"image 'b' \(run 0\) has 1 of 2 keypoints, keypoint 2 is missing"),
    (HEADER + "a,1,0,0,,0\n", r"row 2, column 'true_x' is empty; every row needs a ground-truth coordinate"),
    (HEADER + ",1,0,0,0,0\n", r"row 2, column 'image_id' is empty"),
    (HEADER + "a,1,0,0,0,0\na,1.0,0,0,0,0\n", r"keypoint labels '1' and '1.0' name the same keypoint"),
    (HEADER, r"the file is empty"),
    ("", r"the file is empty"),
    ("image_id,keypoint,error_mm\na,1,-1\n", r"row 2, column 'error_mm': -1.0 must be >= 0"),
    (HEADER.strip() + ",spacing_mm\na,1,0,0,0,0,0\n", r"row 2, column 'spacing_mm': 0.0 must be > 0"),
])
def test_bad_predictions_one_line_naming_file_row_column(tmp_path, text, pattern):
    path = write(tmp_path / "preds.csv", text)
    with pytest.raises(InputError, match=pattern) as info:
        check_predictions(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message


def test_missing_file_and_parquet(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_table(tmp_path / "nope.csv")
    frame = pd.read_csv(write(tmp_path / "p.csv", GOOD), dtype={"image_id": str})
    frame.to_parquet(tmp_path / "p.parquet")
    a, b = check_predictions(tmp_path / "p.csv"), check_predictions(tmp_path / "p.parquet")
    assert b.row_image.tolist() == ["001", "002"]
    np.testing.assert_array_equal(a.pred, b.pred)
    write(tmp_path / "junk.parquet", "not parquet")
    with pytest.raises(InputError, match="junk.parquet: cannot be read as predictions"):
        check_predictions(tmp_path / "junk.parquet")


def test_metadata_alignment_errors_and_warnings(tmp_path):
    meta_path = write(tmp_path / "meta.csv", "image_id,sex,age\n001,F,9\n002,M,15\n003,M,12\n")
    with pytest.warns(FairlandmarkWarning, match=r"1 metadata row\(s\) have no predictions \(e.g. '003'\)"):
        meta = check_metadata(meta_path, image_ids=["002", "001"])
    assert meta.index.tolist() == ["001", "002"] and list(meta.columns) == ["sex", "age"]
    with pytest.raises(InputError, match=r"1 image id\(s\) of the predictions are not in the metadata \(e.g. '004'\)"):
        check_metadata(meta_path, image_ids=["001", "004"])
    nan_path = write(tmp_path / "nan.csv", "image_id,sex\n001,F\n002,\n")
    with pytest.raises(InputError, match=r"nan.csv: row 3, column 'sex' is empty"):
        check_metadata(nan_path, image_ids=["001", "002"])
    dup = write(tmp_path / "dup.csv", "image_id,sex\n001,F\n001,M\n")
    with pytest.raises(InputError, match="row 3 repeats image_id '001' first seen on row 2"):
        check_metadata(dup, image_ids=["001"])
    with pytest.raises(InputError, match=r"missing column 'sexx'.*did you mean 'sex'"):
        check_metadata(meta_path, image_ids=["001"], attributes=["sexx"])
    with pytest.raises(InputError, match="no attribute column"):
        check_metadata(write(tmp_path / "ids.csv", "image_id\n001\n"), image_ids=["001"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # all images used: no warning
        check_metadata(meta_path, image_ids=["001", "002", "003"])


def test_radial_errors_scales(tmp_path):
    text = ("image_id,keypoint,pred_x,pred_y,true_x,true_y,spacing_mm\n"
            "a,1,3,4,0,0,0.1\na,2,10,0,10,0,0.1\nb,1,6,8,0,0,0.2\nb,2,0,0,30,40,0.2\n")
    preds = check_predictions(write(tmp_path / "p.csv", text))
    err, unit = radial_errors(preds)
    assert unit == "mm"
    np.testing.assert_allclose(err, [[0.5, 0.0], [2.0, 10.0]], rtol=1e-15)
    no_column = check_predictions(pd.read_csv(tmp_path / "p.csv").drop(columns="spacing_mm"))
    assert radial_errors(no_column)[1] == "px" and radial_errors(no_column)[0].tolist() == [[5, 0], [10, 50]]
    assert radial_errors(no_column, spacing_mm=0.5)[0].tolist() == [[2.5, 0], [5, 25]]
    # wrist width 1,2,50: image a keypoints 10 px apart -> 5 mm/px; b 50 px apart -> 1 mm/px
    err, unit = radial_errors(no_column, wrist_width=parse_wrist_width("1,2,50"))
    assert unit == "mm" and err.tolist() == [[25, 0], [10, 50]]
    with pytest.raises(InputError, match="only one pixel-to-mm scale"):
        radial_errors(preds, spacing_mm=0.1)
    with pytest.raises(InputError, match="keypoint 7 is not in"):
        radial_errors(no_column, wrist_width=parse_wrist_width("1,7,50"))
    with pytest.raises(InputError, match="expected A,B,MM"):
        parse_wrist_width("1,5")
    with pytest.raises(InputError, match="must be a positive number"):
        radial_errors(no_column, spacing_mm=-1.0)


def test_path_objects_name_the_file_in_messages(tmp_path):
    from fairlandmark import audit

    preds = write(tmp_path / "p.csv", GOOD)
    meta = write(tmp_path / "m.csv", "image_id,sex\n001,F\n002,F\n")
    with pytest.raises(InputError, match=r"m\.csv: attribute 'sex' has a single group"):
        audit(preds, meta, spacing_mm=1.0, significance=False)  # pathlib.Path, not str


def test_attribute_given_twice_or_the_id_column_is_an_error(tmp_path):
    meta = write(tmp_path / "m.csv", "image_id,sex\n001,F\n002,M\n")
    with pytest.raises(InputError, match="attributes sex: is given twice"):
        check_metadata(meta, image_ids=["001", "002"], attributes=["sex", "sex"])
    with pytest.raises(InputError, match="attributes image_id: is the image key"):
        check_metadata(meta, image_ids=["001", "002"], attributes=["image_id"])


def test_whole_number_keypoints_beyond_float_precision_stay_text():
    """"1e20" and "2e20" are two keypoints, not one integer that overflowed int64 (which read both as -2**63)."""
    rows = [dict(image_id=img, keypoint=kp, pred_x=1.0, pred_y=1.0, true_x=0.0, true_y=0.0)
            for img in ("a", "b") for kp in ("1e20", "2e20", "3")]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        preds = check_predictions(pd.DataFrame(rows))
    assert preds.keypoints.tolist() == ["1e20", "2e20", "3"]
    rows = [dict(r, keypoint={"1e20": "9007199254740992", "2e20": "12"}.get(r["keypoint"], r["keypoint"]))
            for r in rows]
    assert check_predictions(pd.DataFrame(rows)).keypoints.tolist() == [3, 12, 2**53]  # integers int64 holds
    # Beside "2.0" pandas parses floats, which round 2**53 + 1 to 2**53: text, not a rewritten label or a clash.
    rows = [dict(image_id=img, keypoint=kp, pred_x=1.0, pred_y=1.0, true_x=0.0, true_y=0.0)
            for img in ("a", "b") for kp in ("9007199254740993", "2.0", "9007199254740992")]
    assert check_predictions(pd.DataFrame(rows)).keypoints.tolist() == ["9007199254740993", "2.0",
                                                                        "9007199254740992"]
