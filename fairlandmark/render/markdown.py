"""Markdown summary of an audit, for a pull-request comment or a CI job summary.

Examples
--------
>>> import numpy as np, fairlandmark
>>> rng = np.random.default_rng(0)
>>> true = rng.uniform(0, 100, (40, 3, 2)); pred = true + rng.normal(0, 10, true.shape)
>>> res = fairlandmark.audit_arrays(pred, true, {"sex": ["F", "M"] * 20}, spacing_mm=0.1)
>>> to_markdown(res).splitlines()[0]
'## fairlandmark audit'
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import pandas as pd

from fairlandmark.compare import Comparison

from fairlandmark.document import (AuditDocument, AuditSource, has_significance, keypoint_frame, load_audit,
                                   overall_row, privacy_records, top_gaps)
from fairlandmark.exceptions import InputError
from fairlandmark.files import write_text_output
from fairlandmark.formatting import fmt, fmt_p, fmt_pct, fmt_pm, fmt_signed, md_escape, md_table, num, threshold_key
from fairlandmark.findings import findings
from fairlandmark.gate import GateResult

__all__ = ["to_markdown", "write_markdown", "summary_rows", "accuracy_rows", "gap_rows", "privacy_lines", "comparison_markdown", "comparison_rows", "gate_markdown", "significance_note", "null_phrase",
           "headline", "MSG_TOP", "findings_lines", "INTERVAL_NOTE"]

MSG_TOP = "top: must be an integer >= 1, got {value!r}"
INTERVAL_NOTE = ("The interval is for the signed SDR gap of the reported pair (higher minus lower group, mean over "
                 "runs), a percentile bootstrap interval that contains its estimate and may include 0; DP, the largest "
                 "gap over all pairs, is tested by permutation instead.")


def null_phrase(method: str | None, permutations: object) -> str:
    """How an audit's p-values were drawn, in words: the method's name goes with its draws.

    Examples
    --------
    >>> null_phrase("normal", 10000)
    'large-sample normal null (10000 draws)'
    >>> null_phrase("permutation", 500)
    '500 permutations'
    """
    if method == "normal":
        return f"large-sample normal null ({permutations} draws)"
    return f"{permutations} permutations"


def significance_note(doc: AuditDocument) -> str:
    """One sentence naming the significance settings of an audit (empty without significance)."""
    s = doc.get("significance") or {}
    if not s:
        return ""
    alpha = s.get("alpha", 0.05)
    null = null_phrase(s.get("method"), s.get("permutations", "?"))
    return (f"adjusted p < {alpha:g} ({s.get('correction', '?')}); {null}, "
            f"{s.get('bootstrap', '?')} bootstrap resamples, {int(round(100 * num(s.get('ci', 0.95))))}% intervals, "
            f"seed {s.get('seed', '?')}")


def headline(doc: AuditDocument) -> str:
    """The size of an audit in one line: attributes, keypoints, images, runs, unit."""
    n_att = len([a for a in doc.get("attributes", [])])
    return (f"{n_att} attribute{'s' if n_att != 1 else ''}, {len(doc.get('keypoints', []))} keypoints, "
            f"{doc.get('n_images', '?')} images, {doc.get('n_runs', '?')} run(s), unit {doc.get('unit', '?')}")


def accuracy_rows(doc: AuditDocument) -> tuple[list[str], list[list[object]]]:
    unit, thresholds = doc.get("unit", ""), doc.get("thresholds", [])
    header = ["keypoints", f"MRE ({unit})"] + [f"SDR@{threshold_key(t)}{unit}" for t in thresholds] + ["missing"]
    rows = []
    for row in doc.get("overall") or []:
        rows.append([row.get("family"), fmt_pm(row.get("mre"), row.get("mre_std"), 2)]
                    + [fmt_pm(row.get(f"sdr_{threshold_key(t)}"), row.get(f"sdr_{threshold_key(t)}_std"))
                       for t in thresholds]
                    + [f"{row.get('n_missing', 0)} / {row.get('n_predictions', '?')}"])
    return header, rows


def summary_rows(doc: AuditDocument, frame: pd.DataFrame) -> tuple[list[str], list[list[object]]]:
    sig = has_significance(doc)
    header = ["attribute", "family", "mean DP", "max DP", "at keypoint"] + (["significant keypoints"] if sig else [])
    rows = []
    for row in doc.get("summary") or []:
        cells = [row.get("attribute"), row.get("family"), fmt_pm(row.get("mean_dp"), row.get("mean_dp_std")),
                 fmt(row.get("max_dp")), str(row.get("max_dp_keypoint", "-"))]
        if sig:
            sub = frame[frame["attribute"] == row.get("attribute")]
            if row.get("family") not in (None, "all"):
                sub = sub[sub["family"] == row.get("family")]
            cells.append(f"{int(sub['significant'].sum())} / {len(sub)}")
        rows.append(cells)
    return header, rows


def gap_rows(doc: AuditDocument, gaps: pd.DataFrame) -> tuple[list[str], list[list[object]]]:
    """Header and cells of a gap ranking (:func:`fairlandmark.document.top_gaps`), strongest evidence first.

    With significance, the chance DP (randomized attribute) and DP minus chance
    DP are shown, so intersections (whose chance DP is larger) are not read as
    the worst gaps on raw DP alone.
    """
    sig = has_significance(doc)
    header = ["attribute", "keypoint", "DP", "pair (high vs low SDR)", f"MRE ({doc.get('unit', '')})"]
    if sig:
        header += ["chance DP", "DP − chance", "p adj", "significant"]
    rows = []
    for r in gaps.to_dict("records"):
        cells = [r["attribute"], str(r["keypoint"]), fmt_pm(r["dp"], r["dp_std"]), r["pair"] or "-", fmt(r["mre"], 2)]
        if sig:
            cells += [fmt_pm(r["baseline_mean"], r["baseline_std"]), fmt_signed(r["dp_above_chance"]),
                      fmt_p(r["p_adjusted"]), "yes" if r["significant"] else "no"]
        rows.append(cells)
    return header, rows


def findings_lines(doc: AuditDocument) -> list[str]:
    """The findings (:func:`fairlandmark.findings.findings`) as Markdown list items, text escaped."""
    out = []
    for f in findings(doc):
        text = md_escape(f.text.strip()).replace("*", "\\*").replace("_", "\\_")
        out.append(("  - " if f.kind in ("significant", "more") else "- ") + (f"**{text}**" if f.alarm and
                                                                              f.kind != "significant" else text))
    return out


def privacy_lines(doc: AuditDocument) -> list[str]:
    block = doc.get("privacy")
    if not block:
        return []
    lines = []
    if isinstance(block, Mapping) and block.get("risk_line"):
        lines.append(str(block["risk_line"]))
    for rec in privacy_records(doc):
        if rec.get("risk_line"):
            lines.append(str(rec["risk_line"]))
        else:
            lines.append(f"{rec.get('attribute') or 'attribute'}: balanced accuracy "
                         f"{fmt(rec.get('balanced_accuracy'))} (chance {fmt(rec.get('chance'))}, "
                         f"p {fmt_p(rec.get('p_value'))})")
    return lines


def to_markdown(source: AuditSource, *, title: str | None = None, top: int = 5, details: bool = True) -> str:
    """A Markdown summary of an audit, for a PR comment or a CI job summary.

    Parameters
    ----------
    source : path, dict or AuditResult
    title : str, optional
        Heading; default names the audit's size.
    top : int, default 5
        How many of the largest keypoint gaps to list.
    details : bool, default True
        Add collapsible ``<details>`` with accuracy per family and warnings.

    Returns
    -------
    str
    """
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise InputError(MSG_TOP.format(value=top))
    doc = load_audit(source)
    frame = keypoint_frame(doc)
    unit = doc.get("unit", "")
    out = [f"## {title or 'fairlandmark audit'}", "", f"_{headline(doc)}_", "", "**Findings**", ""]
    out += findings_lines(doc) + [""]
    if unit == "px":
        out += ["> No pixel-to-mm scale was given: errors and thresholds are in pixels.", ""]
    allrow = overall_row(doc)
    if allrow:
        thr = doc.get("primary_threshold", (doc.get("thresholds") or [None])[0])
        out += [f"**Accuracy:** MRE {fmt_pm(allrow.get('mre'), allrow.get('mre_std'), 2)} {unit}, "
                f"SDR@{threshold_key(thr)}{unit} {fmt_pct(allrow.get(f'sdr_{threshold_key(thr)}'))}", ""]
    header, rows = summary_rows(doc, frame)
    out += ["**Demographic parity (DP) over keypoints**", "", md_table(header, rows), ""]
    gaps = top_gaps(doc, top)
    if len(gaps):
        header, rows = gap_rows(doc, gaps)
        out += [f"**Strongest gaps** (top {len(gaps)}, by adjusted p, then DP above chance)", "",
                md_table(header, rows), ""]
    if has_significance(doc):
        sig = frame[frame["significant"]]
        out += [f"**Significance:** {len(sig)} of {len(frame)} keypoint x attribute tests significant "
                f"({significance_note(doc)}).", ""]
        if frame["gap"].notna().any():
            out += [f"_{INTERVAL_NOTE}_", ""]
    else:
        out += ["_No significance computed: run the audit with `--permutations` for p-values._", ""]
    privacy = privacy_lines(doc)
    if privacy:
        out += ["**Privacy (attribute inference)**", ""] + [f"- {line}" for line in privacy] + [""]
    from fairlandmark.render.curves import curve_findings

    out += [f"- {md_escape(line)}" for line in curve_findings(doc)] + ([""] if curve_findings(doc) else [])
    if doc.get("measurements"):
        from fairlandmark.render.measurements import measurement_findings

        out += ["**Clinical measurements**", ""] + [f"- {md_escape(line)}" for line in measurement_findings(doc)]
        out += [""]
    if details:
        header, rows = accuracy_rows(doc)
        out += ["<details><summary>Accuracy by family</summary>", "", md_table(header, rows), "", "</details>", ""]
        warns = doc.get("warnings") or []
        if warns:
            out += [f"<details><summary>{len(warns)} warning(s)</summary>", ""]
            out += [f"- {md_escape(w)}" for w in warns] + ["", "</details>", ""]
    return "\n".join(out).rstrip() + "\n"


def write_markdown(source: AuditSource, path: str | os.PathLike[str], **options: Any) -> str:
    """Write :func:`to_markdown` to ``path`` atomically (``"-"`` prints it)."""
    text = to_markdown(source, **options)
    write_text_output(path, text)
    return text


# -- comparisons and gate results ---------------------------------------------------------------------------
def comparison_rows(cmp: Comparison, frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and cells of per-keypoint DP changes, shared by the Markdown, terminal and HTML views."""
    b, a = cmp.labels
    header = ["attribute", "keypoint", f"DP {b}", f"DP {a}", "change", "± noise", "beyond noise", "direction",
              f"MRE change ({cmp.unit})"]
    rows = []
    for r in frame.to_dict("records"):
        ex = r["exceeds_uncertainty"]
        rows.append([r["attribute"], str(r["keypoint"]), fmt(r["dp_before"]), fmt(r["dp_after"]),
                     fmt_signed(r["dp_change"]), fmt(r["dp_uncertainty"]),
                     "?" if ex is None else ("yes" if ex else "no"), r["direction"], fmt_signed(r["mre_change"], 3)])
    return header, rows


