"""Columnar reading and validation on integer codes: same Predictions from every reader and row order."""

from __future__ import annotations

import gzip
import importlib

import numpy as np
import pandas as pd
import pytest

from fairlandmark import InputError
from fairlandmark.inputs.columnar import first_appearance_codes, frame_columns
from fairlandmark.inputs.schema import check_predictions
from fairlandmark.inputs.study import prepare_study

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _study(seed=0, n_images=40, n_kp=5, runs=("h1", "h2", "h3")):
    """Long predictions: every image in every run, keypoints 1..n_kp, some missing predictions."""
    rng = np.random.default_rng(seed)
    rows = []
    for run in runs:
        for i in rng.permutation(n_images):
            for k in rng.permutation(n_kp) + 1:
                miss = rng.random() < 0.05
                rows.append({"run": run, "image_id": f"{i:03d}", "keypoint": int(k),
                             "pred_x": np.nan if miss else rng.normal(100, 5), "pred_y": np.nan if miss else rng.normal(50, 5),
                             "true_x": rng.normal(100, 1), "true_y": rng.normal(50, 1)})
    return pd.DataFrame(rows)


def _plain_pivot(frame):
    """Independent reference: a dict per (run, image) built by a Python loop, rows by first appearance."""
    order, cells = [], {}
    for rec in frame.to_dict("records"):
        key = (str(rec["run"]).strip(), str(rec["image_id"]).strip())
        if key not in cells:
            order.append(key)
            cells[key] = {}
        cells[key][int(rec["keypoint"])] = (rec["pred_x"], rec["pred_y"], rec["true_x"], rec["true_y"])
    kps = sorted({k for c in cells.values() for k in c})
    values = np.array([[cells[key][k] for k in kps] for key in order], dtype=float)  # (rows, K, 4)
    runs = list(dict.fromkeys(r for r, _ in order))
    return order, runs, kps, values


def _assert_matches(preds, frame):
    order, runs, kps, values = _plain_pivot(frame)
    assert preds.runs.tolist() == runs and preds.keypoints.tolist() == kps
    assert [(preds.runs[r], i) for r, i in zip(preds.row_run, preds.row_image)] == order
    _assert_codes_name_the_images(preds)
    missing = np.isnan(values[..., 0]) | np.isnan(values[..., 1])
    expect_pred = np.where(missing[..., None], np.nan, values[..., :2])
    np.testing.assert_array_equal(preds.pred, expect_pred)
    np.testing.assert_array_equal(preds.true, values[..., 2:])


def _assert_codes_name_the_images(preds):
    """One code per image id and one id per code: counting images by code counts the ids."""
    pairs = set(zip(preds.row_image_code.tolist(), preds.row_image.tolist()))
    assert len(pairs) == len(set(preds.row_image_code.tolist())) == len(set(preds.row_image.tolist()))


@pytest.mark.parametrize("order", ["shuffled", "sorted", "keypoints_reversed"])
def test_every_reader_gives_the_plain_loop_pivot(tmp_path, order):
    frame = _study()
    if order == "shuffled":  # lines in any order: the scatter path; in row order: a reshape
        frame = frame.sample(frac=1.0, random_state=1).reset_index(drop=True)
    else:
        frame = frame.sort_values(["run", "image_id", "keypoint"], ascending=[True, True, order == "sorted"],
                                  kind="stable").reset_index(drop=True)
    csv, parquet, dict_parquet = tmp_path / "p.csv", tmp_path / "p.parquet", tmp_path / "d.parquet"
    frame.to_csv(csv, index=False)
    frame.to_parquet(parquet)
    # Dictionary-encoded ids in several row groups, each with its own dictionary.
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.set_column(1, "image_id", table.column("image_id").dictionary_encode())
    pq.write_table(table, dict_parquet, row_group_size=97)
    for source in (frame, csv, parquet, dict_parquet):
        _assert_matches(check_predictions(source), frame)


