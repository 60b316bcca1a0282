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
from fairlandmark.render.html import (_num, fmt, fmt_pct, keypoint_frame, load_audit, md_table, overall_row,
                     summary_row, thr_key)

__all__ = ["compare", "Comparison", "render_comparison", "fmt_signed"]

MSG_UNIT = "before is in {a!r} and after in {b!r}: compare audits made with the same pixel-to-mm scale"
MSG_NOTHING = ("before and after share no (attribute, keypoint): before has attributes {a}, after has {b}; "
               "audit the same attributes and keypoints")
MSG_LABELS = "labels: give two names, e.g. ('vanilla', 'mitigated'), got {value!r}"
MSG_ATTRIBUTE = "attribute {name!r} is in neither audit's shared attributes ({known})"
NOTE_THRESHOLD = ("primary thresholds differ (before {a:g}, after {b:g}): DP is measured at different thresholds "
                  "and the comparison is only indicative")
NOTE_ONLY = "{what} only in {side}: {items}"

_TOL = 1e-12


def _uncertainty(frame):
    half = (frame["dp_high"] - frame["dp_low"]) / 2.0
    return half.where(half.notna(), frame["dp_std"])


def _direction(change):
    if math.isnan(change):
        return "n/a"
    if change < -_TOL:
        return "improved"
    if change > _TOL:
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
            from fairlandmark.render.html import _write_text

            _write_text(path, text + "\n")
        return text

    def to_markdown(self, *, top=10):
        """Markdown for a PR comment: summary, MRE cost, the largest changes."""
        b, a = self.labels
        unit = self.unit
        out = [f"## fairlandmark compare: {b} → {a}", ""]
        rows = []
        for r in self.summary.to_dict("records"):
            rows.append([r["attribute"], fmt(r["mean_dp_before"]), fmt(r["mean_dp_after"]),
                         fmt_signed(r["mean_dp_change"]), f"{r['n_improved']} ({r['n_improved_beyond']})",
                         f"{r['n_worsened']} ({r['n_worsened_beyond']})"])
        out += [md_table(["attribute", f"mean DP {b}", f"mean DP {a}", "change", "keypoints improved (beyond noise)",
                          "worsened (beyond noise)"], rows), ""]
        rows = [[r["family"], fmt(r["mre_before"], 3), fmt(r["mre_after"], 3), fmt_signed(r["mre_change"], 3),
                 fmt_pct(r["sdr_before"]), fmt_pct(r["sdr_after"])] for r in self.accuracy.to_dict("records")]
        thr = thr_key(self.thresholds[1]) if self.thresholds[1] is not None else "?"
        out += [f"**Accuracy cost** ({unit}; positive MRE change = less accurate)", "",
                md_table(["keypoints", f"MRE {b}", f"MRE {a}", "change", f"SDR@{thr} {b}", f"SDR@{thr} {a}"], rows), ""]
        moved = self.table.dropna(subset=["dp_change"])
        moved = moved.reindex(moved["dp_change"].abs().sort_values(ascending=False, kind="stable").index).head(top)
        if len(moved):
            out += [f"**Largest DP changes** (top {len(moved)})", "", md_table(*self.change_rows(moved)), ""]
        out += ["_Beyond noise: |change| > sqrt(u_before² + u_after²), u = half-width of the bootstrap interval "
                "(or std over runs)._", ""]
        out += [f"- note: {n}" for n in self.notes]
        return "\n".join(out).rstrip() + "\n"

    def change_rows(self, frame):
        """Header and formatted rows of the per-keypoint changes in ``frame`` (rows of :attr:`table`)."""
        b, a = self.labels
        header = ["attribute", "keypoint", f"DP {b}", f"DP {a}", "change", "± noise", "beyond noise", "direction",
                  f"MRE change ({self.unit})"]
        rows = []
        for r in frame.to_dict("records"):
            ex = r["exceeds_uncertainty"]
            rows.append([r["attribute"], str(r["keypoint"]), fmt(r["dp_before"]), fmt(r["dp_after"]),
                         fmt_signed(r["dp_change"]), fmt(r["dp_uncertainty"]),
                         "?" if ex is None else ("yes" if ex else "no"), r["direction"],
                         fmt_signed(r["mre_change"], 3)])
        return header, rows

    def __repr__(self):
        return f"Comparison({self.labels[0]!r} -> {self.labels[1]!r}, {len(self.table)} rows)"