def comparison_markdown(cmp: Comparison, *, top: int = 10) -> str:
    """Markdown for a PR comment: summary, MRE cost, the largest changes."""
    b, a = cmp.labels
    unit = cmp.unit
    out = [f"## fairlandmark compare: {b} → {a}", ""]
    rows = []
    for r in cmp.summary.to_dict("records"):
        rows.append([r["attribute"], fmt(r["mean_dp_before"]), fmt(r["mean_dp_after"]),
                     fmt_signed(r["mean_dp_change"]), f"{r['n_improved']} ({r['n_improved_beyond']})",
                     f"{r['n_worsened']} ({r['n_worsened_beyond']})"])
    out += [md_table(["attribute", f"mean DP {b}", f"mean DP {a}", "change", "keypoints improved (beyond noise)",
                      "worsened (beyond noise)"], rows), ""]
    rows = [[r["family"], fmt(r["mre_before"], 3), fmt(r["mre_after"], 3), fmt_signed(r["mre_change"], 3),
             fmt_pct(r["sdr_before"]), fmt_pct(r["sdr_after"])] for r in cmp.accuracy.to_dict("records")]
    thr = threshold_key(cmp.thresholds[1]) if cmp.thresholds[1] is not None else "?"
    out += [f"**Accuracy cost** ({unit}; positive MRE change = less accurate)", "",
            md_table(["keypoints", f"MRE {b}", f"MRE {a}", "change", f"SDR@{thr} {b}", f"SDR@{thr} {a}"], rows), ""]
    moved = cmp.table.dropna(subset=["dp_change"])
    moved = moved.reindex(moved["dp_change"].abs().sort_values(ascending=False, kind="stable").index).head(top)
    if len(moved):
        out += [f"**Largest DP changes** (top {len(moved)})", "", md_table(*comparison_rows(cmp, moved)), ""]
    out += ["_Beyond noise: |change| > sqrt(u_before² + u_after²), u = half-width of the bootstrap interval "
            "(or std over runs)._", ""]
    out += [f"- note: {n}" for n in cmp.notes]
    return "\n".join(out).rstrip() + "\n"


