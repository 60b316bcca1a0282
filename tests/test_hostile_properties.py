"""Property-based tests of the readers (Hypothesis): any generated file either audits with the numbers of
its clean twin or raises InputError, never another exception.

Readers: predictions and metadata (CSV: encodings, BOM, CRLF, quoting, padding, trailing commas, NA-like and
markup-like names), wide files (convert), gate configs (TOML) and audit documents (JSON).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os

import numpy as np
import pandas as pd
import pytest
from _hostile_data import study_frames

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import fairlandmark as fl  # noqa: E402
from fairlandmark.exceptions import InputError  # noqa: E402

SETTINGS = settings(max_examples=int(os.environ.get("HOSTILE_EXAMPLES", "25")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                           HealthCheck.too_slow])
NAMES = st.one_of(st.sampled_from(["NA", "None", "NULL", "n/a", "nan", "[red]M[/red]", "[/]", "[bold", "<script>",
                                   "Zoë", "北", "1", "1.0", "0001", "true", "a,b", 'q"uote', "  pad  ", "-", "#"]),
                  st.text(min_size=1, max_size=8))
LAYOUT = st.fixed_dictionaries({
    "encoding": st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]),
    "newline": st.sampled_from(["\n", "\r\n"]),
    "quote_all": st.booleans(),
    "pad": st.booleans(),
    "trailing_comma": st.booleans(),
})


def write_csv(path, frame, layout):
    """``frame`` as CSV with the messy but legitimate ``layout``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=layout["newline"],
                        quoting=csv.QUOTE_ALL if layout["quote_all"] else csv.QUOTE_MINIMAL)
    rows = [list(frame.columns)] + frame.astype(object).values.tolist()
    for row in rows:
        cells = [(" " + str(c)) if layout["pad"] and not layout["quote_all"] else str(c) for c in row]
        writer.writerow(cells + ([""] if layout["trailing_comma"] else []))
    path.write_bytes(buffer.getvalue().encode(layout["encoding"]))


def dp(result):
    return result.per_keypoint.sort_values(["attribute", "keypoint"])["dp"].to_numpy()


@SETTINGS
@given(a=NAMES, b=NAMES, layout=LAYOUT)
def test_metadata_with_any_group_names_and_layout(tmp_path_factory, a, b, layout):
    clean_a, clean_b = a.strip(), b.strip()
    assume(clean_a and clean_b and clean_a != clean_b)
    preds, meta = study_frames(groups=("A", "B"))
    clean = fl.audit(preds, meta, attributes=["sex"], min_group_size=1)
    messy = meta.assign(sex=meta["sex"].map({"A": a, "B": b}))
    path = tmp_path_factory.mktemp("meta") / "m.csv"
    write_csv(path, messy[["image_id", "sex"]], layout)
    try:
        result = fl.audit(preds, path, attributes=["sex"], min_group_size=1)
    except InputError:
        return
    assert sorted(result.groups["group"]) == sorted([clean_a, clean_b])
    assert np.allclose(dp(result), dp(clean), equal_nan=True)


@SETTINGS
@given(layout=LAYOUT, ids=st.lists(NAMES, min_size=4, max_size=4, unique_by=lambda s: s.strip()),
       scale=st.sampled_from([1.0, 1e-3, 1e3]), sci=st.booleans())
def test_predictions_with_any_ids_and_layout(tmp_path_factory, layout, ids, scale, sci):
    assume(all(i.strip() for i in ids))
    preds, meta = study_frames(n_images=4, groups=("A", "B"))
    mapping = dict(zip(meta["image_id"], ids))
    clean = fl.audit(preds, meta, attributes=["sex"], min_group_size=1, spacing_mm=scale)
    messy = preds.assign(image_id=preds["image_id"].map(mapping))
    if sci:  # scientific notation
        for col in ("pred_x", "pred_y", "true_x", "true_y"):
            messy[col] = [f"{v:.6e}" for v in messy[col]]
    folder = tmp_path_factory.mktemp("preds")
    write_csv(folder / "p.csv", messy, layout)
    write_csv(folder / "m.csv", meta.assign(image_id=meta["image_id"].map(mapping))[["image_id", "sex"]], layout)
    try:
        result = fl.audit(folder / "p.csv", folder / "m.csv", attributes=["sex"], min_group_size=1,
                          spacing_mm=scale)
    except InputError:
        return
    assert np.allclose(dp(result), dp(clean), equal_nan=True)
    assert np.allclose(result.overall["mre"], clean.overall["mre"], rtol=1e-6)


CELLS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**20, 10**20), st.booleans(),
                  st.none(), st.text(max_size=6), st.sampled_from(["NA", "", " ", "1e999", "-0", "0x10"]))


@SETTINGS
@given(cells=st.lists(CELLS, min_size=1, max_size=6), column=st.sampled_from(["pred_x", "true_y", "keypoint",
                                                                                 "image_id"]))
def test_any_cell_values_are_numbers_or_one_input_error(cells, column):
    preds, meta = study_frames()
    messy = preds.astype(object)
    for i, value in enumerate(cells):
        messy.at[i * 5, column] = value
    try:
        result = fl.audit(messy, meta, attributes=["sex"], min_group_size=1)
    except InputError:
        return
    numbers = result.per_keypoint["dp"].to_numpy(dtype=float)
    assert np.all(np.isnan(numbers) | ((numbers >= 0) & (numbers <= 1)))
    mre = result.overall["mre"].to_numpy(dtype=float)
    assert np.all(np.isnan(mre) | np.isfinite(mre))


