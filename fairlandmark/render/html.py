"""Reports people look at: a one-file HTML report and a Markdown summary.

Everything here works on the audit *document*: the versioned JSON that
``fairlandmark audit --json`` writes (or :meth:`AuditResult.to_dict`).
:func:`load_audit` accepts a path, a dict or an :class:`AuditResult`, checks
the schema version, and returns the dict. The significance fields
(``p_value``, ``dp_ci``, ``baseline_mean`` ...) and the ``privacy`` block are
optional: each section appears when its fields are present.

The HTML report is a single file with the figures embedded as base64 PNG,
inline CSS and no script, font or link to anything outside the file, so it
opens offline and can be attached to a CI run as it is. It is laid out by
the Jinja2 templates in ``render/templates`` with autoescape on
(:func:`report_context` gathers the values, :func:`render_report` lays them out).

Examples
--------
>>> import numpy as np, fairlandmark
>>> rng = np.random.default_rng(0)
>>> true = rng.uniform(0, 100, (40, 3, 2)); pred = true + rng.normal(0, 10, true.shape)
>>> res = fairlandmark.audit_arrays(pred, true, {"sex": ["F", "M"] * 20}, spacing_mm=0.1)
>>> text = to_markdown(res)
>>> text.splitlines()[0].startswith("## fairlandmark audit")
True
>>> html = to_html(res, figures=False)
>>> "http://" in html or "https://" in html
False
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from fairlandmark.document import (AuditDocument, has_significance, keypoint_frame, keypoint_mre, load_audit,
                                   overall_row, privacy_records, summary_row, top_gaps)
from fairlandmark.exceptions import InputError
from fairlandmark.files import write_text_output
from fairlandmark.formatting import fmt, fmt_p, fmt_pct, fmt_pm, num, threshold_key
from fairlandmark.render.markdown import (MSG_TOP, accuracy_rows, gap_rows, headline, significance_note, summary_rows,
                                          to_markdown, write_markdown)
from fairlandmark.render.templating import HtmlTable, render_template

__all__ = [
    "load_audit", "keypoint_frame", "keypoint_mre", "has_significance", "to_markdown", "to_html",
    "write_html", "write_markdown", "report_context", "render_report",
]


# -- HTML ----------------------------------------------------------------------------------------------------
# The HTML is laid out by the Jinja2 templates in render/templates (autoescape on); the functions below only
# gather and format the values. to_html = report_context (what to show) + render_report (how it looks).
def _heat(value: object, vmax: float) -> str:
    """Inline CSS colouring a DP cell by its size relative to the largest DP."""
    v = num(value)
    if math.isnan(v) or not vmax or vmax <= 0:
        return ""
    alpha = max(0.0, min(1.0, v / vmax)) * 0.55
    return f"background:rgba(214,69,65,{alpha:.2f})"


def _fmt_any(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else ("yes" if value else "no")
    if isinstance(value, float):
        return fmt(value, 4 if abs(value) < 0.01 and value != 0 else 3)
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt_any(v) for v in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_fmt_any(v)}" for k, v in value.items())
    return str(value)


def _generic_blocks(obj: Any, depth: int = 0) -> list[tuple[str, Any]]:
    """Any JSON block (used for privacy) as template blocks: scalars as a field/value table, record lists as tables.

    Returns ``(kind, value)`` pairs, kind one of ``table`` (an :class:`HtmlTable`), ``heading``, ``label``, ``text``.
    """
    if isinstance(obj, Mapping):
        scalars = [(k, v) for k, v in obj.items() if not isinstance(v, (Mapping, list))]
        nested = [(k, v) for k, v in obj.items() if isinstance(v, (Mapping, list))]
        blocks: list[tuple[str, Any]] = []
        if scalars:
            blocks.append(("table", HtmlTable(["field", "value"], [[k, _fmt_any(v)] for k, v in scalars])))
        for k, v in nested:
            blocks.append(("heading" if depth < 2 else "label", k))
            blocks += _generic_blocks(v, depth + 1)
        return blocks
    if isinstance(obj, list):
        if obj and all(isinstance(x, Mapping) for x in obj):
            keys: list[Any] = []
            for x in obj:
                keys += [k for k in x if k not in keys]
            return [("table", HtmlTable(keys, [[_fmt_any(x.get(k)) for k in keys] for x in obj]))]
        return [("text", ", ".join(_fmt_any(x) for x in obj))]
    return [("text", _fmt_any(obj))]


def _privacy_context(doc: AuditDocument) -> dict[str, Any]:
    """Privacy section: risk lines, one row per analysis, settings in a collapsed block."""
    block = doc["privacy"]
    recs = privacy_records(doc)
    risk_lines = []
    if isinstance(block, Mapping) and block.get("risk_line"):
        risk_lines.append(("risk", block["risk_line"]))
    if not recs:
        return {"risk_lines": risk_lines, "table": None, "blocks": _generic_blocks(block), "settings": []}
    for rec in recs:
        if rec.get("risk_line"):
            leak = rec.get("leak")
            risk_lines.append(("risk" if leak or (leak is None and num(rec.get("p_value")) < 0.05) else "note",
                               rec["risk_line"]))
    header = ["attribute", "analysis", "balanced accuracy", "chance", "p", "leak", "top keypoints"]
    rows = []
    for rec in recs:
        top = rec.get("top_keypoints") or []
        rows.append([rec.get("attribute") or "-", rec.get("analysis") or "-",
                     fmt_pm(rec.get("balanced_accuracy"), rec.get("balanced_accuracy_std")), fmt(rec.get("chance")),
                     fmt_p(rec.get("p_value")), _fmt_any(rec.get("leak")),
                     ", ".join(str(k) for k in top[:8]) or "-"])
    settings = {}
    attributes = block.get("attributes") if isinstance(block, Mapping) else None
    if isinstance(attributes, Mapping):
        for name, sub in attributes.items():
            if isinstance(sub, Mapping):
                settings[name] = {k: v for k, v in sub.items()
                                  if not isinstance(v, (Mapping, list)) and k not in ("schema_version", "kind")}
    return {"risk_lines": risk_lines, "table": HtmlTable(header, rows, left=2), "blocks": [],
            "settings": _generic_blocks(settings) if settings else []}


def _keypoint_table(doc: AuditDocument, attribute: str, frame: pd.DataFrame, vmax: float) -> HtmlTable:
    """Per-keypoint table of one attribute: SDR and MRE per group, DP (heat-coloured) and its significance."""
    recs = [r for r in doc["per_keypoint"] if r.get("attribute") == attribute]
    groups = [g["group"] for g in doc.get("groups") or [] if g.get("attribute") == attribute]
    for r in recs:
        groups += [g for g in (r.get("sdr_by_group") or {}) if g not in groups]
    thr = threshold_key(doc.get("primary_threshold", 2.0))
    sig = has_significance(doc)
    has_fam = any(r.get("family") for r in recs)
    header = ["keypoint"] + (["family"] if has_fam else []) + [f"SDR@{thr} {g}" for g in groups] \
        + [f"MRE {g}" for g in groups] + ["DP", "pair"]
    if sig:
        header += ["DP CI", "baseline", "p", "p adj", "MRE-gap p adj"]
    rows, classes, styles = [], [], []
    sub = frame[frame["attribute"] == attribute].reset_index(drop=True)
    for r, row in zip(recs, sub.to_dict("records")):
        sdr, mre = r.get("sdr_by_group") or {}, r.get("mre_by_group") or {}
        cells = [str(r.get("keypoint"))] + ([r.get("family") or ""] if has_fam else [])
        cells += [fmt(sdr.get(g)) for g in groups] + [fmt(mre.get(g), 2) for g in groups]
        cells += [fmt_pm(row["dp"], row["dp_std"]) + (" *" if row["significant"] else ""), row["pair"] or "-"]
        if sig:
            cells += [f"{fmt(row['dp_low'])}–{fmt(row['dp_high'])}",
                      fmt_pm(row["baseline_mean"], row["baseline_std"]),
                      fmt_p(row["p_value"]), fmt_p(row["p_adjusted"]), fmt_p(row["mre_gap_p_adjusted"])]
        rows.append(cells)
        classes.append("sig" if row["significant"] else "")
        st = [""] * len(cells)
        st[header.index("DP")] = _heat(row["dp"], vmax)
        styles.append(st)
    return HtmlTable(header, rows, left=2 if has_fam else 1, row_classes=classes, cell_styles=styles)


def _cards(doc: AuditDocument, frame: pd.DataFrame, thr: str) -> list[dict[str, str]]:
    """The headline numbers at the top of the report: overall MRE and SDR, mean DP per attribute, tests passed."""
    unit = doc.get("unit", "")
    allrow = overall_row(doc)
    cards = []
    if allrow:
        spread = "" if math.isnan(num(allrow.get("mre_std"))) else f"± {fmt(allrow.get('mre_std'), 2)} over runs"
        cards.append(("overall MRE", f"{fmt(allrow.get('mre'), 2)} {unit}", spread))
        cards.append((f"SDR@{thr}{unit}", fmt_pct(allrow.get(f"sdr_{thr}")), ""))
    for a in doc.get("attributes", []):
        s = summary_row(doc, a)
        if s:
            cards.append((f"mean DP · {a}", fmt(s.get("mean_dp")),
                          f"max {fmt(s.get('max_dp'))} at keypoint {s.get('max_dp_keypoint', '-')}"))
    if has_significance(doc):
        cards.append(("significant", f"{int(frame['significant'].sum())} / {len(frame)}",
                      "keypoint × attribute tests"))
    return [{"key": k, "value": v, "note": n} for k, v, n in cards]


def _figures(doc: AuditDocument, base: AuditDocument | None, labels: Sequence[str],
             dpi: int) -> list[dict[str, str]]:
    """The report's figures as base64 PNG with their captions (needs matplotlib)."""
    from fairlandmark.render import figures as F

    unit = doc.get("unit", "")
    sig = has_significance(doc)
    dp_caption = "Per-keypoint DP" + (" with bootstrap intervals, the randomized-attribute baseline beside it, "
                                      "and * where significant after correction." if sig else " (± std over runs).")
    drawings: list[tuple[Callable[[], Any], str]] = [
        (lambda: F.mre_bars(doc), f"Per-keypoint MRE ({unit}), coloured by family; dashed: overall and family means."),
        (lambda: F.dp_bars(doc), dp_caption)]
    from fairlandmark.render.curves import error_curves_figure, extra_curve_figure
    from fairlandmark.render.fairness_map import fairness_map, has_anatomy

    if has_anatomy(doc):
        colour = "DP above chance (DP minus the randomized baseline)" if sig and any(
            r.get("baseline_mean") is not None for r in doc["per_keypoint"]) else "DP"
        drawings.append((lambda: fairness_map(doc),
                         "Fairness map: each keypoint at its mean position after Procrustes alignment of the ground "
                         f"truth, coloured by {colour}; a black ring marks a gap significant after correction."))
    one_threshold_curves = bool((doc.get("curves") or {}).get("records")) and len(doc.get("thresholds", [])) <= 1
    for a in doc.get("attributes", []):
        drawings.append((functools.partial(F.sdr_curves, doc, attribute=a),
                         f"Error curves by group ({a}): SDR over thresholds for the keypoints whose curve gap is "
                         "significant after correction, else the largest curve gaps; the bar marks the gap."
                         if one_threshold_curves else
                         f"SDR over thresholds by group ({a}), for the keypoints with the largest DP."))
        if extra_curve_figure(doc, a):
            drawings.append((functools.partial(error_curves_figure, doc, attribute=a),
                             f"Error curves by group ({a}) over the threshold grid, for the keypoints whose curve "
                             "gap is significant after correction; the bar marks the gap."))
    if base is not None:
        drawings.append((lambda: F.compare_bars(base, doc, labels=labels),
                         f"{labels[0]} against {labels[1]}: DP and MRE per keypoint."))
    # one figure drawn and encoded at a time, so only one is held in memory
    return [{"caption": caption, "png_base64": F.png_base64(draw(), dpi=dpi)} for draw, caption in drawings]


