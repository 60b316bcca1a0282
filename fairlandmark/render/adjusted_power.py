"""Words for reports: does a flagged gap survive adjustment, and what could a study have seen?

Both work on the audit document (the JSON dict) and return plain text lines or
escaped HTML, so the terminal findings and the HTML report say the same thing.

- :func:`adjustment_lines`: for every keypoint flagged by the permutation test,
  whether its gap survives adjustment for the covariates (the adjusted SDR gap,
  the counterpart of DP, significant after the same correction).
- :func:`detectable_lines`: for keypoints that are not significant, the
  smallest gap the study could have detected
  (:func:`fairlandmark.stats.power.min_detectable_dp_for_audit`), so "not
  significant" reads "no gap above X could be seen", not "fair".
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import pandas as pd

from fairlandmark.formatting import fmt, fmt_p, num

__all__ = ["adjustment_lines", "detectable_lines", "adjustment_context", "detectable_context", "detectable_frame",
           "print_adjustment_and_power"]


def adjustment_lines(doc: Mapping, *, max_lines: int = 10) -> list:
    """One line per flagged (attribute, keypoint): does the gap survive adjustment?

    Empty when the audit was not adjusted. Keypoints not flagged by the
    permutation test are left out (nothing to explain); an audit without
    p-values gets its ``max_lines`` largest gaps described.

    Examples
    --------
    >>> rec = {"attribute": "sex", "keypoint": 3, "dp": 0.2, "significant": True, "pair": ["M", "F"],
    ...        "adjusted": {"covariates": ["site"], "sdr_gap": 0.01, "sdr_ci_low": -0.05, "sdr_ci_high": 0.07,
    ...                     "sdr_p_adjusted": 0.8, "sdr_significant": False, "effect_mm": 0.1, "unit": "mm",
    ...                     "p_adjusted": 0.7, "significant": False}}
    >>> line = adjustment_lines({"per_keypoint": [rec], "adjustment": {"covariates": ["site"]}})[0]
    >>> line.startswith("sex, keypoint 3 (DP 0.20, M vs F): does not survive adjustment for site")
    True
    """
    if not doc.get("adjustment"):
        return []
    records = [r for r in doc.get("per_keypoint", []) if r.get("adjusted") and not math.isnan(num(r.get("dp")))]
    if any("significant" in r for r in records):
        records = [r for r in records if r.get("significant")]
    else:  # no p-values: the largest gaps
        records = sorted(records, key=lambda r: -num(r.get("dp")))[:max_lines]
    lines = []
    for rec in records:
        adj = rec["adjusted"]
        cov = ", ".join(adj.get("covariates") or [])
        pair = " vs ".join(rec.get("pair") or []) or adj.get("contrast") or "-"
        head = f"{rec['attribute']}, keypoint {rec['keypoint']} (DP {fmt(rec.get('dp'), 2)}, {pair})"
        if math.isnan(num(adj.get("sdr_gap"))):
            lines.append(f"{head}: the adjusted SDR gap could not be estimated (see warnings)")
            continue
        verdict = "survives adjustment" if adj.get("sdr_significant") else "does not survive adjustment"
        interval = f"[{fmt(adj.get('sdr_ci_low'), 2)}, {fmt(adj.get('sdr_ci_high'), 2)}]"
        lines.append(f"{head}: {verdict} for {cov}: adjusted SDR gap {fmt(adj.get('sdr_gap'), 2)} {interval}, "
                     f"p adj {fmt_p(adj.get('sdr_p_adjusted'))}; error gap {fmt(adj.get('effect_mm'), 2)} "
                     f"{adj.get('unit', 'mm')}, p adj {fmt_p(adj.get('p_adjusted'))}")
    return lines


def detectable_frame(doc: Mapping, *, power: float = 0.8, n_sim: int = 1000, seed: int = 0) -> pd.DataFrame:
    """:func:`fairlandmark.stats.power.min_detectable_dp_for_audit` of the document (empty if it cannot plan)."""
    from fairlandmark.exceptions import InputError
    from fairlandmark.stats.power import min_detectable_dp_for_audit

    try:
        return min_detectable_dp_for_audit(doc, power=power, n_sim=n_sim, seed=seed)
    except InputError:
        return pd.DataFrame()


def detectable_lines(doc: Mapping, frame: pd.DataFrame | None = None, *, max_lines: int = 10) -> list:
    """For keypoints that are not significant: the smallest gap the study could have detected.

    One line per attribute (the range over its non-significant keypoints), plus
    one per keypoint up to ``max_lines``. Empty when the audit has no p-values.
    """
    if not any("significant" in r for r in doc.get("per_keypoint", [])):
        return []
    frame = detectable_frame(doc) if frame is None else frame
    if frame.empty:
        return []
    quiet = frame[~frame["significant"].fillna(False).astype(bool)]
    lines = []
    for attribute, rows in quiet.groupby("attribute", sort=False):
        mdd = rows["min_detectable_dp"].astype(float)
        power = float(rows["power"].iloc[0])
        if mdd.notna().any():
            low, high = fmt(mdd.min(), 2), fmt(mdd.max(), 2)
            span = low if low == high else f"{low} to {high} (by keypoint)"
            lines.append(f"{attribute}: {len(rows)} keypoint(s) not significant; this study would have flagged "
                         f"a gap of {span} with power {power:g}; smaller gaps could have gone unseen")
        else:
            lines.append(f"{attribute}: {len(rows)} keypoint(s) not significant; this study could not have "
                         f"flagged any gap with power {power:g}")
    for row in quiet.head(max_lines).to_dict("records"):
        lines.append(f"  keypoint {row['keypoint']} ({row['attribute']}): observed DP {fmt(row['observed_dp'], 2)}, "
                     f"no gap above {fmt(row['min_detectable_dp'], 2)} could be seen")
    return lines


def adjustment_context(doc: Mapping) -> dict | None:
    """The report's "Adjusted gaps" section as plain text (the template escapes it); None when not adjusted."""
    settings = doc.get("adjustment")
    if not settings:
        return None
    cov = ", ".join(settings.get("covariates") or [])
    intro = (f"Gaps adjusted for {cov}: GEE models of the hit (SDR) and of the error, images as clusters, "
             f"{settings.get('correction')} correction over the adjusted tests at alpha {settings.get('alpha')}. "
             "A gap that does not survive travels with the covariates.")
    return {"intro": intro, "lines": adjustment_lines(doc) or ["No flagged keypoint to explain."]}


def detectable_context(doc: Mapping, frame: pd.DataFrame | None = None) -> dict | None:
    """What "not significant" means, as plain text for the report; None without p-values or when all are flagged."""
    lines = detectable_lines(doc, frame, max_lines=0)
    if not lines:
        return None
    return {"intro": "What \"not significant\" means here: the smallest gap this study could have detected "
                     "(fairlandmark plan gives the detail per keypoint).", "lines": lines}


def print_adjustment_and_power(doc: Mapping, console: Any) -> None:
    """Terminal findings: adjustment verdicts of flagged gaps, then what the study could have seen."""
    lines = adjustment_lines(doc)
    if lines:
        console.print("Adjusted for " + ", ".join(doc["adjustment"].get("covariates") or []) + ":", markup=False,
                      style="bold")
        for line in lines:
            console.print("  " + line, markup=False)
    elif doc.get("adjustment"):
        console.print("Adjusted gaps computed; no flagged keypoint to explain (see the JSON 'adjusted' objects).",
                      markup=False)
    power = detectable_lines(doc)
    if power:
        console.print("What 'not significant' means here:", markup=False, style="bold")
        for line in power:
            console.print(line if line.startswith("  ") else "  " + line, markup=False)