def test_ids_are_stripped_merged_and_keep_leading_zeros(tmp_path):
    text = ("run,image_id,keypoint,pred_x,pred_y,true_x,true_y\n"
            "h1, 007,1,1,1,0,0\nh1,007 ,2,2,2,0,0\nh1,08,1,3,3,0,0\nh1,08, 2,4,4,0,0\n")
    path = tmp_path / "p.csv"
    path.write_text(text)
    preds = check_predictions(path)
    assert preds.row_image.tolist() == ["007", "08"] and preds.keypoints.tolist() == [1, 2]
    assert preds.pred[:, :, 0].tolist() == [[1, 2], [3, 4]]
    two_runs = text + "h2,007  ,1,1,1,0,0\nh2,  007,2,2,2,0,0\n"  # the same image in another run, spelt apart
    path.write_text(two_runs)
    for source in (path, pd.read_csv(path, dtype=str)):
        study = prepare_study(check_predictions(source), pd.DataFrame({"image_id": ["007", "08"], "s": ["F", "M"]}),
                              attributes=["s"])
        _assert_codes_name_the_images(study)
        assert study.first_image_rows.tolist() == [0, 1]  # image 007 counted once
    dup = text + "h1,007,1,9,9,0,0\n"
    path.write_text(dup)
    with pytest.raises(InputError, match=r"row 6 repeats \(run=h1, image_id=007, keypoint=1\) first seen on row 2"):
        check_predictions(path)


@pytest.mark.parametrize("cell", ["", " "])
def test_an_empty_id_is_empty_with_either_reader(tmp_path, cell):
    path = tmp_path / "p.csv"
    path.write_text(f"image_id,keypoint,pred_x,pred_y,true_x,true_y\na,1,0,0,0,0\n{cell},1,0,0,0,0\n")
    with pytest.raises(InputError, match=r"row 3, column 'image_id' is empty"):
        check_predictions(path)
    with pytest.raises(InputError, match=r"row 3, column 'image_id' is empty"):
        check_predictions(pd.read_csv(path, dtype=str, keep_default_na=False))


@pytest.mark.parametrize("cell", ["NA", "null", "None", "n/a"])
def test_na_spellings_are_ids_and_missing_numbers_as_in_the_pandas_reader(tmp_path, cell):
    # Only an empty cell is a missing id ('NA' is North America); in number columns pandas' NA spellings are missing.
    path = tmp_path / "p.csv"
    path.write_text(f"image_id,keypoint,pred_x,pred_y,true_x,true_y\na,1,{cell},0,0,0\n{cell},1,0,0,0,0\n")
    fast = check_predictions(path)
    gz = tmp_path / "p.csv.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    slow = check_predictions(gz)  # .gz: the pandas reader
    assert fast.row_image.tolist() == slow.row_image.tolist() == ["a", cell]
    np.testing.assert_array_equal(fast.pred, slow.pred)
    assert np.isnan(fast.pred[0, 0]).all()


def test_messages_with_many_runs_name_the_first_offending_line(tmp_path):
    frame = _study(n_images=30, n_kp=4)
    frame = frame.sort_values(["run", "image_id", "keypoint"], kind="stable").reset_index(drop=True)
    dropped = frame.drop(index=[57]).reset_index(drop=True)  # run h1, image 014, keypoint 2
    path = tmp_path / "p.csv"
    dropped.to_csv(path, index=False)
    with pytest.raises(InputError, match=r"image '014' \(run h1\) has 3 of 4 keypoints, keypoint 2 is missing"):
        check_predictions(path)
    repeated = pd.concat([frame, frame.iloc[[200]]], ignore_index=True)
    repeated.to_parquet(tmp_path / "r.parquet")
    with pytest.raises(InputError, match=rf"row {len(frame) + 2} repeats \(run=h2, image_id=020, keypoint=1\) "
                                         r"first seen on row 202"):
        check_predictions(tmp_path / "r.parquet")


def test_text_in_a_number_column_falls_back_to_the_pandas_message(tmp_path):
    frame = _study(n_images=5, n_kp=2, runs=("0",)).drop(columns="run")
    frame["pred_y"] = frame["pred_y"].astype(object)
    frame.loc[7, "pred_y"] = "oops"
    path = tmp_path / "p.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(InputError, match=r"row 9, column 'pred_y': 'oops' is not a number"):
        check_predictions(path)