def _map_note(doc: AuditDocument) -> str | None:
    """Why the fairness map is left out (no coordinates, or one keypoint), or None when it is drawn."""
    from fairlandmark.render.fairness_map import MSG_NO_ANATOMY, has_anatomy

    return None if has_anatomy(doc) else MSG_NO_ANATOMY[0].upper() + MSG_NO_ANATOMY[1:] + "."


def _measurements_context(doc: AuditDocument) -> dict[str, Any]:
    """Clinical measurements: findings in words, a table per attribute, confusion matrices."""
    from fairlandmark.render.measurements import confusion_tables, measurement_findings, measurement_table

    settings = doc.get("measurement_settings") or {}
    note = ("MAE = mean absolute error of the measurement from predicted landmarks against the one from true "
            "landmarks; success = error within the tolerance; agree = same class. The gap is the largest difference "
            "in success rate between groups (class agreement where there is no tolerance), mean over runs"
            + (f"; * adjusted p < {settings.get('alpha')} ({settings.get('correction')})"
               if settings.get("correction") else "") + ".")
    sections = []
    for a in dict.fromkeys(r.get("attribute") for r in doc["measurements"]):
        header, rows, flags = measurement_table(doc, str(a))
        sections.append({"attribute": a,
                         "table": HtmlTable(header, rows, left=2, row_classes=["sig" if f else "" for f in flags]),
                         "confusion": [{"title": title, "table": HtmlTable(h, r)}
                                       for title, h, r in confusion_tables(doc, str(a))]})
    citation = settings.get("citation")
    return {"findings": measurement_findings(doc), "note": note, "sections": sections,
            "citation": f"Definitions: {settings.get('name')}, after {citation}" if citation else None}


