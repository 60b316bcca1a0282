"""``fairlandmark audit`` end to end on files: numbers, outputs, and bad input."""

from __future__ import annotations

import json
import re
import math
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_audit_numbers import compare, random_study, reference_audit

from fairlandmark import FairlandmarkWarning, audit
from fairlandmark.cli import main

NO_SIG = ["--no-significance"]  # significance has its own tests; keep these fast
THRESHOLDS = (2.0, 4.0)


def console_script():
    """The installed ``fairlandmark`` script next to this interpreter, else on PATH."""
    here = Path(sys.executable).parent / "fairlandmark"
    return str(here) if here.exists() else shutil.which("fairlandmark")


@pytest.fixture
def study(tmp_path):
    preds, meta = random_study(5, runs=["h1", "h2", "h3"])
    p, m = tmp_path / "preds.csv", tmp_path / "meta.csv"
    preds.to_csv(p, index=False)
    meta.to_csv(m, index=False)
    return p, m, preds, meta


def audit_args(p, m, *extra):
    return ["audit", str(p), str(m), "-a", "sex", "-a", "site", "--spacing-mm", "0.1", "--threshold-mm", "2",
            "--threshold-mm", "4", "--min-group-size", "5", "--family", "first=1-2", *NO_SIG, *extra]


def api_result(p, m):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairlandmarkWarning)
        return audit(str(p), str(m), attributes=["sex", "site"], spacing_mm=0.1, thresholds_mm=THRESHOLDS,
                     min_group_size=5, families={"first": [1, 2]}, significance=False)


def test_cli_json_and_csv_equal_api_and_reference(study, tmp_path, capsys):
    p, m, preds, meta = study
    out_json, out_csv = tmp_path / "out" / "audit.json", tmp_path / "audit.csv"
    assert main(audit_args(p, m, "--json", str(out_json), "--csv", str(out_csv), "-q")) == 0
    err = capsys.readouterr().err
    assert "missing prediction(s)" in err and "group 'C'" in err  # warnings still shown with -q
    res = api_result(p, m)
    doc = json.loads(out_json.read_text())
    assert doc == json.loads(res.to_json())  # the CLI is the API, number for number
    ref = reference_audit(preds, meta, attributes=["sex", "site"], thresholds=THRESHOLDS, min_group_size=5,
                          spacing_mm=0.1, families={"first": [1, 2]})
    compare(res, ref, THRESHOLDS, {"first": [1, 2]})
    assert doc["schema_version"] == "1.0" and doc["unit"] == "mm" and doc["n_runs"] == 3
    first = doc["per_keypoint"][0]
    for key in ("attribute", "keypoint", "dp", "dp_std", "pair", "sdr_by_group", "mre_by_group", "n_by_group"):
        assert key in first
    csv = pd.read_csv(out_csv)
    frame = res.to_frame()
    assert list(csv.columns) == list(frame.columns) and len(csv) == len(frame)
    for col in ["n_images", "n_missing", "mre", "mre_std", "sdr_2", "sdr_4_std", "dp", "dp_std"]:
        np.testing.assert_allclose(csv[col].to_numpy(float), frame[col].to_numpy(float), rtol=1e-15,
                                   equal_nan=True, err_msg=col)
    assert csv["group"].tolist() == frame["group"].tolist()


def test_cli_tables_on_terminal(study, capsys):
    p, m, _, _ = study
    assert main(audit_args(p, m)) == 0
    out = capsys.readouterr().out
    for text in ("sex", "site", "sex&site", "DP", "MRE", "warning:", "missing prediction"):
        assert text in out


def test_cli_pixels_without_scale(tmp_path, capsys):
    preds, meta = random_study(9)
    preds.to_csv(tmp_path / "p.csv", index=False)
    meta.to_csv(tmp_path / "m.csv", index=False)
    out = tmp_path / "a.json"
    assert main(["audit", str(tmp_path / "p.csv"), str(tmp_path / "m.csv"), "-a", "sex", "--threshold-mm", "20",
                 "--min-group-size", "5", "--json", str(out), "-q", *NO_SIG]) == 0
    doc = json.loads(out.read_text())
    assert doc["unit"] == "px" and doc["thresholds"] == [20.0]
    ref = reference_audit(preds, meta, attributes=["sex"], thresholds=(20.0,), min_group_size=5)
    for rec in doc["per_keypoint"]:
        exp = ref["per_keypoint"][(rec["attribute"], rec["keypoint"])]["dp"]
        np.testing.assert_allclose(rec["dp"], exp, rtol=1e-12)


