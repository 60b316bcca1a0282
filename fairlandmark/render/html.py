"""Reports people look at: a one-file HTML report and a Markdown summary.

Everything here works on the audit *document*: the versioned JSON that
``fairlandmark audit --json`` writes (or :meth:`AuditResult.to_dict`).
:func:`load_audit` accepts a path, a dict or an :class:`AuditResult`, checks
the schema version, and returns the dict. The significance fields
(``p_value``, ``dp_ci``, ``baseline_mean`` ...) and the ``privacy`` block are
optional: each section appears when its fields are present.

The HTML report is a single file with the figures embedded as base64 PNG,
inline CSS and no script, font or link to anything outside the file, so it
opens offline and can be attached to a CI run as it is.

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

import html
import math
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any


from fairlandmark.document import (AuditDocument, AuditSource, has_significance, keypoint_frame, keypoint_mre,
                                   load_audit, overall_row, privacy_records, summary_row, top_gaps)
from fairlandmark.exceptions import InputError
from fairlandmark.files import write_text_output
from fairlandmark.formatting import fmt, fmt_p, fmt_pct, fmt_pm, num, threshold_key
from fairlandmark.render.markdown import (MSG_TOP, accuracy_rows, gap_rows, headline, significance_note, summary_rows,
                                          to_markdown, write_markdown)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = [
    "load_audit", "keypoint_frame", "keypoint_mre", "has_significance", "to_markdown", "to_html",
    "write_html", "write_markdown",
]




# -- HTML ----------------------------------------------------------------------------------------------------
_CSS = """
:root{--ink:#1f2430;--mute:#5b6475;--line:#dfe3ea;--bg:#f7f8fa;--accent:#2a6fdb;--bad:#c0392b;--ok:#1e8449}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
color:var(--ink);background:var(--bg)}
main{max-width:1200px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:34px 0 10px;padding-bottom:4px;
border-bottom:2px solid var(--line)}h3{font-size:15px;margin:20px 0 8px}
.sub{color:var(--mute);margin:0 0 18px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:14px 0}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:10px 14px;min-width:170px}
.card .k{color:var(--mute);font-size:12px;text-transform:uppercase;letter-spacing:.03em}
.card .v{font-size:20px;font-weight:600}.card .n{color:var(--mute);font-size:12px}
table{border-collapse:collapse;background:#fff;margin:6px 0 14px;font-size:13px}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:right;white-space:nowrap}
th{background:#eef1f5;font-weight:600}td.l,th.l{text-align:left}
.scroll{overflow-x:auto;max-width:100%}
tr.sig td{font-weight:600}.star{color:var(--bad)}
figure{margin:12px 0 20px;background:#fff;border:1px solid var(--line);border-radius:8px;padding:8px}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{color:var(--mute);font-size:12.5px;padding:6px 4px 0}
details{margin:8px 0}summary{cursor:pointer;font-weight:600;padding:4px 0}
.note{background:#fff8e1;border:1px solid #f3d37a;border-radius:6px;padding:8px 12px;margin:10px 0}
.risk{background:#fdecea;border:1px solid #f5b7b1;border-radius:6px;padding:8px 12px;margin:10px 0;font-weight:600}
.muted{color:var(--mute)}footer{color:var(--mute);font-size:12px;margin-top:40px}
ul.warn li{margin:2px 0}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _html_table(header: Sequence[object], rows: Sequence[Sequence[object]], *, left: int = 1,
                row_classes: Sequence[str] | None = None, cell_styles: Sequence[Sequence[str]] | None = None) -> str:
    parts = ['<div class="scroll"><table><thead><tr>']
    parts += [f'<th class="{"l" if i < left else ""}">{_e(h)}</th>' for i, h in enumerate(header)]
    parts.append("</tr></thead><tbody>")
    for r, row in enumerate(rows):
        cls = f' class="{row_classes[r]}"' if row_classes and row_classes[r] else ""
        parts.append(f"<tr{cls}>")
        for i, cell in enumerate(row):
            style = cell_styles[r][i] if cell_styles and cell_styles[r][i] else ""
            parts.append(f'<td class="{"l" if i < left else ""}"{f" style={chr(34)}{style}{chr(34)}" if style else ""}>'
                         f"{_e(cell)}</td>")
        parts.append("</tr>")
    parts.append("</tbody></table></div>")
    return "".join(parts)


# Shared with the comparison fragment (render/compare_html.py).
escape = _e
html_table = _html_table


def _heat(value: object, vmax: float) -> str:
    v = num(value)
    if math.isnan(v) or not vmax or vmax <= 0:
        return ""
    alpha = max(0.0, min(1.0, v / vmax)) * 0.55
    return f"background:rgba(214,69,65,{alpha:.2f})"


def _figure_html(fig: Figure, caption: str, dpi: float = 110) -> str:
    from fairlandmark.render.figures import png_base64

    data = png_base64(fig, dpi=dpi)
    return (f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _generic_html(obj: object, depth: int = 0) -> str:
    """Render any JSON block (used for privacy): scalars as a key/value table, lists of records as tables."""
    if isinstance(obj, Mapping):
        scalars = [(k, v) for k, v in obj.items() if not isinstance(v, (Mapping, list))]
        nested = [(k, v) for k, v in obj.items() if isinstance(v, (Mapping, list))]
        parts = []
        if scalars:
            parts.append(_html_table(["field", "value"], [[k, _fmt_any(v)] for k, v in scalars]))
        for k, v in nested:
            parts.append(f"<h3>{_e(k)}</h3>" if depth < 2 else f"<p><b>{_e(k)}</b></p>")
            parts.append(_generic_html(v, depth + 1))
        return "".join(parts)
    if isinstance(obj, list):
        if obj and all(isinstance(x, Mapping) for x in obj):
            keys = []
            for x in obj:
                keys += [k for k in x if k not in keys]
            return _html_table(keys, [[_fmt_any(x.get(k)) for k in keys] for x in obj])
        return f"<p>{_e(', '.join(_fmt_any(x) for x in obj))}</p>"
    return f"<p>{_e(_fmt_any(obj))}</p>"


def _fmt_any(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else ("yes" if value else "no")
    if isinstance(value, float):
        return fmt(value, 4 if abs(value) < 0.01 and value != 0 else 3)
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt_any(v) for v in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_fmt_any(v)}" for k, v in value.items())
    return str(value)


def _privacy_html(doc: AuditDocument) -> str:
    """Privacy section: risk lines, one row per analysis, settings in a collapsed block."""
    block = doc["privacy"]
    recs = privacy_records(doc)
    parts = []
    if isinstance(block, Mapping) and block.get("risk_line"):
        parts.append(f'<div class="risk">{_e(block["risk_line"])}</div>')
    if not recs:
        return "".join(parts) + _generic_html(block)
    for rec in recs:
        if rec.get("risk_line"):
            leak = rec.get("leak")
            cls = "risk" if leak or (leak is None and num(rec.get("p_value")) < 0.05) else "note"
            parts.append(f'<div class="{cls}">{_e(rec["risk_line"])}</div>')
    header = ["attribute", "analysis", "balanced accuracy", "chance", "p", "leak", "top keypoints"]
    rows = []
    for rec in recs:
        top = rec.get("top_keypoints") or []
        rows.append([rec.get("attribute") or "-", rec.get("analysis") or "-",
                     fmt_pm(rec.get("balanced_accuracy"), rec.get("balanced_accuracy_std")), fmt(rec.get("chance")),
                     fmt_p(rec.get("p_value")), _fmt_any(rec.get("leak")),
                     ", ".join(str(k) for k in top[:8]) or "-"])
    parts.append(_html_table(header, rows, left=2))
    settings = {}
    if isinstance(block, Mapping):
        for name, sub in (block.get("attributes") or {}).items() if isinstance(block.get("attributes"), Mapping) \
                else []:
            if isinstance(sub, Mapping):
                settings[name] = {k: v for k, v in sub.items()
                                  if not isinstance(v, (Mapping, list)) and k not in ("schema_version", "kind")}
    if settings:
        parts.append("<details><summary>Settings of the attribute-inference analysis</summary>"
                     + _generic_html(settings) + "</details>")
    return "".join(parts)


def _keypoint_table_html(doc: AuditDocument, attribute: str, frame: pd.DataFrame, vmax: float) -> str:
    recs = [r for r in doc["per_keypoint"] if r.get("attribute") == attribute]
    groups = [g["group"] for g in doc.get("groups") or [] if g.get("attribute") == attribute]
    for r in recs:
        groups += [g for g in (r.get("sdr_by_group") or {}) if g not in groups]
    unit, thr = doc.get("unit", ""), threshold_key(doc.get("primary_threshold", 2.0))
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
    left = 2 if has_fam else 1
    return (f"<p class=\"muted\">{_e(unit)}; SDR at the primary threshold {thr} {_e(unit)}; DP = largest SDR gap "
            f"between groups{' (* significant after correction)' if sig else ''}.</p>"
            + _html_table(header, rows, left=left, row_classes=classes, cell_styles=styles))


def to_html(source: AuditSource, *, title: str | None = None, figures: bool = True, baseline: AuditSource | None = None,
            labels: Sequence[str] = ("before", "after"), top: int = 10, dpi: float = 110) -> str:
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
    """
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise InputError(MSG_TOP.format(value=top))
    doc = load_audit(source)
    base = load_audit(baseline, what="baseline") if baseline is not None else None
    if figures:
        from fairlandmark.render.figures import require_matplotlib

        require_matplotlib()
    frame = keypoint_frame(doc)
    unit = doc.get("unit", "")
    thr = threshold_key(doc.get("primary_threshold", (doc.get("thresholds") or [2.0])[0]))
    vmax = float(frame["dp"].max()) if frame["dp"].notna().any() else 0.0
    sig = has_significance(doc)
    title = title or "fairlandmark audit report"
    tool = doc.get("tool") or {}
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    P = []
    P.append(f"<h1>{_e(title)}</h1><p class=\"sub\">{_e(headline(doc))} · thresholds "
             f"{_e(', '.join(threshold_key(t) for t in doc.get('thresholds', [])))} {_e(unit)} · "
             f"min group size {_e(doc.get('min_group_size', '-'))}</p>")
    if unit == "px":
        P.append('<div class="note">No pixel-to-mm scale was given: errors and thresholds are in pixels.</div>')

    # summary cards
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
    if sig:
        cards.append(("significant", f"{int(frame['significant'].sum())} / {len(frame)}",
                      "keypoint × attribute tests"))
    P.append('<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{_e(k)}</div><div class="v">{_e(v)}</div><div class="n">{_e(n)}</div></div>'
        for k, v, n in cards) + "</div>")

    P.append("<h2>Summary</h2>")
    header, rows = summary_rows(doc, frame)
    P.append("<h3>Demographic parity over keypoints</h3>" + _html_table(header, rows, left=2))
    header, rows = accuracy_rows(doc)
    P.append("<h3>Accuracy (mean ± std over runs)</h3>" + _html_table(header, rows))
    grows = [[g.get("attribute"), g.get("group"), g.get("n_images", "-"), g.get("n_images_min_run", "-"),
              "yes" if g.get("in_dp", True) else "no (too small)"] for g in doc.get("groups") or []]
    if grows:
        P.append("<h3>Groups</h3>" + _html_table(["attribute", "group", "images", "fewest in a run", "in DP"],
                                                 grows, left=2))
    gaps = top_gaps(doc, top)
    if len(gaps):
        header, rows = gap_rows(doc, gaps)
        P.append(f"<h3>Largest gaps (top {len(gaps)})</h3>" + _html_table(
            header, rows, left=2, row_classes=["sig" if s else "" for s in gaps["significant"]]))

    if figures:
        from fairlandmark.render import figures as F

        P.append("<h2>Figures</h2>")
        fig = F.mre_bars(doc)
        cap = f"Per-keypoint MRE ({unit}), coloured by family; dashed: overall and family means."
        P.append(_figure_html(fig, cap, dpi))
        fig = F.dp_bars(doc)
        cap = "Per-keypoint DP" + (" with bootstrap intervals, the randomized-attribute baseline beside it, "
                                   "and * where significant after correction." if sig else " (± std over runs).")
        P.append(_figure_html(fig, cap, dpi))
        for a in doc.get("attributes", []):
            fig = F.sdr_curves(doc, attribute=a)
            cap = f"SDR over thresholds by group ({a}), for the keypoints with the largest DP."
            P.append(_figure_html(fig, cap, dpi))
        if base is not None:
            fig = F.compare_bars(base, doc, labels=labels)
            P.append(_figure_html(fig, f"{labels[0]} against {labels[1]}: DP and MRE per keypoint.", dpi))

    if base is not None:
        from fairlandmark.compare import compare
        from fairlandmark.render.compare_html import compare_html

        P.append(f"<h2>Comparison: {_e(labels[0])} → {_e(labels[1])}</h2>")
        P.append(compare_html(compare(base, doc, labels=labels)))

    P.append("<h2>Significance</h2>")
    if sig:
        P.append(f"<p>{_e(significance_note(doc))}. The baseline is the DP obtained when each image's attribute is exchanged "
                 "at random with probability 0.5 (mean ± std over repeats).</p>")
        sig_rows = frame[frame["significant"]].sort_values("p_adjusted", kind="stable")
        if len(sig_rows):
            header, rows = gap_rows(doc, sig_rows)
            P.append(_html_table(header, rows, left=2))
        else:
            P.append("<p>No keypoint × attribute gap is significant after correction.</p>")
    else:
        P.append('<p class="muted">Not computed. Run the audit with <code>--permutations</code> (and '
                 "<code>--bootstrap</code>) for p-values, the randomized baseline and intervals.</p>")

    if doc.get("privacy"):
        P.append("<h2>Privacy: attribute inference from errors</h2>")
        P.append(_privacy_html(doc))

    P.append("<h2>Per keypoint</h2>")
    for i, a in enumerate(doc.get("attributes", [])):
        P.append(f"<details{' open' if i == 0 else ''}><summary>{_e(a)}</summary>"
                 f"{_keypoint_table_html(doc, a, frame, vmax)}</details>")

    warns = doc.get("warnings") or []
    if warns:
        P.append(f"<h2>Warnings ({len(warns)})</h2><ul class=\"warn\">" + "".join(f"<li>{_e(w)}</li>" for w in warns)
                 + "</ul>")
    P.append(f"<footer>{_e(tool.get('name', 'fairlandmark'))} {_e(tool.get('version', ''))} · schema "
             f"{_e(doc.get('schema_version'))} · source {_e(os.path.basename(str(doc.get('_source', ''))))} · "
             f"generated {_e(stamp)}</footer>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>"
            + "\n".join(P) + "</main></body></html>\n")


def write_html(source: AuditSource, path: str | os.PathLike[str], **options: Any) -> str:
    """Write :func:`to_html` to ``path`` atomically; returns the HTML."""
    text = to_html(source, **options)
    write_text_output(path, text)
    return text
