"""fairlandmark compare: numbers equal hand-computed differences; CLI outputs."""

from __future__ import annotations

import json
import math

import pytest


from fairlandmark.cli import main
from fairlandmark.compare import compare
from fairlandmark.render.markdown import comparison_markdown
from fairlandmark.exceptions import InputError


def _rec(kp, dp, dp_std, mre, n, missing=None, ci=None, significant=None):
    rec = {"attribute": "sex", "keypoint": kp, "family": None, "dp": dp, "dp_std": dp_std, "pair": ["F", "M"],
           "mre_by_group": dict(zip("FM", mre)), "n_by_group": dict(zip("FM", n)),
           "n_missing_by_group": dict(zip("FM", missing or (0, 0))), "sdr_by_group": {"F": 0.5, "M": 0.6}}
    if ci is not None:
        rec["dp_ci"] = ci
    if significant is not None:
        rec.update(significant=significant, p_value=0.01 if significant else 0.5)
    return rec


def _doc(records, *, mre, sdr, mean_dp, unit="mm", thr=2.0):
    return {"schema_version": "1.0", "unit": unit, "thresholds": [thr], "primary_threshold": thr,
            "attributes": ["sex"], "keypoints": [r["keypoint"] for r in records], "per_keypoint": records,
            "summary": [{"attribute": "sex", "family": "all", "mean_dp": mean_dp}],
            "overall": [{"family": "all", "mre": mre, f"sdr_{thr:g}": sdr}]}


@pytest.fixture
def pair():
    before = _doc([_rec(1, 0.20, 0.05, (2.0, 1.0), (10, 30)),
                   _rec(2, 0.10, 0.02, (1.0, 1.0), (10, 30)),
                   _rec(3, 0.05, None, (1.0, 2.0), (10, 30))], mre=1.3, sdr=0.70, mean_dp=0.35 / 3)
    after = _doc([_rec(1, 0.10, 0.06, (1.5, 1.0), (10, 30), missing=(2, 0), ci=[0.04, 0.18]),
                  _rec(2, 0.13, 0.03, (1.0, 1.2), (10, 30)),
                  _rec(3, 0.05, None, (1.0, 2.0), (10, 30))], mre=1.4, sdr=0.68, mean_dp=0.28 / 3)
    return before, after


def test_numbers_equal_hand_computation(pair):
    before, after = pair
    cmp = compare(before, after, labels=("vanilla", "mitigated"))
    t = cmp.table.set_index("keypoint")
    # keypoint 1: CI half-width 0.07 on the after side, std 0.05 before
    assert t.loc[1, "dp_change"] == pytest.approx(-0.10)
    assert t.loc[1, "dp_uncertainty"] == pytest.approx(math.sqrt(0.05 ** 2 + 0.07 ** 2))
    assert t.loc[1, "exceeds_uncertainty"] is True and t.loc[1, "direction"] == "improved"
    assert t.loc[1, "mre_before"] == pytest.approx((2.0 * 10 + 1.0 * 30) / 40)
    assert t.loc[1, "mre_after"] == pytest.approx((1.5 * 8 + 1.0 * 30) / 38)  # 2 missing predictions of F
    assert t.loc[1, "mre_change"] == pytest.approx((1.5 * 8 + 30) / 38 - 50 / 40)
    # keypoint 2: std on both sides, change within noise
    assert t.loc[2, "dp_change"] == pytest.approx(0.03)
    assert t.loc[2, "dp_uncertainty"] == pytest.approx(math.sqrt(0.02 ** 2 + 0.03 ** 2))
    assert t.loc[2, "exceeds_uncertainty"] is False and t.loc[2, "direction"] == "worsened"
    assert t.loc[2, "mre_change"] == pytest.approx((10 + 1.2 * 30) / 40 - 1.0)
    # keypoint 3: no uncertainty anywhere -> unknown, not False
    assert t.loc[3, "dp_change"] == 0.0 and t.loc[3, "direction"] == "unchanged"
    assert t.loc[3, "exceeds_uncertainty"] is None and math.isnan(t.loc[3, "dp_uncertainty"])
    s = cmp.summary.iloc[0]
    assert s["mean_dp_change"] == pytest.approx(-0.07 / 3)
    assert (s["n_improved"], s["n_worsened"], s["n_improved_beyond"], s["n_worsened_beyond"]) == (1, 1, 1, 0)
    acc = cmp.accuracy.iloc[0]
    assert acc["mre_change"] == pytest.approx(0.1) and acc["sdr_after"] == 0.68
    d = json.loads(cmp.to_json())
    assert d["per_keypoint"][2]["exceeds_uncertainty"] is None and d["per_keypoint"][2]["dp_uncertainty"] is None
    md = comparison_markdown(cmp)
    assert "| sex | 1 | 0.200 | 0.100 | -0.100 | 0.086 | yes | improved |" in md
    assert "mean DP vanilla" in md