@SETTINGS
@given(rows=st.lists(st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=3), st.just("")), min_size=1,
                              max_size=6), min_size=1, max_size=5),
       layout=LAYOUT)
def test_wide_files_convert_or_one_input_error(tmp_path_factory, rows, layout):
    from fairlandmark.inputs.convert import convert, read_wide

    folder = tmp_path_factory.mktemp("wide")
    write_csv(folder / "t.csv", pd.DataFrame([["a", 0, 0, 1, 1], ["b", 2, 2, 3, 3]], columns=list("iabcd")),
              {**layout, "trailing_comma": False})
    (folder / "t.csv").write_bytes(b"\n".join((folder / "t.csv").read_bytes().splitlines()[1:]) + b"\n")
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    (folder / "p.csv").write_text(buffer.getvalue())
    try:
        truth = read_wide(folder / "t.csv", truth=True)
        frame = convert([folder / "p.csv"], truth)
    except InputError:
        return
    assert set(frame.columns) >= {"image_id", "keypoint", "pred_x", "pred_y", "true_x", "true_y"}


TOML_VALUES = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3), st.booleans(),
                        st.text(max_size=5), st.lists(st.text(max_size=3), max_size=3),
                        st.dictionaries(st.text(max_size=3), st.integers(0, 1), max_size=2))


def toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, (int,)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {v}" for k, v in value.items()) + "}"


@pytest.fixture(scope="module")
def audit_doc():
    preds, meta = study_frames()
    return json.loads(fl.audit(preds, meta, attributes=["sex"], min_group_size=1).to_json())


@SETTINGS
@given(key=st.sampled_from(["max_dp", "max_mean_dp", "max_mre", "min_sdr", "attributes", "baseline",
                            "max_dp_only_significant", "unknown", "max_dp_regression"]),
       value=TOML_VALUES, raw=st.binary(max_size=8))
def test_gate_config_passes_fails_or_one_input_error(tmp_path_factory, audit_doc, key, value, raw):
    from fairlandmark.gate import load_rules, run_gate

    folder = tmp_path_factory.mktemp("gate")
    (folder / "fairlandmark.toml").write_bytes(f"[gate]\n{key} = {toml_value(value)}\n".encode() + b"# " + raw
                                               + b"\n")
    try:
        result = run_gate(audit_doc, load_rules(folder / "fairlandmark.toml"))
    except InputError:
        return
    assert result.exit_code in (0, 1)
    assert result.checks  # a gate that checked nothing fails with a check saying so


JSON_VALUES = st.recursive(st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False), st.integers(),
                                     st.text(max_size=4)),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(st.text(max_size=4), inner, max_size=3)),
                           max_leaves=8)


@SETTINGS
@given(field=st.sampled_from(["attributes", "keypoints", "thresholds", "per_keypoint", "summary", "overall",
                              "unit", "schema_version", "significance", "privacy", "primary_threshold",
                              "per_keypoint.0.dp", "per_keypoint.0.keypoint", "per_keypoint.0.sdr_by_group",
                              "summary.0.mean_dp", "overall.0.mre", "per_keypoint.0.pair"]),
       value=JSON_VALUES)
def test_audit_document_readers_or_one_input_error(audit_doc, field, value):
    from fairlandmark.compare import compare
    from fairlandmark.gate import GateRules, run_gate
    from fairlandmark.render.markdown import to_markdown

    doc = json.loads(json.dumps(audit_doc))
    target, *path = field.split(".")
    if path:
        doc[target][int(path[0])][path[1]] = value
    else:
        doc[target] = value
    for reader in (lambda: to_markdown(doc), lambda: compare(audit_doc, doc),
                   lambda: run_gate(doc, GateRules(max_dp=0.5, max_mre=100.0, max_mean_dp=0.5))):
        try:
            reader()
        except InputError:
            pass


@pytest.mark.parametrize("field, value, expected", [
    ("pair", 1.0, "a list of two group labels"), ("pair", "F vs M", "a list of two group labels"),
    ("pair", ["F"], "a list of two group labels"), ("pair", [["F"], "M"], "a list of two group labels"),
    ("dp_ci", [0.1], "a list of two numbers"), ("dp_ci", 0.2, "a list of two numbers"),
    ("dp_ci", ["a", 0.2], "a list of two numbers")])
def test_a_pair_or_interval_that_is_not_two_values_is_one_input_error(audit_doc, field, value, expected):
    # Found by the property test above: a number as the pair passed validation and crashed the Markdown reader;
    # a list as one end of a measurement's pair crashed its table the same way.
    from fairlandmark.document import validate_document
    from fairlandmark.render.markdown import to_markdown

    for records in ("per_keypoint", "measurements"):
        doc = json.loads(json.dumps(audit_doc))
        doc[records] = [dict(doc["per_keypoint"][0], **{field: value})]
        with pytest.raises(InputError, match=f"{expected} in '{field}'"):
            validate_document(doc)
        with pytest.raises(InputError):
            to_markdown(doc)
