"""HTML of a comparison of two audits (:class:`fairlandmark.compare.Comparison`).

The fragment is laid out by the template ``compare.html.j2`` (autoescaped);
the HTML report includes the same template in its comparison section.

Examples
--------
>>> import numpy as np, fairlandmark
>>> from fairlandmark.compare import compare
>>> rng = np.random.default_rng(0)
>>> true = rng.uniform(0, 100, (40, 3, 2)); pred = true + rng.normal(0, 10, true.shape)
>>> a = fairlandmark.audit_arrays(pred, true, {"sex": ["F", "M"] * 20}, spacing_mm=0.1)
>>> html = compare_html(compare(a, a, labels=("<old>", "new")))
>>> "&lt;old&gt;" in html and "<old>" not in html
True
"""

from __future__ import annotations

from typing import Any

from fairlandmark.compare import Comparison
from fairlandmark.formatting import fmt, fmt_pct, fmt_signed
from fairlandmark.render.markdown import comparison_rows
from fairlandmark.render.templating import HtmlTable, render_template

__all__ = ["comparison_context", "compare_html"]


def comparison_context(cmp: Comparison, *, top: int = 15) -> dict[str, Any]:
    """What the comparison HTML shows: the variable ``comparison`` of ``compare.html.j2``.

    Parameters
    ----------
    cmp : Comparison
        The output of :func:`fairlandmark.compare.compare`.
    top : int, default 15
        Rows in the "largest DP changes" table.

    Returns
    -------
    dict
        ``labels``, ``unit``, ``summary`` and ``accuracy`` tables, ``changes``
        (table or None), ``n_changes`` and ``notes``.
    """
    b, a = cmp.labels
    summary = HtmlTable(
        ["attribute", f"mean DP {b}", f"mean DP {a}", "change", "improved (beyond noise)", "worsened (beyond noise)"],
        [[r["attribute"], fmt(r["mean_dp_before"]), fmt(r["mean_dp_after"]), fmt_signed(r["mean_dp_change"]),
          f"{r['n_improved']} ({r['n_improved_beyond']})", f"{r['n_worsened']} ({r['n_worsened_beyond']})"]
         for r in cmp.summary.to_dict("records")])
    accuracy = HtmlTable(
        ["keypoints", f"MRE {b}", f"MRE {a}", "MRE change", f"SDR {b}", f"SDR {a}"],
        [[r["family"], fmt(r["mre_before"]), fmt(r["mre_after"]), fmt_signed(r["mre_change"]),
          fmt_pct(r["sdr_before"]), fmt_pct(r["sdr_after"])] for r in cmp.accuracy.to_dict("records")])
    moved = cmp.table.dropna(subset=["dp_change"])
    moved = moved.reindex(moved["dp_change"].abs().sort_values(ascending=False, kind="stable").index).head(top)
    header, rows = comparison_rows(cmp, moved)
    changes = HtmlTable(header, rows, left=2) if len(moved) else None
    return {"labels": list(cmp.labels), "unit": cmp.unit, "summary": summary, "accuracy": accuracy,
            "changes": changes, "n_changes": len(moved), "notes": list(cmp.notes)}


def compare_html(cmp: Comparison, *, top: int = 15) -> str:
    """HTML fragment of a :class:`~fairlandmark.compare.Comparison` (tables and notes, no page around them).

    Parameters
    ----------
    cmp : Comparison
        The output of :func:`fairlandmark.compare.compare`.
    top : int, default 15
        Rows in the "largest DP changes" table.

    Returns
    -------
    str
        HTML; labels, attribute and keypoint names are escaped.
    """
    return render_template("compare.html.j2", comparison=comparison_context(cmp, top=top))