def test_real_audits_change_is_after_minus_before(make_doc):
    before, after = make_doc(10, seed=1), make_doc(10, significance=True, seed=0)
    cmp = compare(before, after)
    b = {(r["attribute"], r["keypoint"]): r["dp"] for r in before["per_keypoint"]}
    a = {(r["attribute"], r["keypoint"]): r for r in after["per_keypoint"]}
    assert len(cmp.table) == len(a)
    for row in cmp.table.to_dict("records"):
        key = (row["attribute"], row["keypoint"])
        assert row["dp_change"] == pytest.approx(a[key]["dp"] - b[key])
        lo, hi = a[key]["dp_ci"]
        u_before = next(r["dp_std"] for r in before["per_keypoint"]
                        if (r["attribute"], r["keypoint"]) == key)
        assert row["dp_uncertainty"] == pytest.approx(math.hypot((hi - lo) / 2, u_before))
    assert "significant_after" in cmp.table.columns
    assert cmp.accuracy["family"].tolist() == ["all", "wrist", "fingers"]


def test_mismatches(pair):
    before, after = pair
    with pytest.raises(InputError, match="same pixel-to-mm scale"):
        compare(before, dict(after, unit="px"))
    other = dict(after, attributes=["age"], per_keypoint=[dict(r, attribute="age") for r in after["per_keypoint"]])
    with pytest.raises(InputError, match="share no"):
        compare(before, other)
    with pytest.raises(InputError, match="attribute 'age'"):
        compare(before, after, attribute="age")
    with pytest.raises(InputError, match="labels"):
        compare(before, after, labels=("one",))
    cmp = compare(before, dict(after, primary_threshold=4.0))
    assert any("primary thresholds differ" in n for n in cmp.notes)
    fewer = dict(after, keypoints=[1, 2], per_keypoint=after["per_keypoint"][:2])
    cmp = compare(before, fewer)
    assert len(cmp.table) == 2 and any("keypoints only in before: 3" in n for n in cmp.notes)


def test_compare_cli(pair, tmp_path, capsys):
    before, after = pair
    pb, pa = tmp_path / "b.json", tmp_path / "a.json"
    pb.write_text(json.dumps(before))
    pa.write_text(json.dumps(after))
    assert main(["compare", str(pb), str(pa), "--labels", "vanilla,mitigated", "--markdown", str(tmp_path / "c.md"),
                 "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "vanilla" in out and "Accuracy cost" in out
    d = json.loads((tmp_path / "c.json").read_text())
    assert [r["dp_change"] for r in d["per_keypoint"]] == pytest.approx([-0.10, 0.03, 0.0])
    assert d["labels"] == ["vanilla", "mitigated"]
    assert (tmp_path / "c.md").read_text().startswith("## fairlandmark compare: vanilla → mitigated")
    assert main(["compare", str(pb), str(pa), "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"][0]["n_improved"] == 1
    assert main(["compare", str(pb), str(tmp_path / "none.json")]) == 2
    assert "none.json: file not found" in " ".join(capsys.readouterr().err.split())


def test_compare_cli_figure(tmp_path, make_doc):
    pytest.importorskip("matplotlib")
    pb, pa = tmp_path / "b.json", tmp_path / "a.json"
    pb.write_text(json.dumps(make_doc(5, seed=1)))
    pa.write_text(json.dumps(make_doc(5)))
    assert main(["compare", str(pb), str(pa), "-q", "--figure", str(tmp_path / "c.svg")]) == 0
    assert "<svg" in (tmp_path / "c.svg").read_text()