def fmt_signed(value, digits=3):
    """A change with its sign (``+0.012``), ``-`` when unknown.

    Examples
    --------
    >>> fmt_signed(0.0123), fmt_signed(-1.5, 1), fmt_signed(None)
    ('+0.012', '-1.5', '-')
    """
    v = _num(value)
    return "-" if math.isnan(v) else f"{v:+.{digits}f}"


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
    tb, ta = _num(b.get("primary_threshold")), _num(a.get("primary_threshold"))
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
        mb = _num(sb.get("mean_dp")) if sb else float(np.nanmean(sub["dp_before"]))
        ma = _num(sa.get("mean_dp")) if sa else float(np.nanmean(sub["dp_after"]))
        beyond = sub["exceeds_uncertainty"].map(lambda v: v is True)
        rows.append({"attribute": attr, "n_keypoints": len(sub), "mean_dp_before": mb, "mean_dp_after": ma,
                     "mean_dp_change": ma - mb,
                     "n_improved": int((sub["direction"] == "improved").sum()),
                     "n_worsened": int((sub["direction"] == "worsened").sum()),
                     "n_improved_beyond": int(((sub["direction"] == "improved") & beyond).sum()),
                     "n_worsened_beyond": int(((sub["direction"] == "worsened") & beyond).sum())})
    summary = pd.DataFrame(rows)

    pb, pa = _num(b.get("primary_threshold")), _num(a.get("primary_threshold"))
    acc = []
    fams = [r.get("family") for r in a.get("overall") or []]
    for fam in fams:
        rb, ra = overall_row(b, fam), overall_row(a, fam)
        if not rb:
            continue
        acc.append({"family": fam, "mre_before": _num(rb.get("mre")), "mre_after": _num(ra.get("mre")),
                    "mre_change": _num(ra.get("mre")) - _num(rb.get("mre")),
                    "sdr_before": _num(rb.get(f"sdr_{thr_key(pb)}")) if not math.isnan(pb) else math.nan,
                    "sdr_after": _num(ra.get(f"sdr_{thr_key(pa)}")) if not math.isnan(pa) else math.nan})
    accuracy = pd.DataFrame(acc, columns=["family", "mre_before", "mre_after", "mre_change", "sdr_before", "sdr_after"])
    return Comparison(table=table, summary=summary, accuracy=accuracy, labels=labels, unit=a.get("unit", ""),
                      thresholds=(None if math.isnan(pb) else pb, None if math.isnan(pa) else pa), notes=notes)


def render_comparison(cmp, console, *, top=None):
    """Rich tables of a :class:`Comparison`."""
    from rich.table import Table

    b, a = cmp.labels
    t = Table(title=f"DP per attribute: {b} → {a}", header_style="bold")
    for col in ("attribute", f"mean DP {b}", f"mean DP {a}", "change", "improved (beyond noise)",
                "worsened (beyond noise)"):
        t.add_column(col, justify="left" if col == "attribute" else "right")
    for r in cmp.summary.to_dict("records"):
        t.add_row(str(r["attribute"]), fmt(r["mean_dp_before"]), fmt(r["mean_dp_after"]),
                  _colour(r["mean_dp_change"]), f"{r['n_improved']} ({r['n_improved_beyond']})",
                  f"{r['n_worsened']} ({r['n_worsened_beyond']})")
    console.print(t)
    t = Table(title=f"Accuracy cost ({cmp.unit}; positive = less accurate)", header_style="bold")
    for col in ("keypoints", f"MRE {b}", f"MRE {a}", "MRE change", f"SDR {b}", f"SDR {a}"):
        t.add_column(col, justify="left" if col == "keypoints" else "right")
    for r in cmp.accuracy.to_dict("records"):
        t.add_row(str(r["family"]), fmt(r["mre_before"]), fmt(r["mre_after"]), _colour(r["mre_change"]),
                  fmt_pct(r["sdr_before"]), fmt_pct(r["sdr_after"]))
    console.print(t)
    frame = cmp.table
    if top is not None:
        frame = frame.dropna(subset=["dp_change"])
        frame = frame.reindex(frame["dp_change"].abs().sort_values(ascending=False, kind="stable").index).head(top)
    header, rows = cmp.change_rows(frame)
    t = Table(title="Per keypoint (change = after - before; negative DP change = fairer)", header_style="bold")
    for i, col in enumerate(header):
        t.add_column(col, justify="left" if i < 2 else "right")
    for row, rec in zip(rows, frame.to_dict("records")):
        row[4] = _colour(rec["dp_change"], strong=rec["exceeds_uncertainty"] is True)
        t.add_row(*row)
    console.print(t)
    for note in cmp.notes:
        console.print(f"[yellow]note:[/] {note}")


def _colour(value, strong=False):
    text = fmt_signed(value)
    v = _num(value)
    if math.isnan(v) or abs(v) <= _TOL:
        return text
    colour = "green" if v < 0 else "red"
    return f"[bold {colour}]{text}[/]" if strong else f"[{colour}]{text}[/]"
