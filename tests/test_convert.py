"""``fairlandmark convert``: wide files (id,x1,y1,...,xK,yK) to the long format."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from fairlandmark import FairlandmarkWarning, InputError, audit
from fairlandmark.cli import main
from fairlandmark.inputs.convert import convert, metadata_template, read_wide, wide_to_long, write_long

TRUTH = "001,10,20,30,40\n002,1.5,2.5,3.5,4.5\n003,0,0,5,5\n"
PRED = "001,11,20,30,42\n002,1.5,2.5,3.5,4.5\n003,3,4,5,5\n"


def write(path, text):
    path.write_text(text)
    return path


@pytest.fixture
def files(tmp_path):
    return write(tmp_path / "pred.csv", PRED), write(tmp_path / "truth.csv", TRUTH)


def test_read_wide_keeps_string_ids_and_detects_header(tmp_path):
    plain = read_wide(write(tmp_path / "a.csv", TRUTH), truth=True)
    assert list(plain.ids) == ["001", "002", "003"] and not plain.has_header
    assert plain.coords.shape == (3, 2, 2)
    assert plain.coords[1].tolist() == [[1.5, 2.5], [3.5, 4.5]]
    assert plain.rows.tolist() == [1, 2, 3]
    headed = read_wide(write(tmp_path / "b.csv", "id,x1,y1,x2,y2\n" + TRUTH), truth=True)
    assert headed.has_header and list(headed.ids) == ["001", "002", "003"]
    np.testing.assert_array_equal(headed.coords, plain.coords)
    assert headed.rows.tolist() == [2, 3, 4]  # file lines, header counted
    # A first row whose predictions are all missing is data, not a header.
    missing_first = read_wide(write(tmp_path / "c.csv", "001,,,,\n002,1,2,3,4\n"))
    assert not missing_first.has_header and np.isnan(missing_first.coords[0]).all()


def test_convert_pairs_predictions_with_truth(files):
    pred, truth = files
    long = convert(pred, truth)
    assert list(long.columns) == ["image_id", "keypoint", "pred_x", "pred_y", "true_x", "true_y"]
    assert long["image_id"].tolist() == ["001", "001", "002", "002", "003", "003"]
    assert long["keypoint"].tolist() == [1, 2, 1, 2, 1, 2]
    assert long.iloc[1][["pred_x", "pred_y", "true_x", "true_y"]].tolist() == [30, 42, 30, 40]
    assert long.iloc[4][["pred_x", "pred_y", "true_x", "true_y"]].tolist() == [3, 4, 0, 0]


def test_prediction_order_does_not_matter_and_ids_follow_truth(tmp_path, files):
    _, truth = files
    shuffled = write(tmp_path / "shuffled.csv", "003,3,4,5,5\n001,11,20,30,42\n002,1.5,2.5,3.5,4.5\n")
    pd.testing.assert_frame_equal(convert(shuffled, truth), convert(files[0], truth))


def test_missing_predictions_are_rows_with_empty_pred_and_a_warning(tmp_path, files):
    _, truth = files
    pred = write(tmp_path / "partial.csv", "002,1.5,2.5,,\n")  # 001, 003 absent; 002 keypoint 2 empty
    with pytest.warns(FairlandmarkWarning, match=r"2 image\(s\) of the ground truth .* have no prediction"):
        long = convert(pred, truth)
    assert len(long) == 6
    assert long["pred_x"].isna().tolist() == [True, True, False, True, True, True]
    # The audit counts them as misses, never drops them.
    meta = pd.DataFrame({"image_id": ["001", "002", "003"], "sex": ["F", "M", "M"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairlandmarkWarning)
        res = audit(long, meta, attributes=["sex"], spacing_mm=1.0, min_group_size=1, significance=False)
    assert res.overall.iloc[0]["n_missing"] == 5 and res.overall.iloc[0]["sdr_2"] == 1 / 6
    only = convert(pred, truth, predicted_only=True)
    assert only["image_id"].tolist() == ["002", "002"]


def test_several_runs_and_spacing(tmp_path, files):
    pred, truth = files
    second = write(tmp_path / "pred2.csv", "001,10,20,30,40\n")
    with pytest.warns(FairlandmarkWarning, match="predicted_only"):
        long = convert([pred, second], truth, runs=["h1", "h2"], spacing_mm=0.1)
    assert list(long.columns) == ["run", "image_id", "keypoint", "pred_x", "pred_y", "true_x", "true_y",
                                  "spacing_mm"]
    assert long["run"].tolist() == ["h1"] * 6 + ["h2"] * 6
    assert (long["spacing_mm"] == 0.1).all()
    assert long.loc[long["run"] == "h2", "pred_x"].notna().sum() == 2
    only = convert([pred, second], truth, runs=["h1", "h2"], predicted_only=True)
    assert only.groupby("run").size().to_dict() == {"h1": 6, "h2": 2}
    with pytest.raises(InputError, match="need one run label each"):
        convert([pred, second], truth)
    with pytest.raises(InputError, match="1 label\\(s\\) for 2 predictions"):
        convert([pred, second], truth, runs=["h1"])
    with pytest.raises(InputError, match="'h1' is given twice"):
        convert([pred, second], truth, runs=["h1", "h1"])
    with pytest.raises(InputError, match="spacing_mm"):
        convert(pred, truth, spacing_mm=0)


@pytest.mark.parametrize("name, pred_text, truth_text, pattern", [
    ("unknown id", "001,1,1,1,1\n999,1,1,1,1\n", TRUTH,
     r"pred\.csv: 1 image id\(s\) are not in the ground truth .*truth\.csv \(e\.g\. '999', first on row 2\)"),
    ("different K", "001,1,1\n", TRUTH,
     r"pred\.csv: 1 keypoint\(s\) per row .* but the ground truth .*truth\.csv has 2"),
    ("odd columns", "001,1,1,1\n", TRUTH, r"pred\.csv: row 1 has 3 coordinate columns after the id, an odd number"),
    ("non-numeric", "001,1,1,1,1\n002,1,abc,1,1\n", TRUTH,
     r"pred\.csv: row 2, column 3 \(y1\): 'abc' is not a number; fix that cell"),
    ("non-numeric truth", PRED, "001,1,1,1,1\n002,1,1,1,x\n",
     r"truth\.csv: row 2, column 5 \(y2\): 'x' is not a number"),
    ("empty truth cell", PRED, "001,1,1,1,1\n002,1,1,,1\n", r"truth\.csv: row 2, column 4 \(x2\) is empty"),
    ("ragged", "001,1,1,1,1\n002,1,1\n", TRUTH, r"pred\.csv: row 2 has 3 columns but row 1 has 5"),
    ("repeated id", "001,1,1,1,1\n001,1,1,1,1\n", TRUTH, r"pred\.csv: row 2 repeats id '001' first seen on row 1"),
    ("empty", "", TRUTH, r"pred\.csv: the file is empty"),
    ("header only", "id,x1,y1,x2,y2\n", TRUTH, r"pred\.csv: the file is empty"),
    ("id only", "001\n", TRUTH, r"pred\.csv: row 1 has only 1 column"),
    ("infinite", "001,inf,1,1,1\n", TRUTH, r"pred\.csv: row 1, column 2 \(x1\): 'inf' is not a number"),
])
def test_bad_wide_input_is_one_clear_error(tmp_path, name, pred_text, truth_text, pattern):
    pred, truth = write(tmp_path / "pred.csv", pred_text), write(tmp_path / "truth.csv", truth_text)
    with pytest.raises(InputError, match=pattern) as info:
        convert(pred, truth)
    assert "\n" not in str(info.value)


def test_parquet_in_and_out(tmp_path, files):
    pred, truth = files
    wide = pd.read_csv(pred, header=None, dtype={0: str})
    wide.columns = ["id", "x1", "y1", "x2", "y2"]
    wide.to_parquet(tmp_path / "pred.parquet")
    pd.testing.assert_frame_equal(convert(tmp_path / "pred.parquet", truth), convert(pred, truth))
    long = convert(pred, truth, runs=["r"])
    write_long(long, tmp_path / "long.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "long.parquet"), long, check_dtype=False)


def test_csv_round_trip_is_exact(tmp_path, files):
    pred, truth = files
    long, _ = wide_to_long(pred, truth, run="r1")
    write_long(long, tmp_path / "long.csv")
    back = pd.read_csv(tmp_path / "long.csv", dtype={"image_id": str, "run": str})
    pd.testing.assert_frame_equal(back, long, check_dtype=False)


def test_metadata_template_never_overwrites(tmp_path, files):
    _, truth = files
    out = tmp_path / "meta.csv"
    assert metadata_template(truth, out, columns=["sex", "age"]) == 3
    assert out.read_text().splitlines() == ["image_id,sex,age", "001,,", "002,,", "003,,"]
    out.write_text("image_id,sex\n001,F\n")
    with pytest.raises(InputError, match="already exists"):
        metadata_template(truth, out)
    assert out.read_text() == "image_id,sex\n001,F\n"


def test_cli_convert_then_audit(tmp_path, files, capsys):
    pred, truth = files
    out, meta = tmp_path / "long.csv", tmp_path / "meta.csv"
    rc = main(["convert", "--pred", str(pred), "--truth", str(truth), "--out", str(out), "--spacing-mm", "0.5",
               "--metadata-template", str(meta), "--template-columns", "sex"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "6 rows = 3 (run, image) pairs x 2 keypoints; 3 images, 1 run" in captured.out and captured.err == ""
    long = pd.read_csv(out, dtype={"image_id": str})
    pd.testing.assert_frame_equal(long, convert(pred, truth, spacing_mm=0.5), check_dtype=False)
    assert meta.read_text().splitlines()[1] == "001,"


def test_cli_convert_runs_warning_and_errors(tmp_path, files, capsys):
    pred, truth = files
    second = write(tmp_path / "p2.csv", "002,1,1,1,1\n")
    out = tmp_path / "long.csv"
    rc = main(["convert", "--pred", str(pred), "--run", "a", "--pred", str(second), "--run", "b",
               "--truth", str(truth), "--out", str(out)])
    assert rc == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and "2 image(s) of the ground truth" in err
    assert pd.read_csv(out)["run"].tolist() == ["a"] * 6 + ["b"] * 6
    # Bad input: exit 2, one line, no traceback, the old output untouched.
    before = out.read_text()
    bad = write(tmp_path / "bad.csv", "001,1,1,1\n")
    assert main(["convert", "--pred", str(bad), "--truth", str(truth), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "odd number" in err and "Traceback" not in err
    assert out.read_text() == before
    template = write(tmp_path / "meta.csv", "image_id,sex\n001,F\n")
    assert main(["convert", "--pred", str(pred), "--truth", str(truth), "--out", str(tmp_path / "new.csv"),
                 "--metadata-template", str(template)]) == 2
    # The console wraps long lines: the message is compared with its whitespace joined.
    assert "already exists" in " ".join(capsys.readouterr().err.split()) and not (tmp_path / "new.csv").exists()


def test_isbi2015_files_convert(shared_data):
    truth = shared_data / "isbi2015_all_senior.csv"
    if not truth.exists():
        pytest.skip(f"{truth} not present")
    table = read_wide(truth, truth=True)
    assert table.coords.shape == (400, 19, 2) and not table.has_header
    assert table.ids[0] == "001" and table.ids[-1] == "400"
    raw = pd.read_csv(truth, header=None).to_numpy()[:, 1:]
    np.testing.assert_array_equal(table.coords.reshape(400, -1), raw)


def test_convert_reads_a_latin1_file_with_encoding_and_names_it_without(tmp_path, capsys):
    """--encoding on convert: a Latin-1 id is read as text; without it, one line says which encoding to try."""
    from fairlandmark.cli.main import main

    truth, pred = tmp_path / "truth.csv", tmp_path / "pred.csv"
    truth.write_bytes("id,x1,y1\nJosé,1,2\nZoë,3,4\n".encode("latin-1"))
    pred.write_bytes("id,x1,y1\nJosé,1.5,2\nZoë,3,4.5\n".encode("latin-1"))
    out = tmp_path / "long.csv"
    code = main(["convert", "--truth", str(truth), "--pred", str(pred), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert err.count("\n") == 1 and "latin-1" in err and "--encoding" in err and str(truth) in err
    code = main(["convert", "--truth", str(truth), "--pred", str(pred), "--out", str(out), "--encoding", "latin-1"])
    assert code == 0
    frame = pd.read_csv(out)
    assert list(frame["image_id"]) == ["José", "Zoë"]
    assert frame["pred_x"].tolist() == [1.5, 3.0] and frame["true_y"].tolist() == [2.0, 4.0]


def test_convert_refuses_encoding_for_coco(tmp_path, capsys):
    from fairlandmark.cli.main import main

    truth, pred = tmp_path / "gt.json", tmp_path / "res.json"
    truth.write_text("{}")
    pred.write_text("[]")
    code = main(["convert", "--truth", str(truth), "--pred", str(pred), "--out", str(tmp_path / "o.csv"),
                 "--encoding", "latin-1"])
    assert code == 2
    assert capsys.readouterr().err == "error: --encoding: COCO JSON files are always UTF-8; drop --encoding (it applies to wide CSV files)\n"