def test_text_in_a_later_csv_block_still_gets_the_pandas_message(tmp_path, monkeypatch):
    import fairlandmark.inputs.columnar as columnar

    monkeypatch.setattr(columnar, "CSV_BLOCK_BYTES", 1 << 10)  # types inferred from the first kilobyte only
    frame = _study(n_images=40, n_kp=2, runs=("0",)).drop(columns="run")
    frame["true_x"] = frame["true_x"].astype(object)
    frame.loc[70, "true_x"] = "n/a?"
    path = tmp_path / "p.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(InputError, match=r"row 72, column 'true_x': 'n/a\?' is not a number"):
        check_predictions(path)
    frame.loc[70, "true_x"] = 1.5
    frame.to_csv(path, index=False)
    _assert_matches(check_predictions(path), frame.astype({"true_x": float}).assign(run="0"))


@pytest.mark.parametrize("space_factor", [1, 100])
def test_first_appearance_codes_match_a_dict(space_factor):
    rng = np.random.default_rng(3)
    keys = rng.integers(0, 50, 400) * space_factor * 100  # small space: dense path; large: sorting path
    codes, first = first_appearance_codes(keys, int(keys.max()) + 1)
    seen = {}
    expect = [seen.setdefault(k, len(seen)) for k in keys.tolist()]
    assert codes.tolist() == expect
    assert first.tolist() == [keys.tolist().index(k) for k in seen]


def test_frame_columns_factorize_like_astype_str():
    frame = pd.DataFrame({"image_id": [1, 2, 1], "kp": [1.0, 2.0, np.nan]})
    cols = frame_columns(frame)
    ids, kps = cols.encode("image_id"), cols.encode("kp")
    assert ids.labels.tolist() == ["1", "2"] and ids.codes.tolist() == [0, 1, 0]
    assert kps.labels.tolist() == ["1.0", "2.0"] and kps.codes.tolist() == [0, 1, -1]


def _both_readers(tmp_path, text):
    """check_predictions of the same CSV through the pyarrow path and (as .csv.gz) the pandas path."""
    path = tmp_path / "p.csv"
    path.write_text(text)
    gz = tmp_path / "p.csv.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    return check_predictions(path), check_predictions(gz)


def test_unlabelled_mask_and_axis_spacing_match_the_pandas_reader(tmp_path):
    text = ("image_id,keypoint,pred_x,pred_y,true_x,true_y\n"
            "a,1,1,2,3,4\na,2,1,2,,\nb,1,5,6,7,8\nb,2,1,1,2,2\n")
    fast, slow = _both_readers(tmp_path, text)
    assert fast.labelled.tolist() == slow.labelled.tolist() == [[True, False], [True, True]]
    np.testing.assert_array_equal(fast.true, slow.true)
    text = ("image_id,keypoint,pred_x,pred_y,true_x,true_y,spacing_x_mm,spacing_y_mm\n"
            "a,1,1,2,3,4,0.1,0.2\na,2,1,2,3,4,0.1,0.2\n")
    fast, slow = _both_readers(tmp_path, text)
    assert fast.labelled is None and slow.labelled is None
    np.testing.assert_array_equal(fast.spacing_xy, slow.spacing_xy)
    assert fast.spacing_xy[0, 0].tolist() == [0.1, 0.2]
    frame = pd.read_csv(tmp_path / "p.csv")
    frame.to_parquet(tmp_path / "p.parquet")
    np.testing.assert_array_equal(check_predictions(tmp_path / "p.parquet").spacing_xy, fast.spacing_xy)


