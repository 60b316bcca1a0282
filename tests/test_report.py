"""HTML report and Markdown summary: content, self-containment, inputs, CLI."""

from __future__ import annotations

import base64
import json
import re
import sys
from html.parser import HTMLParser

import pytest


from fairlandmark.cli import main
from fairlandmark.exceptions import InputError
from fairlandmark.render.curves import extra_curve_figure
from fairlandmark.render.html import keypoint_frame, load_audit, to_html, to_markdown

pytest.importorskip("matplotlib")


class _Collect(HTMLParser):
    """Every tag with its attributes, and whether tags balance."""

    VOID = {"meta", "img", "br", "hr", "input", "link"}

    def __init__(self):
        super().__init__()
        self.tags, self.stack, self.errors = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unbalanced </{tag}> (open: {self.stack[-3:]})")
        else:
            self.stack.pop()


def assert_self_contained(html):
    """No network reference of any kind; every image is an inline data URI."""
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"""(src|href|action|srcset|poster|data)\s*=\s*["']?\s*(//|[a-z]+:)(?!image/png;base64)""",
                         html, re.I)
    lowered = html.lower()
    for needle in ("<script", "<link", "<iframe", "<object", "<embed", "@import", "url(", "@font-face"):
        assert needle not in lowered, needle
    parser = _Collect()
    parser.feed(html)
    parser.close()
    assert not parser.errors, parser.errors[:3]
    assert parser.stack == [], parser.stack
    imgs = [attrs for tag, attrs in parser.tags if tag == "img"]
    for attrs in imgs:
        assert attrs["src"].startswith("data:image/png;base64,")
        png = base64.b64decode(attrs["src"].split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return parser, imgs


@pytest.mark.parametrize("k", [1, 10, 50])
def test_html_renders_self_contained(k, make_doc):
    doc = make_doc(k, significance=True, privacy=True)
    html = to_html(doc, title="Study <x>", dpi=40)
    parser, imgs = assert_self_contained(html)
    n_attr = len(doc["attributes"])
    n_curves = sum(extra_curve_figure(doc, a) for a in doc["attributes"])  # flagged error curves
    n_map = 1 if doc.get("anatomy") else 0  # the fairness map (two or more keypoints with coordinates)
    assert len(imgs) == 2 + n_attr + n_curves + n_map  # MRE, DP, one SDR figure per attribute, curves, map
    assert "Study &lt;x&gt;" in html and "<x>" not in html
    for section in ("Summary", "Figures", "Significance", "Privacy: attribute inference", "Per keypoint"):
        assert f">{section}" in html
    # one keypoint-table row per keypoint and attribute (plus header rows)
    assert html.count("<details") >= n_attr


def test_html_with_a_missing_group_and_no_significance(make_doc):
    doc = make_doc(10, missing_group=True)
    html = to_html(doc, dpi=40)
    assert_self_contained(html)
    assert "no (too small)" in html
    assert "Not computed" in html  # significance section explains how to get it
    assert "Privacy" not in html


def test_html_with_hand_added_significance_marks_rows(make_doc):
    doc = make_doc(10, significance=True, real_significance=False)
    html = to_html(doc, figures=False)
    assert_self_contained(html)
    n_sig = sum(r["significant"] for r in doc["per_keypoint"])
    assert n_sig > 0
    assert html.count('<tr class="sig">') >= n_sig
    assert "<img" not in html


def test_html_comparison_section(make_doc):
    before, after = make_doc(10, seed=1), make_doc(10, significance=True)
    html = to_html(after, baseline=before, labels=("vanilla", "mitigated"), dpi=40)
    _, imgs = assert_self_contained(html)
    assert "Comparison: vanilla → mitigated" in html
    extra = sum(extra_curve_figure(after, a) for a in after["attributes"]) + (1 if after.get("anatomy") else 0)
    assert len(imgs) == 2 + len(after["attributes"]) + 1 + extra  # + flagged error curves and the fairness map


def test_markdown_summary(make_doc):
    doc = make_doc(10, significance=True, privacy=True, real_significance=False)
    md = to_markdown(doc, top=3)
    assert md.startswith("## fairlandmark audit")
    assert "**Strongest gaps** (top 3, by adjusted p, then DP above chance)" in md
    frame = keypoint_frame(doc).sort_values("dp", ascending=False)
    top = frame.iloc[0]
    assert f"| {top['attribute']} | {top['keypoint']} | {top['dp']:.3f}" in md
    n_sig = int(frame["significant"].sum())
    assert f"**Significance:** {n_sig} of {len(frame)}" in md
    assert "errors predict sex better than chance" in md
    for line in md.splitlines():
        if line.startswith("|"):
            assert line.endswith("|")
    plain = to_markdown(make_doc(1), details=False)
    assert "No significance computed" in plain and "<details>" not in plain


def test_markdown_px_unit_is_flagged(make_doc):
    doc = make_doc(5)
    doc["unit"] = "px"
    assert "in pixels" in to_markdown(doc)


def test_load_audit_errors(tmp_path, make_doc):
    with pytest.raises(InputError, match=r"missing\.json: file not found"):
        load_audit(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match=r"bad\.json: not valid JSON"):
        load_audit(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    with pytest.raises(InputError, match=r"no 'schema_version' key"):
        load_audit(other)
    doc = make_doc(2)
    doc["schema_version"] = "2.0"
    with pytest.raises(InputError, match=r"schema_version '2.0' is not supported"):
        load_audit(doc)
    with pytest.raises(InputError, match="expected a path"):
        load_audit(42)
    with pytest.raises(InputError, match="top"):
        to_markdown(make_doc(2), top=0)


def test_accepts_audit_result_directly():
    import numpy as np

    import fairlandmark as fl

    rng = np.random.default_rng(3)
    true = rng.uniform(0, 100, (40, 3, 2))
    res = fl.audit_arrays(true + rng.normal(0, 10, true.shape), true, {"sex": ["F", "M"] * 20}, spacing_mm=0.1, significance=False)
    assert load_audit(res)["keypoints"] == [1, 2, 3]
    assert "sex" in to_markdown(res)


def test_missing_matplotlib_is_one_clear_error(monkeypatch, make_doc):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(InputError, match=r"pip install 'fairlandmark\[report\]'"):
        to_html(make_doc(3), dpi=30)
    assert "<table>" in to_html(make_doc(3), figures=False)  # still works without figures


def test_report_cli(tmp_path, capsys, make_doc):
    after, before = tmp_path / "after.json", tmp_path / "before.json"
    after.write_text(json.dumps(make_doc(10, significance=True)))
    before.write_text(json.dumps(make_doc(10, seed=2)))
    assert main(["report", str(after), "--no-figures"]) == 0  # default: HTML next to the JSON
    assert_self_contained((tmp_path / "after.html").read_text())
    out = tmp_path / "out"
    rc = main(["report", str(after), "--html", str(out / "r.html"), "--markdown", str(out / "r.md"), "--figures",
               str(out / "figs"), "--format", "png", "--dpi", "40", "--baseline", str(before),
               "--labels", "vanilla,mitigated"])
    assert rc == 0
    assert "vanilla" in (out / "r.html").read_text()
    assert (out / "r.md").read_text().startswith("## ")
    doc = json.loads(after.read_text())
    curves = [f"curves_{a.replace('&', '_')}.png" for a in doc["attributes"] if extra_curve_figure(doc, a)]
    assert sorted(p.name for p in (out / "figs").iterdir()) == sorted([
        "compare.png", "dp_by_keypoint.png", "mre_by_keypoint.png", "sdr_age_group.png", "sdr_sex.png",
        "sdr_sex_age_group.png", "fairness_map.png"] + curves)
    capsys.readouterr()
    assert main(["report", str(after), "--markdown", "-"]) == 0
    assert capsys.readouterr().out.startswith("## fairlandmark audit")
    assert main(["report", str(tmp_path / "nope.json")]) == 2
    assert "nope.json: file not found" in " ".join(capsys.readouterr().err.split())
    assert main(["report", str(after), "--labels", "onlyone", "--markdown", "-"]) == 2
    assert main(["report", str(after), "--figures", str(out / "f2"), "--format", "jpg"]) == 2


def test_inputs_are_not_modified(make_doc, copy_doc):
    doc = make_doc(5, significance=True, privacy=True)
    snapshot = copy_doc(doc)
    to_html(doc, figures=False)
    to_markdown(doc)
    assert doc == snapshot
