"""Findings in words: what an audit found, for the first and last lines a reader sees.

:func:`findings` reads an audit document (a path, a dict or an
:class:`~fairlandmark.audit.AuditResult`) and returns a short list of
:class:`Finding` objects, each with a plain-text sentence. The terminal, the
Markdown summary and the HTML report all show the same sentences, so they never
disagree. The text is plain (no markup): renderers escape it as their format
requires.

What is reported, in this order:

* the (attribute, keypoint) pairs whose SDR gap is significant after
  multiple-testing correction, ranked by evidence (adjusted p, then DP above
  the chance DP), each with DP, the pair of groups, the chance DP and the
  adjusted p; or one line saying that none is;
* the largest gap (with its chance DP when known);
* whether the errors leak an attribute, when the privacy test ran.

Examples
--------
>>> doc = {"schema_version": "1.0", "attributes": ["sex"], "keypoints": [1, 2], "per_keypoint": [
...     {"attribute": "sex", "keypoint": 1, "dp": 0.2, "pair": ["F", "M"], "p_value": 0.001,
...      "p_adjusted": 0.002, "significant": True, "baseline_mean": 0.05},
...     {"attribute": "sex", "keypoint": 2, "dp": 0.03, "pair": ["M", "F"], "p_value": 0.6,
...      "p_adjusted": 0.6, "significant": False, "baseline_mean": 0.05}],
...     "significance": {"alpha": 0.05, "correction": "bh"}}
>>> for f in findings(doc):
...     print(f.text)
1 of 2 (attribute, keypoint) gaps is significant (adjusted p < 0.05, bh):
  sex, keypoint 1: DP 0.200 (F vs M), chance 0.050, adjusted p 0.0020
Largest gap: sex, keypoint 1: DP 0.200 (F vs M), chance 0.050, adjusted p 0.0020.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from fairlandmark.document import has_significance, keypoint_frame, load_audit, privacy_records, rank_by_evidence
from fairlandmark.formatting import fmt, fmt_p, num

__all__ = ["Finding", "findings", "findings_text", "MAX_LISTED"]

MAX_LISTED = 8  # significant pairs listed by name; the rest are counted

MSG_NONE_SIGNIFICANT = ("No (attribute, keypoint) gap is significant after correction "
                        "({n} tested, adjusted p < {alpha:g}, {correction}).")
MSG_SOME_SIGNIFICANT = "{k} of {n} (attribute, keypoint) gaps {verb} significant (adjusted p < {alpha:g}, {correction}):"
MSG_MORE = "  ... and {n} more (see the tables or the report)"
MSG_NO_SIGNIFICANCE = ("Significance was not computed: the DPs are descriptive only "
                       "(no p-values, chance DP or intervals).")
MSG_LARGEST = "Largest gap: {where}: DP {dp} ({pair}){chance}."
MSG_NO_GAP = "No gap could be computed (every attribute needs two groups large enough in some run)."


@dataclass(frozen=True)
class Finding:
    """One sentence of the findings.

    Attributes
    ----------
    kind : str
        ``"significant_header"``, ``"significant"``, ``"more"``,
        ``"none_significant"``, ``"no_significance"``, ``"largest_gap"``,
        ``"no_gap"`` or ``"privacy"``.
    text : str
        The sentence, plain text (no markup).
    attribute, keypoint : optional
        The (attribute, keypoint) the sentence is about, if one.
    alarm : bool
        True for a finding a reader should act on (a significant gap, a leak).
    values : dict
        The numbers behind the sentence (``dp``, ``pair``, ``chance``, ``p_adjusted`` ...).
    """

    kind: str
    text: str
    attribute: str | None = None
    keypoint: Any = None
    alarm: bool = False
    values: dict = field(default_factory=dict)


def _where(row: dict) -> str:
    return f"{row['attribute']}, keypoint {row['keypoint']}"


def _pair(row: dict) -> str:
    return row["pair"] if row["pair"] and num(row["dp"]) > 0 else "no gap"


def findings(source: object) -> list[Finding]:
    """The findings of an audit, most important first.

    Parameters
    ----------
    source : str, os.PathLike, dict or AuditResult
        The audit (see :func:`fairlandmark.document.load_audit`).

    Returns
    -------
    list of Finding
        Plain-text sentences; never empty.

    Examples
    --------
    >>> doc = {"schema_version": "1.0", "attributes": ["sex"], "keypoints": [1],
    ...        "per_keypoint": [{"attribute": "sex", "keypoint": 1, "dp": 0.1, "pair": ["F", "M"]}]}
    >>> [f.kind for f in findings(doc)]
    ['no_significance', 'largest_gap']
    """
    doc = load_audit(source)
    frame = keypoint_frame(doc)
    out: list[Finding] = []
    sig = has_significance(doc)
    settings = doc.get("significance") or {}
    alpha, correction = num(settings.get("alpha", 0.05)), str(settings.get("correction", "?"))
    tested = frame.dropna(subset=["p_adjusted"]) if sig else frame.iloc[:0]
    if sig:
        hits = rank_by_evidence(tested[tested["significant"]])
        if len(hits):
            out.append(Finding("significant_header", MSG_SOME_SIGNIFICANT.format(
                k=len(hits), n=len(tested), verb="is" if len(hits) == 1 else "are", alpha=alpha,
                correction=correction), alarm=True))
            for row in hits.head(MAX_LISTED).to_dict("records"):
                chance = "" if math.isnan(row["baseline_mean"]) else f", chance {fmt(row['baseline_mean'])}"
                out.append(Finding(
                    "significant", f"  {_where(row)}: DP {fmt(row['dp'])} ({_pair(row)}){chance}, "
                                   f"adjusted p {fmt_p(row['p_adjusted'])}",
                    attribute=row["attribute"], keypoint=row["keypoint"], alarm=True,
                    values={k: row[k] for k in ("dp", "pair", "baseline_mean", "p_adjusted")}))
            if len(hits) > MAX_LISTED:
                out.append(Finding("more", MSG_MORE.format(n=len(hits) - MAX_LISTED)))
        else:
            out.append(Finding("none_significant", MSG_NONE_SIGNIFICANT.format(
                n=len(tested), alpha=alpha, correction=correction)))
    else:
        out.append(Finding("no_significance", MSG_NO_SIGNIFICANCE))
    out.append(_largest(frame))
    for rec in privacy_records(doc):
        line = rec.get("risk_line") or (
            f"{rec.get('attribute') or 'attribute'}: balanced accuracy {fmt(rec.get('balanced_accuracy'))} "
            f"(chance {fmt(rec.get('chance'))}, p {fmt_p(rec.get('p_value'))})")
        out.append(Finding("privacy", f"Privacy ({rec.get('attribute')}): {line}", attribute=rec.get("attribute"),
                           alarm=bool(rec.get("leak")), values={"balanced_accuracy": rec.get("balanced_accuracy"),
                                                                "p_value": rec.get("p_value")}))
    return out


def _largest(frame: pd.DataFrame) -> Finding:
    rows = frame.dropna(subset=["dp"])
    if rows.empty:
        return Finding("no_gap", MSG_NO_GAP)
    row = rows.sort_values("dp", ascending=False, kind="stable").iloc[0].to_dict()
    chance = "" if math.isnan(row["baseline_mean"]) else f", chance {fmt(row['baseline_mean'])}"
    if row["significant"]:
        chance += f", adjusted p {fmt_p(row['p_adjusted'])}"
    elif not math.isnan(row["p_adjusted"]):
        chance += f", not significant (adjusted p {fmt_p(row['p_adjusted'])})"
    return Finding("largest_gap", MSG_LARGEST.format(where=_where(row), dp=fmt(row["dp"]), pair=_pair(row),
                                                      chance=chance),
                   attribute=row["attribute"], keypoint=row["keypoint"],
                   values={k: row[k] for k in ("dp", "pair", "baseline_mean", "p_adjusted")})


def findings_text(source: object) -> str:
    """The findings as plain text, one sentence a line.

    Examples
    --------
    >>> doc = {"schema_version": "1.0", "attributes": ["sex"], "keypoints": [1],
    ...        "per_keypoint": [{"attribute": "sex", "keypoint": 1, "dp": 0.0, "pair": ["F", "M"]}]}
    >>> print(findings_text(doc).splitlines()[-1])
    Largest gap: sex, keypoint 1: DP 0.000 (no gap).
    """
    return "\n".join(f.text for f in findings(source))