@pytest.mark.filterwarnings("ignore::pandas.errors.ParserWarning")  # the pandas reference reader warns on a ragged line
def test_trailing_commas_ragged_lines_and_booleans_as_in_the_pandas_reader(tmp_path):
    fast, slow = _both_readers(tmp_path, "image_id,keypoint,pred_x,pred_y,true_x,true_y,\na,1,1,2,3,4,\n")
    np.testing.assert_array_equal(fast.pred, slow.pred)
    fast, slow = _both_readers(tmp_path, "image_id,keypoint,pred_x,pred_y,true_x,true_y\na,1,1,2,3,4,\n")
    np.testing.assert_array_equal(fast.true, slow.true)
    for path in (tmp_path / "p.csv", tmp_path / "p.csv.gz"):
        text = "image_id,keypoint,pred_x,pred_y,true_x,true_y\na,1,1,2,3,4\nb,1,1,2,3,4,5,6\n"
        path.write_bytes(gzip.compress(text.encode()) if path.suffix == ".gz" else text.encode())
        with pytest.raises(InputError, match=r"line 3 has 8 fields where the header has 6"):
            check_predictions(path)
        text = "image_id,keypoint,pred_x,pred_y,true_x,true_y\na,1,True,2,3,4\n"
        path.write_bytes(gzip.compress(text.encode()) if path.suffix == ".gz" else text.encode())
        with pytest.raises(InputError, match=r"column 'pred_x' holds True/False values"):
            check_predictions(path)
    pd.DataFrame({"image_id": ["a"], "keypoint": [1], "pred_x": [True], "pred_y": [1.0], "true_x": [1.0],
                  "true_y": [1.0]}).to_parquet(tmp_path / "b.parquet")
    with pytest.raises(InputError, match=r"column 'pred_x' holds True/False values"):
        check_predictions(tmp_path / "b.parquet")


def test_files_are_read_into_a_pool_of_their_own(tmp_path):
    """jemalloc (or the system's) for our reads; pyarrow's default pool, which other code may use, untouched."""
    from fairlandmark.inputs.columnar import reading_pool

    before = pa.default_memory_pool().backend_name
    frame = _study(n_images=12)
    frame.to_parquet(tmp_path / "p.parquet")
    _assert_matches(check_predictions(tmp_path / "p.parquet"), frame)
    assert pa.default_memory_pool().backend_name == before
    assert reading_pool().backend_name in ("jemalloc", "system")


def test_a_pool_named_in_the_environment_is_respected(monkeypatch):
    from fairlandmark.inputs.columnar import reading_pool

    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "system")
    assert reading_pool().backend_name == pa.default_memory_pool().backend_name


def test_json_safe_turns_numpy_and_non_finite_values_into_plain_json():
    from fairlandmark.files import json_safe

    doc = {1: [np.float64(0.5), np.float32(np.nan), float("inf"), -0.0, np.int64(3), np.bool_(True), True, 7, None,
               "x", (np.float64(-np.inf), 2.5)], "nested": {"k": np.int32(2)}}
    out = json_safe(doc)
    assert out == {"1": [0.5, None, None, -0.0, 3, True, True, 7, None, "x", [None, 2.5]], "nested": {"k": 2}}
    assert [type(v) for v in out["1"][:7]] == [float, type(None), type(None), float, int, bool, bool]


def test_ids_of_batches_that_share_a_row_groups_dictionary(tmp_path):
    """A row group larger than the reader's batch: its batches share one dictionary, encoded once."""
    import pyarrow.dataset as pds

    from fairlandmark.inputs.columnar import read_columns

    rng = np.random.default_rng(5)
    n = 150_000 + 40_000  # two row groups, the first split into two batches
    ids = np.array([f" img{i}" if i % 7 == 0 else f"img{i}" for i in rng.integers(0, 9_000, n)], dtype=object)
    ids[rng.integers(0, n, 20)] = ""  # empty cells: code -1
    table = pa.table({"image_id": pa.array(ids), "keypoint": pa.array(rng.integers(1, 4, n))})
    path = tmp_path / "big.parquet"
    pq.write_table(table, path, row_group_size=150_000)
    read = pds.dataset(path, format=pds.ParquetFileFormat(
        read_options=pds.ParquetReadOptions(dictionary_columns=["image_id"]))).to_table()
    assert read.column("image_id").num_chunks > pq.ParquetFile(path).num_row_groups  # batches share dictionaries
    enc = read_columns(path, id_columns=("image_id", "keypoint"), numeric_columns=()).encode("image_id")
    stripped = pd.Series(ids).str.strip().replace("", None)
    codes, labels = pd.factorize(stripped, use_na_sentinel=True)
    np.testing.assert_array_equal(enc.codes, codes)
    assert enc.labels.tolist() == labels.tolist()


