"""HTML by Jinja2 templates: user text is escaped and never evaluated; the templates ship with the package."""

from __future__ import annotations

import json
import re
import tomllib
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

import fairlandmark as fl
from fairlandmark.compare import compare
from fairlandmark.document import load_audit
from fairlandmark.render.compare_html import compare_html
from fairlandmark.render.html import render_report, report_context, to_html, write_html
from fairlandmark.render.templating import environment

SCRIPT = "<script>alert(1)</script>"
JINJA = "{{ 7*7 }}"
BLOCK = "{% if true %}yes{% endif %}"
ROOT = Path(__file__).resolve().parents[1]


class _Text(HTMLParser):
    """Text content (entities decoded) and tag names of an HTML document."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.text, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def parse(html):
    parser = _Text()
    parser.feed(html)
    parser.close()
    return parser


def hostile_doc(tmp_path):
    """An audit whose group, attribute and keypoint names, warnings and file name are markup or template code."""
    rng = np.random.default_rng(4)
    n = 40
    true = rng.uniform(0, 100, (n, 3, 2))
    pred = true + rng.normal(0, 10, true.shape)
    groups = {"site<b>": [SCRIPT, JINJA] * (n // 2), "sex": ["F", "M"] * (n // 2)}
    res = fl.audit_arrays(pred, true, groups, spacing_mm=0.1, keypoints=["<i>nasion</i>", JINJA, BLOCK],
                          min_group_size=5)
    doc = res.to_dict()
    doc["warnings"] = list(doc.get("warnings") or []) + [f"warning with {SCRIPT} and {JINJA}"]
    path = tmp_path / "audit <x> {{ 7*7 }}.json"
    path.write_text(json.dumps(doc))
    return path


def test_user_text_is_escaped_and_never_evaluated(tmp_path):
    path = hostile_doc(tmp_path)
    html = to_html(path, title=f"title {SCRIPT} {JINJA}", figures=False)
    parsed = parse(html)
    assert "script" not in parsed.tags and "i" not in parsed.tags and "b" not in parsed.tags
    assert "<script" not in html.lower() and "<i>" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    text = "".join(parsed.text)
    # decoded back to the very strings the user gave: shown as text, not run as template code
    for literal in (SCRIPT, JINJA, BLOCK, "<i>nasion</i>", "site<b>", f"title {SCRIPT} {JINJA}",
                    "audit <x> {{ 7*7 }}.json", f"warning with {SCRIPT} and {JINJA}"):
        assert literal in text, literal
    # template code in names is printed, not run: no 49 and no bare "yes" where the names are
    assert ">49<" not in html
    assert '<td class="l">{% if true %}yes{% endif %}</td>' in html  # keypoint name, first cell of its row
    # the group names are cells of the groups table, escaped
    assert '<td class="l">{{ 7*7 }}</td>' in html
    assert '<td class="l">&lt;script&gt;alert(1)&lt;/script&gt;</td>' in html


def test_comparison_escapes_labels_and_names(tmp_path):
    doc = load_audit(hostile_doc(tmp_path))
    cmp = compare(doc, doc, labels=(SCRIPT, JINJA))
    fragment = compare_html(cmp)
    assert "<script" not in fragment and "&lt;script&gt;" in fragment
    assert f"mean DP {JINJA}" in "".join(parse(fragment).text)
    html = to_html(doc, baseline=doc, labels=(SCRIPT, JINJA), figures=False)
    assert f"Comparison: {SCRIPT} → {JINJA}" in "".join(parse(html).text)
    assert "<script" not in html


def test_report_is_context_then_render(make_doc):
    doc = load_audit(make_doc(4, significance=True, real_significance=False, privacy=True))
    stamp = datetime(2026, 11, 30, 7, 5, tzinfo=timezone.utc)
    ctx = report_context(doc, title="t", figures=False, generated=stamp)
    assert ctx["figures"] is None and ctx["comparison"] is None
    assert ctx["footer"]["stamp"] == "2026-11-30 07:05 UTC"
    assert [s["attribute"] for s in ctx["keypoint_sections"]] == doc["attributes"]
    n_sig = sum(bool(r["significant"]) for r in doc["per_keypoint"])
    assert len(ctx["significance"]["table"].rows) == n_sig
    html = render_report(ctx)
    assert "generated 2026-11-30 07:05 UTC" in html
    # the public to_html is these two steps (up to the time stamp)
    same = re.sub(r"generated [^<]*", "", to_html(doc, title="t", figures=False))
    assert re.sub(r"generated [^<]*", "", html) == same


def test_write_html_writes_what_to_html_returns(tmp_path, make_doc):
    out = tmp_path / "r.html"
    text = write_html(make_doc(3), out, figures=False)
    assert out.read_text(encoding="utf-8") == text and text.startswith("<!DOCTYPE html>")


def test_templates_autoescape_and_ship_with_the_package():
    env = environment()
    assert env.autoescape is True
    folder = ROOT / "fairlandmark" / "render" / "templates"
    names = sorted(p.name for p in folder.iterdir())
    assert {"report.html.j2", "compare.html.j2", "macros.html.j2", "report.css"} <= set(names)
    for name in names:
        env.get_template(name)  # every file parses
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["fairlandmark"]
    assert "render/templates/*" in globs
    deps = " ".join(config["project"]["dependencies"]).lower()
    assert "jinja2" in deps
