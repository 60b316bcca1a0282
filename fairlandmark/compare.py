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
import os
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import pandas as pd

from fairlandmark.exceptions import InputError
from fairlandmark.document import AuditDocument, AuditSource, keypoint_frame, load_audit, overall_row, summary_row
from fairlandmark.files import write_text_output
from fairlandmark.formatting import num, threshold_key

__all__ = ["compare", "Comparison", "CHANGE_TOLERANCE"]

MSG_UNIT = "before is in {a!r} and after in {b!r}: compare audits made with the same pixel-to-mm scale"
MSG_NOTHING = ("before and after share no (attribute, keypoint): before has attributes {a}, after has {b}; "
               "audit the same attributes and keypoints")
MSG_LABELS = "labels: give two names, e.g. ('vanilla', 'mitigated'), got {value!r}"
MSG_ATTRIBUTE = "attribute {name!r} is in neither audit's shared attributes ({known})"
NOTE_THRESHOLD = ("primary thresholds differ (before {a:g}, after {b:g}): DP is measured at different thresholds "
                  "and the comparison is only indicative")
NOTE_ONLY = "{what} only in {side}: {items}"

CHANGE_TOLERANCE = 1e-12  # a DP change smaller than this is no change (float noise)


def _uncertainty(frame: pd.DataFrame) -> pd.Series:
    half = (frame["dp_high"] - frame["dp_low"]) / 2.0
    return half.where(half.notna(), frame["dp_std"])


def _direction(change: float) -> str:
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

    def __init__(self, *, table: pd.DataFrame, summary: pd.DataFrame, accuracy: pd.DataFrame,
                 labels: Iterable[str], unit: str, thresholds: tuple[float | None, float | None],
                 notes: Iterable[str]) -> None:
        self.table, self.summary, self.accuracy = table, summary, accuracy
        self.labels, self.unit, self.thresholds, self.notes = tuple(labels), unit, thresholds, list(notes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN becomes null)."""
        def clean(records: Iterable[Mapping[Hashable, Any]]) -> list[dict[Hashable, Any]]:
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

    def to_json(self, path: str | os.PathLike[str] | None = None, *, indent: int | None = 2) -> str:
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            write_text_output(path, text + "\n")
        return text

    def __repr__(self) -> str:
        return f"Comparison({self.labels[0]!r} -> {self.labels[1]!r}, {len(self.table)} rows)"


def compare(before: AuditSource,
            after: AuditSource, *,
            labels: Sequence[str] = ("before", "after"), attribute: str | Iterable[str] | None = None) -> Comparison:
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
    shared_attrs = _shared_attributes(b, a, attribute)
    table = _keypoint_changes(b, a, shared_attrs)
    pb, pa = num(b.get("primary_threshold")), num(a.get("primary_threshold"))
    return Comparison(table=table, summary=_attribute_summary(b, a, table, shared_attrs),
                      accuracy=_accuracy_cost(b, a, pb, pa), labels=labels, unit=a.get("unit", ""),
                      thresholds=(None if math.isnan(pb) else pb, None if math.isnan(pa) else pa),
                      notes=_notes(b, a, pb, pa))


def _shared_attributes(b: AuditDocument, a: AuditDocument, attribute: str | Iterable[str] | None) -> list[str]:
    """Attributes in both audits, or the chosen ones (which must be in both)."""
    shared_attrs = [x for x in a.get("attributes", []) if x in b.get("attributes", [])]
    if attribute is None:
        return shared_attrs
    chosen = [attribute] if isinstance(attribute, str) else list(attribute)
    for x in chosen:
        if x not in shared_attrs:
            raise InputError(MSG_ATTRIBUTE.format(name=x, known=", ".join(map(str, shared_attrs))))
    return chosen


def _notes(b: AuditDocument, a: AuditDocument, pb: float, pa: float) -> list[str]:
    """What differs between the audits: the primary threshold, attributes or keypoints on one side only."""
    notes = []
    if not (math.isnan(pb) or math.isnan(pa)) and pb != pa:
        notes.append(NOTE_THRESHOLD.format(a=pb, b=pa))
    for side, doc, other in (("before", b, a), ("after", a, b)):
        only = [x for x in doc.get("attributes", []) if x not in other.get("attributes", [])]
        if only:
            notes.append(NOTE_ONLY.format(what="attributes", side=side, items=", ".join(map(str, only))))
        okeys = {str(k) for k in other.get("keypoints", [])}
        only = [str(k) for k in doc.get("keypoints", []) if str(k) not in okeys]
        if only:
            notes.append(NOTE_ONLY.format(what="keypoints", side=side, items=", ".join(only)))
    return notes


def _keypoint_changes(b: AuditDocument, a: AuditDocument, shared_attrs: list[str]) -> pd.DataFrame:
    """One row per shared (attribute, keypoint): DP and MRE before and after, and whether the change beats noise."""
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
    unc = cast(pd.Series, np.sqrt(merged["dp_uncertainty_before"].fillna(0.0) ** 2
                                  + merged["dp_uncertainty_after"].fillna(0.0) ** 2))  # a Series at run time
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
    return table


def _attribute_summary(b: AuditDocument, a: AuditDocument, table: pd.DataFrame, shared_attrs: list[str]) -> pd.DataFrame:
    """Per attribute: mean DP before and after, keypoints improved or worsened (and beyond noise)."""
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
    return pd.DataFrame(rows)


def _accuracy_cost(b: AuditDocument, a: AuditDocument, pb: float, pa: float) -> pd.DataFrame:
    """Per keypoint family: MRE and primary SDR before and after."""
    acc = []
    for fam in [r.get("family") for r in a.get("overall") or []]:
        rb, ra = overall_row(b, fam), overall_row(a, fam)
        if not rb:
            continue
        acc.append({"family": fam, "mre_before": num(rb.get("mre")), "mre_after": num(ra.get("mre")),
                    "mre_change": num(ra.get("mre")) - num(rb.get("mre")),
                    "sdr_before": num(rb.get(f"sdr_{threshold_key(pb)}")) if not math.isnan(pb) else math.nan,
                    "sdr_after": num(ra.get(f"sdr_{threshold_key(pa)}")) if not math.isnan(pa) else math.nan})
    return pd.DataFrame(acc, columns=["family", "mre_before", "mre_after", "mre_change", "sdr_before", "sdr_after"])