def report_context(doc: AuditDocument, *, title: str | None = None, figures: bool = True,
                   baseline: AuditDocument | None = None, labels: Sequence[str] = ("before", "after"),
                   top: int = 10, dpi: int = 110, generated: datetime | None = None) -> dict[str, Any]:
    """What the HTML report shows: every value formatted, as the variables of ``report.html.j2``.

    Parameters
    ----------
    doc : dict
        The audit document (from :func:`load_audit`).
    title : str, optional
        Report title; default "fairlandmark audit report".
    figures : bool, default True
        Draw and embed the figures (needs matplotlib).
    baseline : dict, optional
        An earlier audit document to compare against.
    labels : (str, str), default ("before", "after")
        Names of the baseline and this audit.
    top : int, default 10
        Rows in the "largest gaps" table.
    dpi : int, default 110
        Resolution of the embedded PNG figures.
    generated : datetime, optional
        Time stamp of the footer; default now (UTC).

    Returns
    -------
    dict
        Template variables; user text in them is plain text, escaped when rendered.

    Examples
    --------
    >>> doc = {"schema_version": "1.0", "per_keypoint": [], "attributes": [], "keypoints": [], "unit": "mm"}
    >>> ctx = report_context(doc, figures=False)
    >>> ctx["title"], ctx["figures"], ctx["comparison"]
    ('fairlandmark audit report', None, None)
    """
    from fairlandmark.render.adjusted_power import adjustment_context, detectable_context

    frame = keypoint_frame(doc)
    unit = doc.get("unit", "")
    thr = threshold_key(doc.get("primary_threshold", (doc.get("thresholds") or [2.0])[0]))
    vmax = float(frame["dp"].max()) if frame["dp"].notna().any() else 0.0
    sig = has_significance(doc)
    tool = doc.get("tool") or {}
    stamp = (generated or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")

    groups_rows = [[g.get("attribute"), g.get("group"), g.get("n_images", "-"), g.get("n_images_min_run", "-"),
                    "yes" if g.get("in_dp", True) else "no (too small)"] for g in doc.get("groups") or []]
    gaps = top_gaps(doc, top)
    gaps_table = None
    if len(gaps):
        header, rows = gap_rows(doc, gaps)
        gaps_table = HtmlTable(header, rows, left=2, row_classes=["sig" if s else "" for s in gaps["significant"]])
    significance = None
    if sig:
        sig_rows = frame[frame["significant"]].sort_values("p_adjusted", kind="stable")
        header, rows = gap_rows(doc, sig_rows)
        significance = {"note": significance_note(doc), "table": HtmlTable(header, rows, left=2) if len(sig_rows) else None}
    comparison = None
    if baseline is not None:
        from fairlandmark.compare import compare
        from fairlandmark.render.compare_html import comparison_context

        comparison = comparison_context(compare(baseline, doc, labels=labels))
    summary_header, summary_cells = summary_rows(doc, frame)
    accuracy_header, accuracy_cells = accuracy_rows(doc)
    return {
        "title": title or "fairlandmark audit report",
        "headline": headline(doc),
        "thresholds": ", ".join(threshold_key(t) for t in doc.get("thresholds", [])),
        "unit": unit,
        "min_group_size": doc.get("min_group_size", "-"),
        "cards": _cards(doc, frame, thr),
        "summary_table": HtmlTable(summary_header, summary_cells, left=2),
        "accuracy_table": HtmlTable(accuracy_header, accuracy_cells),
        "groups_table": HtmlTable(["attribute", "group", "images", "fewest in a run", "in DP"], groups_rows, left=2)
        if groups_rows else None,
        "gaps_table": gaps_table,
        "figures": _figures(doc, baseline, labels, dpi) if figures else None,
        "comparison": comparison,
        "significance": significance,
        "privacy": _privacy_context(doc) if doc.get("privacy") else None,
        "adjustment": adjustment_context(doc),
        "detectable": detectable_context(doc) if sig else None,
        "map_note": _map_note(doc),
        "measurements": _measurements_context(doc) if doc.get("measurements") else None,
        "keypoint_sections": [{"attribute": a, "threshold": threshold_key(doc.get("primary_threshold", 2.0)),
                               "significance": sig, "table": _keypoint_table(doc, a, frame, vmax)}
                              for a in doc.get("attributes", [])],
        "warnings": list(doc.get("warnings") or []),
        "footer": {"tool": tool.get("name", "fairlandmark"), "version": tool.get("version", ""),
                   "schema": doc.get("schema_version"), "source": os.path.basename(str(doc.get("_source", ""))),
                   "stamp": stamp},
    }


def render_report(context: Mapping[str, Any]) -> str:
    """Lay out a :func:`report_context` as one HTML document (template ``report.html.j2``, autoescaped).

    Parameters
    ----------
    context : dict
        The output of :func:`report_context`.

    Returns
    -------
    str
        The HTML document.
    """
    return render_template("report.html.j2", **context)


def to_html(source: object, *, title: str | None = None, figures: bool = True,
            baseline: object = None, labels: Sequence[str] = ("before", "after"), top: int = 10,
            dpi: int = 110) -> str:
    """A self-contained HTML report of an audit (one file, no network).

    Parameters
    ----------
    source : path, dict or AuditResult
    title : str, optional
    figures : bool, default True
        Embed the figures (needs matplotlib, the ``[report]`` extra).
    baseline : path, dict or AuditResult, optional
        An earlier audit (e.g. the vanilla model) to compare against: adds a
        comparison section and the side-by-side figure.
    labels : (str, str), default ("before", "after")
        Names of the baseline and this audit in the comparison.
    top : int, default 10
        Rows in the "largest gaps" table.
    dpi : int, default 110
        Resolution of the embedded PNG figures.

    Returns
    -------
    str
        The HTML document.

    Examples
    --------
    >>> doc = {"schema_version": "1.0", "per_keypoint": [], "attributes": [], "keypoints": [], "unit": "mm"}
    >>> to_html(doc, title="<b>study</b>", figures=False).count("&lt;b&gt;study&lt;/b&gt;")
    2
    """
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise InputError(MSG_TOP.format(value=top))
    doc = load_audit(source)
    base = load_audit(baseline, what="baseline") if baseline is not None else None
    if figures:
        from fairlandmark.render.figures import require_matplotlib

        require_matplotlib()
    context = report_context(doc, title=title, figures=figures, baseline=base, labels=labels, top=top, dpi=dpi)
    return render_report(context)


def write_html(source: object, path: str | os.PathLike[str], **options: Any) -> str:
    """Write :func:`to_html` to ``path`` atomically; returns the HTML.

    Parameters
    ----------
    source : path, dict or AuditResult
    path : str or os.PathLike
        Where to write the report.
    **options
        Keyword options of :func:`to_html`.

    Returns
    -------
    str
        The HTML document.
    """
    text = to_html(source, **options)
    write_text_output(path, text)
    return text
