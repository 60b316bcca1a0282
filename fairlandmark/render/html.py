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
import json
import math
import os
from collections.abc import Mapping
from datetime import datetime, timezone

import pandas as pd

from fairlandmark.exceptions import InputError

__all__ = [
    "load_audit", "keypoint_frame", "keypoint_mre", "has_significance", "to_markdown", "to_html",
    "write_html", "write_markdown", "SUPPORTED_SCHEMA",
]

SUPPORTED_SCHEMA = "1"  # major version this module reads

MSG_NOT_FOUND = "{what} {path}: file not found; give the JSON written by `fairlandmark audit --json PATH`"
MSG_NOT_JSON = "{what} {path}: not valid JSON ({error}); give the file written by `fairlandmark audit --json PATH`"
MSG_NOT_AUDIT = ("{what} {path}: not a fairlandmark audit (no '{key}' key); "
                 "give the file written by `fairlandmark audit --json PATH`")
MSG_SCHEMA = ("{what} {path}: schema_version {version!r} is not supported (this fairlandmark reads {supported}.x); "
              "re-run the audit with this version")
MSG_BAD_SOURCE = "{what}: expected a path, a dict or an AuditResult, got {type}"
MSG_TOP = "top: must be an integer >= 1, got {value!r}"

_REQUIRED = ("schema_version", "per_keypoint", "attributes", "keypoints")


# -- the audit document --------------------------------------------------------------------------------------
def load_audit(source, *, what="audit"):
    """Return the audit document (a dict) from a path, a dict or an AuditResult.

    Parameters
    ----------
    source : str, os.PathLike, dict or AuditResult
        The JSON file written by ``fairlandmark audit --json``, its parsed
        dict, or the result object itself.
    what : str, default "audit"
        How the source is named in error messages (e.g. "baseline").

    Returns
    -------
    dict

    Raises
    ------
    InputError
        Missing file, invalid JSON, not an audit, or an unsupported schema.

    Examples
    --------
    >>> load_audit({"schema_version": "1.0", "per_keypoint": [], "attributes": [], "keypoints": []})["schema_version"]
    '1.0'
    """
    path = "(dict)"
    if hasattr(source, "to_dict") and not isinstance(source, Mapping):
        doc = source.to_dict()
    elif isinstance(source, Mapping):
        doc = dict(source)
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            with open(path, encoding="utf-8") as handle:
                doc = json.load(handle)
        except FileNotFoundError:
            raise InputError(MSG_NOT_FOUND.format(what=what, path=path)) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(MSG_NOT_JSON.format(what=what, path=path, error=str(exc).splitlines()[0])) from None
    else:
        raise InputError(MSG_BAD_SOURCE.format(what=what, type=type(source).__name__))
    if not isinstance(doc, Mapping):
        raise InputError(MSG_NOT_AUDIT.format(what=what, path=path, key="schema_version"))
    for key in _REQUIRED:
        if key not in doc:
            raise InputError(MSG_NOT_AUDIT.format(what=what, path=path, key=key))
    version = str(doc["schema_version"])
    if version.split(".")[0] != SUPPORTED_SCHEMA:
        raise InputError(MSG_SCHEMA.format(what=what, path=path, version=version, supported=SUPPORTED_SCHEMA))
    doc.setdefault("_source", path)
    return doc


