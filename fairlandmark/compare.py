"""Compare two audits: what a mitigation bought in fairness and what it cost in accuracy.

:func:`compare` lines up the (attribute, keypoint) records of two audit
documents (``before``, e.g. the vanilla model, and ``after``, e.g. the
mitigated one) and reports, per row, the change in DP and in keypoint MRE.

Whether a DP change is larger than the noise
---------------------------------------------
Each audit gives an uncertainty per record: the half-width of its bootstrap
interval ``dp_ci`` when the audit was run with significance, else ``dp_std``
(the sample std over runs), else nothing. The change ``after - before``
*exceeds the uncertainty* when ``|change| > sqrt(u_before**2 + u_after**2)``
(the two audits are treated as independent). With no uncertainty on either
side the flag is ``None`` (unknown), never a silent ``False``.

Examples
--------
>>> import numpy as np, fairlandmark
>>> rng = np.random.default_rng(0)
>>> true = rng.uniform(0, 100, (40, 3, 2)); pred = true + rng.normal(0, 10, true.shape)
>>> a = fairlandmark.audit_arrays(pred, true, {"sex": ["F", "M"] * 20}, spacing_mm=0.1)
>>> b = fairlandmark.audit_arrays(pred * 1.0, true, {"sex": ["F", "M"] * 20}, spacing_mm=0.1)
>>> cmp = compare(a, b)
>>> float(cmp.table["dp_change"].abs().max())
0.0
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from fairlandmark.exceptions import InputError
from fairlandmark.document import keypoint_frame, load_audit, overall_row, summary_row
from fairlandmark.files import write_text_output
from fairlandmark.formatting import fmt, fmt_pct, fmt_signed, num, threshold_key

__all__ = ["compare", "Comparison", "compare_html", "CHANGE_TOLERANCE"]

MSG_UNIT = "before is in {a!r} and after in {b!r}: compare audits made with the same pixel-to-mm scale"
MSG_NOTHING = ("before and after share no (attribute, keypoint): before has attributes {a}, after has {b}; "
               "audit the same attributes and keypoints")
MSG_LABELS = "labels: give two names, e.g. ('vanilla', 'mitigated'), got {value!r}"
MSG_ATTRIBUTE = "attribute {name!r} is in neither audit's shared attributes ({known})"
NOTE_THRESHOLD = ("primary thresholds differ (before {a:g}, after {b:g}): DP is measured at different thresholds "
                  "and the comparison is only indicative")
NOTE_ONLY = "{what} only in {side}: {items}"

CHANGE_TOLERANCE = 1e-12  # a DP change smaller than this is no change (float noise)


def _uncertainty(frame):
    half = (frame["dp_high"] - frame["dp_low"]) / 2.0
    return half.where(half.notna(), frame["dp_std"])


def _direction(change):
    if math.isnan(change):
        return "n/a"
    if change < -CHANGE_TOLERANCE:
        return "improved"
    if change > CHANGE_TOLERANCE:
        return "worsened"
    return "unchanged"


class Comparison:
    """Result of :func:`compare`.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per (attribute, keypoint) in both audits: ``dp_before``,
        ``dp_after``, ``dp_change`` (after - before; negative = fairer),
        ``dp_uncertainty``, ``exceeds_uncertainty`` (True/False/None),
        ``direction`` (improved / worsened / unchanged / n/a), ``mre_before``,
        ``mre_after``, ``mre_change`` (positive = the accuracy cost), and the
        ``significant_before/after`` flags when the audits have them.
    summary : pandas.DataFrame
        One row per attribute: mean DP before/after/change, and how many
        keypoints improved or worsened (and how many beyond the uncertainty).
    accuracy : pandas.DataFrame
        One row per keypoint family ("all" first): MRE and SDR at the primary
        threshold before and after, and the MRE cost.
    labels : (str, str)
    unit : str
    notes : list of str
    """

    def __init__(self, *, table, summary, accuracy, labels, unit, thresholds, notes):
        self.table, self.summary, self.accuracy = table, summary, accuracy
        self.labels, self.unit, self.thresholds, self.notes = tuple(labels), unit, thresholds, list(notes)

    def to_dict(self):
        """JSON-ready dict (NaN becomes null)."""
        def clean(records):
            out = []
            for rec in records:
                out.append({k: (None if isinstance(v, float) and not math.isfinite(v) else
                                v.item() if isinstance(v, np.generic) else v) for k, v in rec.items()})
            return out

        return {"kind": "fairlandmark.compare", "labels": list(self.labels), "unit": self.unit,
                "primary_threshold": self.thresholds, "uncertainty_rule":
                "|change| > sqrt(u_before^2 + u_after^2), u = half-width of dp_ci, else dp_std",
                "per_keypoint": clean(self.table.to_dict("records")), "summary": clean(self.summary.to_dict("records")),
                "accuracy": clean(self.accuracy.to_dict("records")), "notes": self.notes}

    def to_json(self, path=None, *, indent=2):
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            write_text_output(path, text + "\n")
        return text

    def __repr__(self):
        return f"Comparison({self.labels[0]!r} -> {self.labels[1]!r}, {len(self.table)} rows)"


def compare(before, after, *, labels=("before", "after"), attribute=None):
    """Per keypoint and attribute, the change in DP and MRE between two audits.

    Parameters
    ----------
    before, after : path, dict or AuditResult
        Audit documents (``fairlandmark audit --json``), e.g. the vanilla and
        the mitigated model on the same test set.
    labels : (str, str), default ("before", "after")
    attribute : str or list of str, optional
        Restrict to these attributes.

    Returns
    -------
    Comparison

    Raises
    ------
    InputError
        Different units, or nothing in common.
    """
    if isinstance(labels, str) or len(tuple(labels)) != 2:
        raise InputError(MSG_LABELS.format(value=labels))
    labels = tuple(str(x) for x in labels)
    b, a = load_audit(before, what="before"), load_audit(after, what="after")
    if b.get("unit") != a.get("unit"):
        raise InputError(MSG_UNIT.format(a=b.get("unit"), b=a.get("unit")))
    notes = []
    tb, ta = num(b.get("primary_threshold")), num(a.get("primary_threshold"))
    if not (math.isnan(tb) or math.isnan(ta)) and tb != ta:
        notes.append(NOTE_THRESHOLD.format(a=tb, b=ta))
    shared_attrs = [x for x in a.get("attributes", []) if x in b.get("attributes", [])]
    if attribute is not None:
        chosen = [attribute] if isinstance(attribute, str) else list(attribute)
        for x in chosen:
            if x not in shared_attrs:
                raise InputError(MSG_ATTRIBUTE.format(name=x, known=", ".join(map(str, shared_attrs))))
        shared_attrs = chosen
    for side, doc, other in (("before", b, a), ("after", a, b)):
        only = [x for x in doc.get("attributes", []) if x not in other.get("attributes", [])]
        if only:
            notes.append(NOTE_ONLY.format(what="attributes", side=side, items=", ".join(map(str, only))))
        okeys = {str(k) for k in other.get("keypoints", [])}
        only = [str(k) for k in doc.get("keypoints", []) if str(k) not in okeys]
        if only:
            notes.append(NOTE_ONLY.format(what="keypoints", side=side, items=", ".join(only)))

    fb, fa = keypoint_frame(b), keypoint_frame(a)
    for f in (fb, fa):
        f["key"] = f["keypoint"].astype(str)
        f["dp_uncertainty"] = _uncertainty(f)
    cols = ["attribute", "key", "dp", "dp_uncertainty", "mre", "significant"]
    merged = fa[["keypoint", "family"] + cols].merge(fb[cols], on=["attribute", "key"], suffixes=("_after", "_before"))
    merged = merged[merged["attribute"].isin(shared_attrs)].reset_index(drop=True)
    if merged.empty:
        raise InputError(MSG_NOTHING.format(a=b.get("attributes"), b=a.get("attributes")))
    table = pd.DataFrame({
        "attribute": merged["attribute"], "keypoint": merged["keypoint"], "family": merged["family"],
        "dp_before": merged["dp_before"], "dp_after": merged["dp_after"],
        "dp_change": merged["dp_after"] - merged["dp_before"],
    })
    unc = np.sqrt(merged["dp_uncertainty_before"].fillna(0.0) ** 2 + merged["dp_uncertainty_after"].fillna(0.0) ** 2)
    known = merged["dp_uncertainty_before"].notna() | merged["dp_uncertainty_after"].notna()
    table["dp_uncertainty"] = unc.where(known, np.nan)
    table["exceeds_uncertainty"] = [
        (None if not k or math.isnan(c) else bool(abs(c) > u)) for k, c, u in
        zip(known, table["dp_change"], table["dp_uncertainty"])]
    table["direction"] = [_direction(c) for c in table["dp_change"]]
    table["mre_before"], table["mre_after"] = merged["mre_before"], merged["mre_after"]
    table["mre_change"] = merged["mre_after"] - merged["mre_before"]
    if any(f["p_value"].notna().any() for f in (fb, fa)):
        table["significant_before"] = merged["significant_before"].astype(bool)
        table["significant_after"] = merged["significant_after"].astype(bool)

    rows = []
    for attr in shared_attrs:
        sub = table[table["attribute"] == attr]
        sb, sa = summary_row(b, attr), summary_row(a, attr)
        mb = num(sb.get("mean_dp")) if sb else float(np.nanmean(sub["dp_before"]))
        ma = num(sa.get("mean_dp")) if sa else float(np.nanmean(sub["dp_after"]))
        beyond = sub["exceeds_uncertainty"].map(lambda v: v is True)
        rows.append({"attribute": attr, "n_keypoints": len(sub), "mean_dp_before": mb, "mean_dp_after": ma,
                     "mean_dp_change": ma - mb,
                     "n_improved": int((sub["direction"] == "improved").sum()),
                     "n_worsened": int((sub["direction"] == "worsened").sum()),
                     "n_improved_beyond": int(((sub["direction"] == "improved") & beyond).sum()),
                     "n_worsened_beyond": int(((sub["direction"] == "worsened") & beyond).sum())})
    summary = pd.DataFrame(rows)

    pb, pa = num(b.get("primary_threshold")), num(a.get("primary_threshold"))
    acc = []
    fams = [r.get("family") for r in a.get("overall") or []]
    for fam in fams:
        rb, ra = overall_row(b, fam), overall_row(a, fam)
        if not rb:
            continue
        acc.append({"family": fam, "mre_before": num(rb.get("mre")), "mre_after": num(ra.get("mre")),
                    "mre_change": num(ra.get("mre")) - num(rb.get("mre")),
                    "sdr_before": num(rb.get(f"sdr_{threshold_key(pb)}")) if not math.isnan(pb) else math.nan,
                    "sdr_after": num(ra.get(f"sdr_{threshold_key(pa)}")) if not math.isnan(pa) else math.nan})
    accuracy = pd.DataFrame(acc, columns=["family", "mre_before", "mre_after", "mre_change", "sdr_before", "sdr_after"])
    return Comparison(table=table, summary=summary, accuracy=accuracy, labels=labels, unit=a.get("unit", ""),
                      thresholds=(None if math.isnan(pb) else pb, None if math.isnan(pa) else pa), notes=notes)


def compare_html(cmp, *, top=15):
    """HTML fragment of a :class:`Comparison` (used by the report)."""
    from fairlandmark.render.html import _e, _html_table  # moves to render/ with the Jinja2 templates
    from fairlandmark.render.markdown import comparison_rows
    b, a = cmp.labels
    parts = []
    rows = [[r["attribute"], fmt(r["mean_dp_before"]), fmt(r["mean_dp_after"]), fmt_signed(r["mean_dp_change"]),
             f"{r['n_improved']} ({r['n_improved_beyond']})", f"{r['n_worsened']} ({r['n_worsened_beyond']})"]
            for r in cmp.summary.to_dict("records")]
    parts.append(_html_table(["attribute", f"mean DP {b}", f"mean DP {a}", "change",
                              "improved (beyond noise)", "worsened (beyond noise)"], rows))
    rows = [[r["family"], fmt(r["mre_before"]), fmt(r["mre_after"]), fmt_signed(r["mre_change"]),
             fmt_pct(r["sdr_before"]), fmt_pct(r["sdr_after"])] for r in cmp.accuracy.to_dict("records")]
    parts.append(f"<h3>Accuracy cost ({_e(cmp.unit)})</h3>")
    parts.append(_html_table(["keypoints", f"MRE {b}", f"MRE {a}", "MRE change", f"SDR {b}", f"SDR {a}"], rows))
    moved = cmp.table.dropna(subset=["dp_change"])
    moved = moved.reindex(moved["dp_change"].abs().sort_values(ascending=False, kind="stable").index).head(top)
    if len(moved):
        parts.append(f"<h3>Largest DP changes (top {len(moved)})</h3>")
        header, rows = comparison_rows(cmp, moved)
        parts.append(_html_table(header, rows, left=2))
    parts.append('<p class="muted">Beyond noise: |change| &gt; √(u<sub>before</sub>² + u<sub>after</sub>²), u = '
                 "half-width of the bootstrap interval, or the std over runs.</p>")
    for note in cmp.notes:
        parts.append(f'<div class="note">{_e(note)}</div>')
    return "".join(parts)