def gate_markdown(result: GateResult, *, max_failures: int = 30, audit_summary: bool = True) -> str:
    """Markdown: verdict, a table per rule, the failures, then the audit summary."""
    n, f = len(result.checks), len(result.failures)
    verdict = "✅ passed" if result.passed else "❌ failed"
    out = [f"## fairlandmark gate: {verdict}", "",
           f"{n - f} of {n} checks passed · rules from `{result.rules.source}` · audit "
           f"`{os.path.basename(str(result.doc.get('_source', '')))}`", ""]
    rows = [[("✅ " if r["failed"] == 0 else "❌ ") + r["rule"], r["limit"], str(r["checks"]), str(r["failed"]),
             fmt(r["worst"])] for r in result.by_rule()]
    out += [md_table(["rule", "limit", "checks", "failed", "worst value"], rows), ""]
    if result.failures:
        shown = result.failures[:max_failures]
        out += [f"**Failures** ({f})", "",
                md_table(["rule", "attribute", "keypoint", "value", "limit"],
                         [[c.rule, c.attribute or "-", "-" if c.keypoint is None else str(c.keypoint),
                           fmt(c.value), f"{c.limit:g}"] for c in shown]), ""]
        if f > len(shown):
            out += [f"… and {f - len(shown)} more (see the JUnit report).", ""]
    out += [f"- note: {note}" for note in result.notes]
    if audit_summary:
        out += ["", to_markdown(result.doc, title="Audit summary", top=5)]
    return "\n".join(out).rstrip() + "\n"