@pytest.mark.parametrize("block", [150, 257, 1 << 10])
@pytest.mark.parametrize("ending", ["\n", "\r\n", "no final newline", "blank lines at the end"])
def test_csv_slices_of_any_size_read_every_line_once(tmp_path, monkeypatch, block, ending):
    """Slices cut mid-line carry the rest of the line over to the next slice."""
    import fairlandmark.inputs.columnar as columnar

    monkeypatch.setattr(columnar, "CSV_BLOCK_BYTES", block)
    frame = _study(n_images=15, n_kp=3, runs=("r1", "r2"))
    text = frame.to_csv(index=False, lineterminator="\r\n" if ending == "\r\n" else "\n")
    assert max(map(len, text.splitlines())) < block < len(text) // 4  # every line fits; many slices
    if ending == "no final newline":
        text = text.rstrip("\n")
    elif ending == "blank lines at the end":
        text += "\n\n"
    path = tmp_path / "p.csv"
    path.write_text(text)
    assert columnar.read_columns(path, id_columns=("run", "image_id", "keypoint"),
                                 numeric_columns=("pred_x",)) is not None  # pyarrow read it, in slices
    _assert_matches(check_predictions(path), frame)


@pytest.mark.parametrize("case", ["a line longer than a slice", "carriage returns alone"])
def test_csv_lines_pyarrow_does_not_slice_go_to_pandas(tmp_path, monkeypatch, case):
    import fairlandmark.inputs.columnar as columnar

    frame = _study(n_images=6, n_kp=2, runs=("r1",))
    text = frame.to_csv(index=False)
    if case == "a line longer than a slice":
        monkeypatch.setattr(columnar, "CSV_BLOCK_BYTES", 150)
        frame["image_id"] = frame["image_id"].replace("003", "an-image-id-longer-than-a-slice-" * 5)
        text = frame.to_csv(index=False)
    else:  # old Mac line ends: the header's readline would swallow the whole file
        text = text.replace("\n", "\r")
    path = tmp_path / "p.csv"
    path.write_text(text, newline="")
    assert columnar.read_columns(path, id_columns=("run", "image_id", "keypoint"), numeric_columns=("pred_x",)) is None
    _assert_matches(check_predictions(path), frame)


def test_ids_of_chunks_with_shared_repeated_and_null_dictionaries():
    """Chunks whose dictionaries repeat out of order, hold nulls, unused and whitespace twins: pandas' codes."""
    from fairlandmark.inputs.columnar import _encode_arrow

    rng = np.random.default_rng(11)
    pool = [f"id{j}" for j in range(40)] + [" id3", "id4 ", "", "  ", "NA"]
    for _ in range(300):
        dictionaries = []
        for _ in range(rng.integers(1, 5)):
            values = list(rng.choice(pool, size=rng.integers(1, 20), replace=False))
            dictionaries.append(pa.array(values + ([None] if rng.random() < 0.3 else []), pa.string()))
        chunks = []
        for _ in range(rng.integers(1, 8)):
            dictionary = dictionaries[rng.integers(0, len(dictionaries))]  # shared, and out of order
            m = int(rng.integers(0, 30))
            index = pa.array(rng.integers(0, len(dictionary), m).astype(np.int32), mask=rng.random(m) < 0.05)
            chunks.append(pa.DictionaryArray.from_arrays(index, dictionary))
        column = pa.chunked_array(chunks, type=pa.dictionary(pa.int32(), pa.string()))
        enc = _encode_arrow(column)
        stripped = pd.Series([None if v is None else v.strip() for v in column.to_pylist()], dtype=object)
        codes, labels = pd.factorize(stripped.replace("", None), use_na_sentinel=True)
        np.testing.assert_array_equal(enc.codes, codes)
        assert enc.codes.dtype == np.int32 and enc.labels.tolist() == labels.tolist()