def test_cli_parquet_input_gives_the_same_numbers(study, tmp_path):
    p, m, preds, meta = study
    preds.to_parquet(tmp_path / "p.parquet")
    meta.to_parquet(tmp_path / "m.parquet")
    a, b = tmp_path / "csv.json", tmp_path / "pq.json"
    assert main(audit_args(p, m, "--json", str(a), "-q")) == 0
    assert main(audit_args(tmp_path / "p.parquet", tmp_path / "m.parquet", "--json", str(b), "-q")) == 0
    da, db = json.loads(a.read_text()), json.loads(b.read_text())
    da.pop("warnings"), db.pop("warnings")  # they name the files
    assert da == db


def test_cli_metadata_rows_without_predictions_warn_with_count(study, tmp_path, capsys):
    p, m, _, meta = study
    extra = pd.concat([meta, pd.DataFrame({"image_id": ["900", "901"], "sex": "F", "site": "A", "age": 10})])
    extra.to_csv(tmp_path / "more.csv", index=False)
    out = tmp_path / "a.json"
    assert main(audit_args(p, tmp_path / "more.csv", "--json", str(out), "-q")) == 0
    err = capsys.readouterr().err
    assert "2 metadata row(s) have no predictions (e.g. '900', '901'); they are ignored" in err
    assert any("2 metadata row(s)" in w for w in json.loads(out.read_text())["warnings"])


HEADER = "image_id,keypoint,pred_x,pred_y,true_x,true_y\n"
GOOD_META = "image_id,sex\na,F\nb,M\n"


def _good_preds(n_kp=2, images=("a", "b")):
    return HEADER + "".join(f"{i},{k},1,1,0,0\n" for i in images for k in range(1, n_kp + 1))


BAD_INPUTS = {
    "misspelt column": (_good_preds().replace("pred_x", "pred_xx"), GOOD_META, [],
                        r"preds\.csv: .*did you mean 'pred_xx'"),
    "misspelt image_id": (_good_preds().replace("image_id", "image_di"), GOOD_META, [],
                          r"preds\.csv: missing column 'image_id' \(did you mean 'image_di'\?\)"),
    "non-numeric": (_good_preds().replace("b,2,1,1,0,0", "b,2,1,one,0,0"), GOOD_META, [],
                    r"preds\.csv: row 5, column 'pred_y': 'one' is not a number"),
    "duplicate": (_good_preds() + "a,1,2,2,0,0\n", GOOD_META, [],
                  r"preds\.csv: row 6 repeats \(run=0, image_id=a, keypoint=1\) first seen on row 2"),
    "not in metadata": (_good_preds(images=("a", "b", "c")), GOOD_META, [],
                        r"meta\.csv: 1 image id\(s\) of the predictions are not in the metadata \(e\.g\. 'c'\)"),
    "NaN attribute": (_good_preds(), "image_id,sex\na,F\nb,\n", [], r"meta\.csv: row 3, column 'sex' is empty"),
    "empty predictions": ("", GOOD_META, [], r"preds\.csv: the file is empty"),
    "header only": (HEADER, GOOD_META, [], r"preds\.csv: the file is empty"),
    "empty metadata": (_good_preds(), "", [], r"meta\.csv: the file is empty"),
    "keypoint missing": (_good_preds().replace("b,2,1,1,0,0\n", ""), GOOD_META, [],
                         r"preds\.csv: image 'b' \(run 0\) has 1 of 2 keypoints, keypoint 2 is missing"),
    "single group": (_good_preds(), "image_id,sex\na,F\nb,F\n", [],
                     r"meta\.csv: attribute 'sex' has a single group \('F'\)"),
    "unknown attribute": (_good_preds(), GOOD_META, ["-a", "age"], r"missing column 'age'"),
    "family keypoint": (_good_preds(), GOOD_META, ["--family", "w=1-5"], r"--family w: keypoint '3' is not in"),
    "bad bin": (_good_preds(), GOOD_META, ["--bin", "age"], r"--bin 'age': expected COLUMN=CUT"),
    "bad wrist": (_good_preds(), GOOD_META, ["--wrist-width", "1,2"], r"--wrist-width '1,2': expected A,B,MM"),
    "two scales": (_good_preds().replace("true_y\n", "true_y,spacing_mm\n").replace(",0,0\n", ",0,0,0.1\n"),
                   GOOD_META, ["--spacing-mm", "0.1"], r"give only one pixel-to-mm scale"),
    "repeated attribute column": (_good_preds(), "image_id,sex,sex\na,F,M\nb,M,F\n", [],
                                  r"meta\.csv: column 'sex' appears twice in the header; keep one"),
    "column repeated after stripping": (_good_preds().replace("true_y\n", "true_y,pred_x \n")
                                        .replace(",0,0\n", ",0,0,5\n"), GOOD_META, [],
                                        r"preds\.csv: column 'pred_x' appears twice"),
    "infinite coordinate": (_good_preds().replace("b,2,1,1,0,0", "b,2,1,inf,0,0"), GOOD_META, [],
                            r"row 5, column 'pred_y': 'inf' is not a number"),
    "same threshold twice": (_good_preds(), GOOD_META, ["--threshold-mm", "2", "--threshold-mm", "2.0000001"],
                             r"2 and 2\.0000001 are both named '2' in the outputs"),
    "binned twice": (_good_preds(), "image_id,sex,age\na,F,3\nb,M,20\n", ["--bin", "age=14", "--bin", "age=15"],
                     r"--bin age: given twice"),
    "output folder": (_good_preds(), GOOD_META, ["--markdown", "{tmp}"], r"--markdown .*: is a folder"),
    "output is the metadata": (_good_preds(), GOOD_META, ["--html", "{tmp}/meta.csv"],
                               r"--html .*meta\.csv: that is the metadata file this command reads"),
    "gate config typo": (_good_preds(), GOOD_META, ["--gate", "--gate-config", "{tmp}/nope.toml"],
                         r"nope\.toml: config file not found"),
    "within without privacy": (_good_preds(), GOOD_META, ["--privacy-within", "sex"],
                               r"--privacy-within needs --privacy"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_cli_bad_input_exit_2_one_line_no_clobber(case, tmp_path, capsys):
    preds_text, meta_text, extra, pattern = BAD_INPUTS[case]
    p, m = tmp_path / "preds.csv", tmp_path / "meta.csv"
    p.write_text(preds_text)
    m.write_text(meta_text)
    out_json, out_csv = tmp_path / "old.json", tmp_path / "old.csv"
    out_json.write_text("previous result\n")
    out_csv.write_text("previous table\n")
    extra = [e.format(tmp=tmp_path) for e in extra]
    rc = main(["audit", str(p), str(m), "--min-group-size", "1", "--json", str(out_json), "--csv", str(out_csv),
               "-q", *NO_SIG, *extra])
    captured = capsys.readouterr()
    assert rc == 2
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert out_json.read_text() == "previous result\n" and out_csv.read_text() == "previous table\n"
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".tmp-")]  # no temporary left behind