def _num(value):
    """Float or NaN (None and non-numbers become NaN)."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _isnan(value):
    return value is None or (isinstance(value, float) and math.isnan(value))


def has_significance(doc):
    """True when the audit carries permutation p-values."""
    return any(rec.get("p_value") is not None for rec in doc.get("per_keypoint", []))


def _record_mre(rec):
    """Per-keypoint MRE over all images of a record, and its std if the audit gives one.

    Uses the record's ``mre`` when present, otherwise the mean of the group
    MREs weighted by the number of predictions present in each group.
    """
    if rec.get("mre") is not None:
        return _num(rec["mre"]), _num(rec.get("mre_std"))
    total = weight = 0.0
    n_by, miss_by = rec.get("n_by_group") or {}, rec.get("n_missing_by_group") or {}
    for group, value in (rec.get("mre_by_group") or {}).items():
        v = _num(value)
        w = _num(n_by.get(group, 1)) - _num(miss_by.get(group, 0) or 0)
        if math.isnan(v) or math.isnan(w) or w <= 0:
            continue
        total += v * w
        weight += w
    return (total / weight if weight else math.nan), math.nan


def keypoint_frame(doc):
    """One tidy row per (attribute, keypoint) from the audit document.

    Columns: ``attribute, keypoint, family, dp, dp_std, dp_low, dp_high,
    baseline_mean, baseline_std, p_value, p_adjusted, significant, pair,
    mre, mre_gap, mre_gap_p_adjusted``. Significance columns are NaN (and
    ``significant`` False) when the audit has none.

    Examples
    --------
    >>> doc = {"per_keypoint": [{"attribute": "sex", "keypoint": 1, "dp": 0.1, "pair": ["F", "M"],
    ...        "mre_by_group": {"F": 1.0, "M": 3.0}, "n_by_group": {"F": 1, "M": 3}}]}
    >>> float(keypoint_frame(doc)["mre"].iloc[0])
    2.5
    """
    rows = []
    for rec in doc.get("per_keypoint", []):
        ci = rec.get("dp_ci") or [None, None]
        mre, mre_std = _record_mre(rec)
        pair = rec.get("pair")
        rows.append({
            "attribute": rec.get("attribute"), "keypoint": rec.get("keypoint"), "family": rec.get("family") or "",
            "dp": _num(rec.get("dp")), "dp_std": _num(rec.get("dp_std")),
            "dp_low": _num(ci[0]), "dp_high": _num(ci[1]),
            "baseline_mean": _num(rec.get("baseline_mean")), "baseline_std": _num(rec.get("baseline_std")),
            "p_value": _num(rec.get("p_value")), "p_adjusted": _num(rec.get("p_adjusted")),
            "significant": bool(rec.get("significant") or False),
            "pair": " vs ".join(str(p) for p in pair) if pair else "",
            "mre": mre, "mre_std": mre_std,
            "mre_gap": _num(rec.get("mre_gap")), "mre_gap_p_adjusted": _num(rec.get("mre_gap_p_adjusted")),
        })
    columns = ["attribute", "keypoint", "family", "dp", "dp_std", "dp_low", "dp_high", "baseline_mean",
               "baseline_std", "p_value", "p_adjusted", "significant", "pair", "mre", "mre_std", "mre_gap",
               "mre_gap_p_adjusted"]
    return pd.DataFrame(rows, columns=columns)


def keypoint_mre(doc):
    """Per-keypoint MRE over all images (one row per keypoint, in audit order).

    Taken from the first single attribute of the audit (every attribute
    covers every image, so any one gives the same keypoint MRE).
    """
    frame = keypoint_frame(doc)
    if frame.empty:
        return frame[["keypoint", "family", "mre", "mre_std"]]
    attrs = [a for a in doc.get("attributes", []) if "&" not in str(a)] or list(frame["attribute"].unique())
    sub = frame[frame["attribute"] == attrs[0]]
    return sub[["keypoint", "family", "mre", "mre_std"]].reset_index(drop=True)


def overall_row(doc, family="all"):
    """The ``overall`` record of one family (``{}`` if absent)."""
    for row in doc.get("overall") or []:
        if row.get("family") == family:
            return row
    return {}


def summary_row(doc, attribute, family="all"):
    for row in doc.get("summary") or []:
        if row.get("attribute") == attribute and row.get("family") == family:
            return row
    return {}


def thr_key(value):
    """The key of a threshold in the JSON (``2.0`` -> ``"2"``)."""
    return f"{float(value):g}"


def privacy_records(doc):
    """Flatten the optional ``privacy`` block into records with an ``attribute``.

    Accepts ``{"attributes": {name: {...}}}``, ``{name: {...}}``, a list of
    records, or a single record; returns the records that carry a
    ``balanced_accuracy``.
    """
    block = doc.get("privacy")
    out = []

    def visit(obj, name=None):
        if isinstance(obj, Mapping):
            if "balanced_accuracy" in obj:
                rec = dict(obj)
                rec.setdefault("attribute", name)
                out.append(rec)
                return
            for key, value in obj.items():
                if isinstance(value, (Mapping, list)):
                    visit(value, key if name is None or key not in ("attributes", "results") else name)
        elif isinstance(obj, list):
            for item in obj:
                visit(item, name)

    if block:
        visit(block)
    return out


# -- formatting ----------------------------------------------------------------------------------------------
def fmt(value, digits=3):
    v = _num(value) if not isinstance(value, str) else value
    if isinstance(v, str):
        return v
    return "-" if math.isnan(v) else f"{v:.{digits}f}"


def fmt_pm(mean, std, digits=3):
    return fmt(mean, digits) if math.isnan(_num(std)) else f"{fmt(mean, digits)} ± {fmt(std, digits)}"


def fmt_p(p):
    p = _num(p)
    if math.isnan(p):
        return "-"
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def fmt_pct(value, digits=1):
    v = _num(value)
    return "-" if math.isnan(v) else f"{100 * v:.{digits}f}%"


def _sig_note(doc):
    s = doc.get("significance") or {}
    if not s:
        return ""
    alpha = s.get("alpha", 0.05)
    return (f"adjusted p < {alpha:g} ({s.get('correction', '?')}); {s.get('permutations', '?')} permutations, "
            f"{s.get('bootstrap', '?')} bootstrap resamples, {int(round(100 * _num(s.get('ci', 0.95))))}% intervals, "
            f"seed {s.get('seed', '?')}")


def _headline(doc):
    n_att = len([a for a in doc.get("attributes", [])])
    return (f"{n_att} attribute{'s' if n_att != 1 else ''}, {len(doc.get('keypoints', []))} keypoints, "
            f"{doc.get('n_images', '?')} images, {doc.get('n_runs', '?')} run(s), unit {doc.get('unit', '?')}")


def top_gaps(doc, top=5):
    """The ``top`` (attribute, keypoint) rows with the largest DP."""
    frame = keypoint_frame(doc)
    return frame.dropna(subset=["dp"]).sort_values("dp", ascending=False, kind="stable").head(top)


# -- Markdown ------------------------------------------------------------------------------------------------
def _md_escape(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(header, rows):
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _accuracy_rows(doc):
    unit, thresholds = doc.get("unit", ""), doc.get("thresholds", [])
    header = ["keypoints", f"MRE ({unit})"] + [f"SDR@{thr_key(t)}{unit}" for t in thresholds] + ["missing"]
    rows = []
    for row in doc.get("overall") or []:
        rows.append([row.get("family"), fmt_pm(row.get("mre"), row.get("mre_std"), 2)]
                    + [fmt_pm(row.get(f"sdr_{thr_key(t)}"), row.get(f"sdr_{thr_key(t)}_std"))
                       for t in thresholds]
                    + [f"{row.get('n_missing', 0)} / {row.get('n_predictions', '?')}"])
    return header, rows


def _summary_rows(doc, frame):
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


def _gap_rows(doc, gaps):
    sig = has_significance(doc)
    header = ["attribute", "keypoint", "DP", "pair (high vs low SDR)", f"MRE ({doc.get('unit', '')})"]
    if sig:
        header += ["baseline", "p adj", "significant"]
    rows = []
    for r in gaps.to_dict("records"):
        cells = [r["attribute"], str(r["keypoint"]), fmt_pm(r["dp"], r["dp_std"]), r["pair"] or "-", fmt(r["mre"], 2)]
        if sig:
            cells += [fmt_pm(r["baseline_mean"], r["baseline_std"]), fmt_p(r["p_adjusted"]),
                      "yes" if r["significant"] else "no"]
        rows.append(cells)
    return header, rows


def _privacy_lines(doc):
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


def to_markdown(source, *, title=None, top=5, details=True):
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
    out = [f"## {title or 'fairlandmark audit'}", "", f"_{_headline(doc)}_", ""]
    if unit == "px":
        out += ["> No pixel-to-mm scale was given: errors and thresholds are in pixels.", ""]
    allrow = overall_row(doc)
    if allrow:
        thr = doc.get("primary_threshold", (doc.get("thresholds") or [None])[0])
        out += [f"**Accuracy:** MRE {fmt_pm(allrow.get('mre'), allrow.get('mre_std'), 2)} {unit}, "
                f"SDR@{thr_key(thr)}{unit} {fmt_pct(allrow.get(f'sdr_{thr_key(thr)}'))}", ""]
    header, rows = _summary_rows(doc, frame)
    out += ["**Demographic parity (DP) over keypoints**", "", md_table(header, rows), ""]
    gaps = top_gaps(doc, top)
    if len(gaps):
        header, rows = _gap_rows(doc, gaps)
        out += [f"**Largest gaps** (top {len(gaps)})", "", md_table(header, rows), ""]
    if has_significance(doc):
        sig = frame[frame["significant"]]
        out += [f"**Significance:** {len(sig)} of {len(frame)} keypoint x attribute tests significant "
                f"({_sig_note(doc)}).", ""]
    else:
        out += ["_No significance computed: run the audit with `--permutations` for p-values._", ""]
    privacy = _privacy_lines(doc)
    if privacy:
        out += ["**Privacy (attribute inference)**", ""] + [f"- {line}" for line in privacy] + [""]
    if doc.get("measurements"):
        from fairlandmark.render.measurements import measurement_findings

        out += ["**Clinical measurements**", ""] + [f"- {_md_escape(line)}" for line in measurement_findings(doc)]
        out += [""]
    if details:
        header, rows = _accuracy_rows(doc)
        out += ["<details><summary>Accuracy by family</summary>", "", md_table(header, rows), "", "</details>", ""]
        warns = doc.get("warnings") or []
        if warns:
            out += [f"<details><summary>{len(warns)} warning(s)</summary>", ""]
            out += [f"- {_md_escape(w)}" for w in warns] + ["", "</details>", ""]
    return "\n".join(out).rstrip() + "\n"


def write_markdown(source, path, **options):
    """Write :func:`to_markdown` to ``path`` atomically (``"-"`` prints it)."""
    text = to_markdown(source, **options)
    _write_text(path, text)
    return text


def _write_text(path, text):
    if path == "-":
        import sys

        sys.stdout.write(text)
        return
    from fairlandmark.files import atomic_write_text

    atomic_write_text(path, text)


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


def _e(value):
    return html.escape(str(value), quote=True)


def _html_table(header, rows, *, left=1, row_classes=None, cell_styles=None):
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


def _heat(value, vmax):
    v = _num(value)
    if math.isnan(v) or not vmax or vmax <= 0:
        return ""
    alpha = max(0.0, min(1.0, v / vmax)) * 0.55
    return f"background:rgba(214,69,65,{alpha:.2f})"


def _figure_html(fig, caption, dpi=110):
    from fairlandmark.render.figures import png_base64

    data = png_base64(fig, dpi=dpi)
    return (f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _generic_html(obj, depth=0):
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


def _fmt_any(value):
    if isinstance(value, bool) or value is None:
        return "-" if value is None else ("yes" if value else "no")
    if isinstance(value, float):
        return fmt(value, 4 if abs(value) < 0.01 and value != 0 else 3)
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt_any(v) for v in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_fmt_any(v)}" for k, v in value.items())
    return str(value)


def _privacy_html(doc):
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
            cls = "risk" if leak or (leak is None and _num(rec.get("p_value")) < 0.05) else "note"
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


def _fairness_map_html(doc, dpi):
    """The fairness map figure, or a note saying why it is left out."""
    from fairlandmark.render.fairness_map import MSG_NO_ANATOMY, fairness_map, has_anatomy

    if not has_anatomy(doc):
        return f'<div class="note">{_e(MSG_NO_ANATOMY[0].upper() + MSG_NO_ANATOMY[1:])}.</div>'
    colour = "DP above chance (DP minus the randomized baseline)" if has_significance(doc) and any(
        r.get("baseline_mean") is not None for r in doc["per_keypoint"]) else "DP"
    cap = (f"Fairness map: each keypoint at its mean position after Procrustes alignment of the ground truth, "
           f"coloured by {colour}; a black ring marks a gap significant after correction.")
    return _figure_html(fairness_map(doc), cap, dpi)


def _measurements_html(doc):
    """Clinical measurements: findings in words, a table per attribute, confusion matrices folded."""
    from fairlandmark.render.measurements import confusion_tables, measurement_findings, measurement_table

    parts = [f"<p>{_e(line)}</p>" for line in measurement_findings(doc)]
    settings = doc.get("measurement_settings") or {}
    parts.append('<p class="muted">MAE = mean absolute error of the measurement from predicted landmarks against '
                 "the one from true landmarks; success = error within the tolerance; agree = same class. The gap "
                 "is the largest difference in success rate between groups (class agreement where there is no "
                 "tolerance), mean over runs"
                 + (f"; * adjusted p < {_e(settings.get('alpha'))} ({_e(settings.get('correction'))})"
                    if settings.get("correction") else "") + ".</p>")
    attrs = list(dict.fromkeys(r.get("attribute") for r in doc["measurements"]))
    for i, a in enumerate(attrs):
        header, rows, flags = measurement_table(doc, a)
        parts.append(f"<details{' open' if i == 0 else ''}><summary>{_e(a)}</summary>"
                     + _html_table(header, rows, left=2, row_classes=["sig" if f else "" for f in flags]))
        tables = confusion_tables(doc, a)
        if tables:
            parts.append("<details><summary>Confusion matrices (rows: class from the true landmarks, columns: "
                         "from the predicted ones)</summary>")
            for title, h, r in tables:
                parts.append(f"<p><b>{_e(title)}</b></p>" + _html_table(h, r))
            parts.append("</details>")
        parts.append("</details>")
    if settings.get("citation"):
        parts.append(f'<p class="muted">Definitions: {_e(settings.get("name"))}, after {_e(settings["citation"])}</p>')
    return "".join(parts)


def _keypoint_table_html(doc, attribute, frame, vmax):
    recs = [r for r in doc["per_keypoint"] if r.get("attribute") == attribute]
    groups = [g["group"] for g in doc.get("groups") or [] if g.get("attribute") == attribute]
    for r in recs:
        groups += [g for g in (r.get("sdr_by_group") or {}) if g not in groups]
    unit, thr = doc.get("unit", ""), thr_key(doc.get("primary_threshold", 2.0))
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


def to_html(source, *, title=None, figures=True, baseline=None, labels=("before", "after"), top=10, dpi=110):
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
    thr = thr_key(doc.get("primary_threshold", (doc.get("thresholds") or [2.0])[0]))
    vmax = float(frame["dp"].max()) if frame["dp"].notna().any() else 0.0
    sig = has_significance(doc)
    title = title or "fairlandmark audit report"
    tool = doc.get("tool") or {}
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    P = []
    P.append(f"<h1>{_e(title)}</h1><p class=\"sub\">{_e(_headline(doc))} · thresholds "
             f"{_e(', '.join(thr_key(t) for t in doc.get('thresholds', [])))} {_e(unit)} · "
             f"min group size {_e(doc.get('min_group_size', '-'))}</p>")
    if unit == "px":
        P.append('<div class="note">No pixel-to-mm scale was given: errors and thresholds are in pixels.</div>')

    # summary cards
    allrow = overall_row(doc)
    cards = []
    if allrow:
        spread = "" if math.isnan(_num(allrow.get("mre_std"))) else f"± {fmt(allrow.get('mre_std'), 2)} over runs"
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
    header, rows = _summary_rows(doc, frame)
    P.append("<h3>Demographic parity over keypoints</h3>" + _html_table(header, rows, left=2))
    header, rows = _accuracy_rows(doc)
    P.append("<h3>Accuracy (mean ± std over runs)</h3>" + _html_table(header, rows))
    grows = [[g.get("attribute"), g.get("group"), g.get("n_images", "-"), g.get("n_images_min_run", "-"),
              "yes" if g.get("in_dp", True) else "no (too small)"] for g in doc.get("groups") or []]
    if grows:
        P.append("<h3>Groups</h3>" + _html_table(["attribute", "group", "images", "fewest in a run", "in DP"],
                                                 grows, left=2))
    gaps = top_gaps(doc, top)
    if len(gaps):
        header, rows = _gap_rows(doc, gaps)
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
        P.append(_fairness_map_html(doc, dpi))
        curves = bool((doc.get("curves") or {}).get("records"))
        for a in doc.get("attributes", []):
            fig = F.sdr_curves(doc, attribute=a)
            if curves and len(doc.get("thresholds", [])) <= 1:
                cap = (f"Error curves by group ({a}): SDR over thresholds for the keypoints whose curve gap is "
                       "significant after correction, else the largest curve gaps; the bar marks the gap.")
            else:
                cap = f"SDR over thresholds by group ({a}), for the keypoints with the largest DP."
            P.append(_figure_html(fig, cap, dpi))
            from fairlandmark.render.curves import error_curves_figure, extra_curve_figure

            if extra_curve_figure(doc, a):
                P.append(_figure_html(error_curves_figure(doc, attribute=a),
                                      f"Error curves by group ({a}) over the threshold grid, for the keypoints whose "
                                      "curve gap is significant after correction; the bar marks the gap.", dpi))
        if base is not None:
            fig = F.compare_bars(base, doc, labels=labels)
            P.append(_figure_html(fig, f"{labels[0]} against {labels[1]}: DP and MRE per keypoint.", dpi))

    if base is not None:
        from fairlandmark.compare import compare, compare_html

        P.append(f"<h2>Comparison: {_e(labels[0])} → {_e(labels[1])}</h2>")
        P.append(compare_html(compare(base, doc, labels=labels)))

    P.append("<h2>Significance</h2>")
    if sig:
        P.append(f"<p>{_e(_sig_note(doc))}. The baseline is the DP obtained when each image's attribute is exchanged "
                 "at random with probability 0.5 (mean ± std over repeats).</p>")
        sig_rows = frame[frame["significant"]].sort_values("p_adjusted", kind="stable")
        if len(sig_rows):
            header, rows = _gap_rows(doc, sig_rows)
            P.append(_html_table(header, rows, left=2))
        else:
            P.append("<p>No keypoint × attribute gap is significant after correction.</p>")
    else:
        P.append('<p class="muted">Not computed. Run the audit with <code>--permutations</code> (and '
                 "<code>--bootstrap</code>) for p-values, the randomized baseline and intervals.</p>")

    if doc.get("measurements"):
        P.append("<h2>Clinical measurements</h2>")
        P.append(_measurements_html(doc))

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


def write_html(source, path, **options):
    """Write :func:`to_html` to ``path`` atomically; returns the HTML."""
    text = to_html(source, **options)
    _write_text(path, text)
    return text