def _damaged_parquet(path, frame, column):
    """``frame`` as Snappy Parquet with the first half of ``column``'s chunk overwritten (footer intact)."""
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, compression="snappy")
    chunk = pq.ParquetFile(path).metadata.row_group(0)
    chunk = next(chunk.column(i) for i in range(chunk.num_columns) if chunk.column(i).path_in_schema == column)
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    data = bytearray(path.read_bytes())
    data[start + 8:start + chunk.total_compressed_size // 2] = b"\xff" * (chunk.total_compressed_size // 2 - 8)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("whole_bytes", [0, 1 << 30])
def test_parquet_read_whole_or_a_column_at_a_time_gives_the_same_study(tmp_path, monkeypatch, whole_bytes):
    from fairlandmark.inputs import columnar

    frame = _study().sample(frac=1.0, random_state=2).reset_index(drop=True)
    frame.loc[frame.index[::13], ["true_x", "true_y"]] = np.nan  # unlabelled points too
    path = tmp_path / "p.parquet"
    frame.to_parquet(path)
    monkeypatch.setattr(columnar, "WHOLE_PARQUET_BYTES", whole_bytes)
    preds = check_predictions(path)
    _assert_matches(preds, frame)
    monkeypatch.setattr(columnar, "WHOLE_PARQUET_BYTES", (1 << 30) - whole_bytes)
    other = check_predictions(path)
    for name in ("pred", "true", "labelled", "row_run", "row_image"):
        np.testing.assert_array_equal(getattr(preds, name), getattr(other, name))


@pytest.mark.parametrize("whole_bytes", [0, 1 << 30])
def test_a_damaged_parquet_column_is_named_in_one_line(tmp_path, monkeypatch, whole_bytes):
    from fairlandmark.inputs import columnar

    monkeypatch.setattr(columnar, "WHOLE_PARQUET_BYTES", whole_bytes)  # the damage found either way
    frame = _study(n_images=30)
    path = tmp_path / "p.parquet"
    _damaged_parquet(path, frame, "pred_y")
    with pytest.raises(InputError) as err:
        check_predictions(path)
    message = str(err.value)
    assert "\n" not in message and "'pred_y'" in message and str(path) in message and "write it again" in message
    with pytest.raises(InputError, match=r"^my predictions: column 'pred_y' cannot be read"):
        check_predictions(path, source="my predictions")  # named as the caller names the file


def test_parquet_columns_the_audit_does_not_use_are_never_read(tmp_path):
    """Columns are read one at a time when needed: a damaged column beside them is no obstacle."""
    frame = _study(n_images=30).assign(notes=np.linspace(0, 1, 30 * 5 * 3))
    path = tmp_path / "p.parquet"
    _damaged_parquet(path, frame, "notes")
    with pytest.raises((pa.ArrowException, OSError)):  # the damage is real: the column itself cannot be read
        pq.read_table(path, columns=["notes"])
    _assert_matches(check_predictions(path), frame)


@pytest.mark.parametrize("line_block, row_block", [(7, 3), (1, 1), (64, 5)])
def test_checks_in_blocks_find_what_whole_columns_find(tmp_path, monkeypatch, line_block, row_block):
    """Infinite values, empty cells and half-missing predictions, found block by block as in one piece."""
    import fairlandmark.inputs.schema as schema

    frame = _study(n_images=12)
    frame.loc[frame.index[::17], "pred_y"] = np.nan  # half a prediction: the whole point counts as missing
    path = tmp_path / "p.parquet"
    frame.to_parquet(path)
    whole = check_predictions(path)
    monkeypatch.setattr(schema, "_LINE_BLOCK", line_block)
    monkeypatch.setattr(schema, "_ROW_BLOCK", row_block)
    blocked = check_predictions(path)
    np.testing.assert_array_equal(blocked.pred, whole.pred)
    np.testing.assert_array_equal(blocked.true, whole.true)
    _assert_matches(blocked, frame)
    for col, value, wanted in (("true_x", np.inf, "is not a number"), ("pred_y", -np.inf, "is not a number")):
        bad = frame.copy()
        bad.loc[bad.index[100], col] = value
        bad.loc[bad.index[150], col] = value  # the first of two is named
        bad.to_parquet(path)
        with pytest.raises(InputError, match=rf"row 102, column '{col}'.*{wanted}"):
            check_predictions(path)


def test_error_mm_beside_predictions_is_noted_whichever_block_holds_them(tmp_path, monkeypatch):
    import fairlandmark.inputs.schema as schema

    frame = _study(n_images=12, runs=("h1",)).assign(error_mm=1.0)
    frame.loc[frame.index[5:], ["pred_x", "pred_y"]] = np.nan  # predictions in the first rows only
    path = tmp_path / "p.parquet"
    frame.to_parquet(path)
    monkeypatch.setattr(schema, "_ROW_BLOCK", 3)
    notes = []
    check_predictions(path, notes=notes)
    assert any("error_mm as given" in n for n in notes)
    frame[["pred_x", "pred_y"]] = np.nan  # no prediction at all: nothing to note
    frame.to_parquet(path)
    notes = []
    check_predictions(path, notes=notes)
    assert notes == []


def test_a_parquet_file_is_read_as_one_file_from_first_column_to_last(tmp_path, monkeypatch):
    """Replaced under its name mid-check: still the file opened. Written again in place: refused in one line."""
    import os
    import time

    from fairlandmark.inputs import columnar
    from fairlandmark.inputs.columnar import read_columns

    monkeypatch.setattr(columnar, "WHOLE_PARQUET_BYTES", 0)  # a column at a time, as a large file is read

    frame = _study(n_images=10)
    path, other = tmp_path / "p.parquet", tmp_path / "q.parquet"
    frame.to_parquet(path)
    frame.assign(pred_x=frame["pred_x"] + 1000).to_parquet(other)
    cols = read_columns(path, id_columns=("image_id", "keypoint", "run"), numeric_columns=("pred_x",))
    cols.encode("image_id")
    os.replace(other, path)  # a new file under the old name: the one opened is read to the end
    np.testing.assert_array_equal(cols.numbers("pred_x"), frame["pred_x"].to_numpy())

    cols = read_columns(path, id_columns=("image_id", "keypoint", "run"), numeric_columns=("pred_x",))
    cols.encode("image_id")
    time.sleep(0.01)
    with open(path, "r+b") as handle:  # the same file, written again in place
        data = handle.read()
        handle.seek(0)
        handle.write(data + b"\0")
    with pytest.raises(InputError, match=r"p\.parquet: the file changed while it was being read"):
        cols.numbers("pred_x")

    frame.to_parquet(path)
    cols = read_columns(path, id_columns=("image_id", "keypoint", "run"), numeric_columns=("pred_x",))
    cols.encode("image_id")
    os.utime(path, ns=(1, 1))  # touched only (a backup tool): the same file, read on
    np.testing.assert_array_equal(cols.numbers("pred_x"), frame["pred_x"].to_numpy())


def test_nested_ids_and_damaged_bytes_get_one_plain_line(tmp_path):
    frame = _study(n_images=4)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    nested = table.set_column(table.schema.get_field_index("image_id"), "image_id",
                              pa.array([{"a": v} for v in frame["image_id"]]))
    path = tmp_path / "n.parquet"
    pq.write_table(nested, path)
    with pytest.raises(InputError, match=r"column 'image_id' holds nested values \(struct\), not ids"):
        check_predictions(path)
    from fairlandmark.inputs.columnar import _printable

    assert _printable("bad \x1b[31mbyte\x0f here\nsecond line") == "bad ?[31mbyte? here"


def test_a_pyarrow_without_parquet_datasets_reads_through_pandas(tmp_path, monkeypatch):
    import sys

    frame = _study(n_images=6)
    path = tmp_path / "p.parquet"
    frame.to_parquet(path)
    monkeypatch.setitem(sys.modules, "pyarrow.dataset", None)  # import pyarrow.dataset raises ImportError
    _assert_matches(check_predictions(path), frame)


def test_point_estimates_run_their_products_on_one_blas_thread_and_give_the_threads_back(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from fairlandmark.audit import audit
    from fairlandmark.stats import kernel

    def blas_threads() -> list[int]:
        return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    seen: list[list[int]] = []
    label_sums = kernel.label_sums

    def watched(*args, **kwargs):
        seen.append(blas_threads())
        return label_sums(*args, **kwargs)

    monkeypatch.setattr(importlib.import_module("fairlandmark.audit"), "label_sums", watched)
    preds = pd.DataFrame({"image_id": list("abcd"), "keypoint": 1, "error_mm": [0.5, 3.0, 1.0, 2.5]})
    meta = pd.DataFrame({"image_id": list("abcd"), "sex": list("FFMM")})
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        two = blas_threads()
        audit(preds, meta, attributes=["sex"], min_group_size=1, significance=False)
        assert blas_threads() == two  # given back as they were
    assert seen and all(n == 1 for n in seen[0])
    assert blas_threads() == before
    assert kernel._ONE_BLAS_THREAD._controller is not None  # the libraries are looked up once, then kept


def test_blocks_on_one_blas_thread_that_overlap_on_two_threads_give_the_threads_back():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import threading

    from fairlandmark.stats.kernel import single_threaded_blas

    def blas_threads() -> set[int]:
        return {i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"}

    seen = {}
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:  # enters first, leaves while the second is still inside
        with single_threaded_blas():
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def second() -> None:
        a_in.wait(10)
        with single_threaded_blas():
            b_in.set()
            a_out.wait(10)
            seen["after the first left"] = blas_threads()
            with single_threaded_blas():  # nested: changes nothing
                pass
            seen["after a nested block"] = blas_threads()

    # No outer limit here: while a limit set by the main thread is active, a count set on another thread has no
    # effect (seen with OpenBLAS 0.3.31 and threadpoolctl 3.8).
    before = blas_threads()
    if before == {1}:
        pytest.skip("BLAS runs one thread on this machine: nothing to take away and give back")
    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert seen == {"after the first left": {1}, "after a nested block": {1}}
    assert blas_threads() == before  # the last to leave gave them back


def test_encode_groups_names_an_image_missing_from_the_metadata():
    from fairlandmark.inputs.groups import encode_groups

    meta = pd.DataFrame({"a": ["x", "y", "x", "z"]}, index=pd.Index(["i0", "i1", "i2", "i3"], name="image_id"))
    with pytest.raises(InputError, match=r"meta.csv: image 'zz' has predictions but no row in the metadata"):
        encode_groups(meta, np.array(["i0", "zz", "i1"], dtype=object), attributes=["a"], source="meta.csv")
    coding = encode_groups(meta, np.array(["i0", "i3", "i1", "i0"], dtype=object), attributes=["a"])
    assert coding.groups["a"] == ["x", "y", "z"] and coding.base_codes["a"].tolist() == [0, 2, 1, 0]
    unused = encode_groups(meta, np.array(["i0", "i1", "i2"], dtype=object), attributes=["a"])
    assert unused.groups["a"] == ["x", "y"]  # z: no audited image, no group


@pytest.mark.parametrize("names", [False, True])
def test_the_documents_small_tables_are_the_result_tables_made_json_safe(names):
    import json

    import fairlandmark
    from fairlandmark.files import json_safe

    rng = np.random.default_rng(4)
    n, k = 40, 4
    true = rng.uniform(0, 50, (n, k, 2))
    pred = true + rng.normal(0, 1.5, true.shape)
    pred[:3, 1] = np.nan  # missing predictions
    true[5, 2] = np.nan  # an unlabelled point
    kps = ["a", "b", "c", "d"] if names else None
    res = fairlandmark.audit_arrays(pred, true, {"sex": ["F", "M"] * (n // 2), "site": ["x"] * 38 + ["y"] * 2},
                                    spacing_mm=1.0, keypoints=kps, families={"ab": (kps or [1, 2, 3, 4])[:2]},
                                    min_group_size=5,
                                    significance=False, curves=False, emit_warnings=False)
    doc = res.to_dict()
    for name in ("groups", "summary", "overall"):
        table = getattr(res, name)
        assert json.dumps(doc[name]) == json.dumps(json_safe(table.to_dict("records")))
    assert any(r["max_dp_keypoint"] is None for r in doc["summary"])  # site: one group too small, no DP
    assert {type(r["max_dp_keypoint"]) for r in doc["summary"]} == {str if names else int, type(None)}
    assert res.summary["max_dp_keypoint"].dtype == object