def test_cli_missing_file_and_no_command(tmp_path, capsys):
    assert main(["audit", str(tmp_path / "nope.csv"), str(tmp_path / "meta.csv"), *NO_SIG]) == 2
    assert capsys.readouterr().err.strip().endswith("nope.csv: file not found; check the path")
    assert main([]) == 2


def test_console_script_end_to_end(study, tmp_path):
    script = console_script()
    if script is None:
        pytest.skip("the fairlandmark console script is not installed")
    p, m, _, _ = study
    out = tmp_path / "sub.json"
    run = subprocess.run([script, *audit_args(p, m, "--json", str(out), "-q")], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(out.read_text()) == json.loads(api_result(p, m).to_json())
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "a,1,x,1,0,0\n")
    run = subprocess.run([script, "audit", str(bad), str(m), *NO_SIG], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "bad.csv: row 2, column 'pred_x': 'x' is not a number" in run.stderr
    assert "Traceback" not in run.stderr
    assert math.isfinite(json.loads(out.read_text())["overall"][0]["mre"])


def test_cli_unwritable_output_is_one_line(study, tmp_path, capsys):
    p, m, _, _ = study
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    assert main(audit_args(p, m, "--json", str(blocker / "out.json"), "-q")) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("error: ") and "check the path and its permissions" in err[-1]
    assert "Traceback" not in "\n".join(err) and blocker.read_text() == "not a folder\n"


def test_cli_audit_writes_reports_and_gates_in_one_run(study, tmp_path, capsys):
    p, m, _, _ = study
    html, md, junit = tmp_path / "r.html", tmp_path / "s.md", tmp_path / "g.xml"
    passing = main(audit_args(p, m, "-q", "--html", str(html), "--markdown", str(md), "--gate", "--max-dp", "1",
                              "--junit", str(junit)))
    assert passing == 0
    text = html.read_text()
    assert "<html" in text.lower() and "http://" not in text and "https://" not in text
    assert md.read_text().startswith("## ")
    dp = api_result(p, m).per_keypoint["dp"]
    strict = float(dp.max()) / 2  # below the largest DP: the gate must fail
    failing = main(audit_args(p, m, "-q", "--gate", "--max-dp", f"{strict}", "--junit", str(junit)))
    assert failing == 1
    import xml.etree.ElementTree as ET

    failed = [c for c in ET.parse(junit).iter("testcase") if c.find("failure") is not None]
    assert len(failed) == int((dp > strict + 1e-9).sum())


def test_cli_error_mm_beside_coordinates_warns_that_it_wins(tmp_path, capsys):
    p, m = tmp_path / "preds.csv", tmp_path / "meta.csv"
    p.write_text(_good_preds().replace("true_y\n", "true_y,error_mm\n").replace(",0,0\n", ",0,0,7\n"))
    m.write_text(GOOD_META)
    out = tmp_path / "a.json"
    assert main(["audit", str(p), str(m), "--min-group-size", "1", "--json", str(out), "-q", *NO_SIG]) == 0
    assert "uses error_mm as given and ignores the coordinates" in " ".join(capsys.readouterr().err.split())
    assert json.loads(out.read_text())["overall"][0]["mre"] == 7.0


def test_every_command_refuses_to_write_over_its_input(tmp_path, capsys):
    """An output that is also an input would destroy the input: exit 2 before any work, the input intact."""
    p, m = tmp_path / "preds.csv", tmp_path / "meta.csv"
    p.write_text(_good_preds())
    m.write_text(GOOD_META)
    doc = tmp_path / "a.json"
    assert main(["audit", str(p), str(m), "--min-group-size", "1", "--json", str(doc), "-q", *NO_SIG]) == 0
    wide = tmp_path / "truth.csv"
    wide.write_text("a,0,0,1,1\nb,0,0,1,1\n")
    calls = {
        "audit --json": ["audit", str(p), str(m), "--json", str(m), *NO_SIG],
        "audit --csv": ["audit", str(p), str(m), "--csv", str(p), *NO_SIG],
        "gate --junit": ["gate", str(doc), "--no-config", "--max-dp", "1", "--junit", str(doc)],
        "compare --json": ["compare", str(doc), str(doc), "--json", str(doc)],
        "report --html": ["report", str(doc), "--html", str(doc)],
        "privacy --json": ["privacy", str(p), str(m), "-t", "sex", "--json", str(m)],
        "convert --out": ["convert", "--pred", str(wide), "--truth", str(wide), "--out", str(wide)],
        "two outputs, one path": ["audit", str(p), str(m), "--json", str(tmp_path / "x"), "--csv",
                                  str(tmp_path / "x"), *NO_SIG],
    }
    before = {f: f.read_bytes() for f in (p, m, doc, wide)}
    for name, argv in calls.items():
        assert main(argv) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and ("this command reads" in err[0] or "also given to" in err[0]), (name, err)
    assert {f: f.read_bytes() for f in before} == before
    assert not (tmp_path / "x").exists()


def test_atomic_write_errors_name_the_requested_path_and_leave_no_temporary(tmp_path):
    from fairlandmark.files import atomic_write_text

    folder = tmp_path / "taken"
    folder.mkdir()
    with pytest.raises(OSError) as info:
        atomic_write_text(folder, "x")
    assert info.value.filename == str(folder)
    assert [f.name for f in tmp_path.iterdir()] == ["taken"]


def test_n_jobs_changes_nothing_but_the_speed_and_zero_is_refused(study, tmp_path, capsys):
    p, m, _, _ = study
    sig = ["--permutations", "200", "--bootstrap", "30", "--baseline-repeats", "20", "--seed", "4"]
    docs = []
    for n_jobs in ("1", "2"):
        out = tmp_path / f"audit{n_jobs}.json"
        args = [a for a in audit_args(p, m) if a not in NO_SIG] + sig + ["--n-jobs", n_jobs, "--json", str(out), "-q"]
        assert main(args) == 0
        docs.append(out.read_text())
    assert docs[0] == docs[1]
    capsys.readouterr()
    assert main(audit_args(p, m, "--n-jobs", "0")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--n-jobs" in err[0] and "Traceback" not in err[0]


def test_reports_of_the_audit_command_name_options_as_its_flags(study, tmp_path):
    # The terminal says --min-group-size; so do the HTML and Markdown reports this command writes. The JSON
    # keeps the Python names, and a report made later from that JSON says what the JSON says.
    p, m, _, _ = study
    html, md, doc = tmp_path / "r.html", tmp_path / "s.md", tmp_path / "a.json"
    assert main(audit_args(p, m, "-q", "--html", str(html), "--markdown", str(md), "--json", str(doc))) == 0
    for report in (html, md):
        text = report.read_text()
        assert "below --min-group-size=5" in text, report
        assert "below min_group_size=5" not in text, report
    warnings_in_json = json.loads(doc.read_text())["warnings"]
    assert any("below min_group_size=5" in w for w in warnings_in_json)
    later = tmp_path / "later.md"
    assert main(["report", str(doc), "--markdown", str(later)]) == 0
    assert "below min_group_size=5" in later.read_text()
