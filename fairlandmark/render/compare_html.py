"""HTML fragment of a before/after comparison, embedded in the audit report."""

from __future__ import annotations

from fairlandmark.compare import Comparison
from fairlandmark.formatting import fmt, fmt_pct, fmt_signed
from fairlandmark.render.html import escape, html_table
from fairlandmark.render.markdown import comparison_rows

__all__ = ["compare_html"]


def compare_html(cmp: Comparison, *, top: int = 15) -> str:
    """HTML fragment of a :class:`Comparison` (used by the report)."""
    b, a = cmp.labels
    parts = []
    rows = [[r["attribute"], fmt(r["mean_dp_before"]), fmt(r["mean_dp_after"]), fmt_signed(r["mean_dp_change"]),
             f"{r['n_improved']} ({r['n_improved_beyond']})", f"{r['n_worsened']} ({r['n_worsened_beyond']})"]
            for r in cmp.summary.to_dict("records")]
    parts.append(html_table(["attribute", f"mean DP {b}", f"mean DP {a}", "change",
                              "improved (beyond noise)", "worsened (beyond noise)"], rows))
    rows = [[r["family"], fmt(r["mre_before"]), fmt(r["mre_after"]), fmt_signed(r["mre_change"]),
             fmt_pct(r["sdr_before"]), fmt_pct(r["sdr_after"])] for r in cmp.accuracy.to_dict("records")]
    parts.append(f"<h3>Accuracy cost ({escape(cmp.unit)})</h3>")
    parts.append(html_table(["keypoints", f"MRE {b}", f"MRE {a}", "MRE change", f"SDR {b}", f"SDR {a}"], rows))
    moved = cmp.table.dropna(subset=["dp_change"])
    moved = moved.reindex(moved["dp_change"].abs().sort_values(ascending=False, kind="stable").index).head(top)
    if len(moved):
        parts.append(f"<h3>Largest DP changes (top {len(moved)})</h3>")
        header, rows = comparison_rows(cmp, moved)
        parts.append(html_table(header, rows, left=2))
    parts.append('<p class="muted">Beyond noise: |change| &gt; √(u<sub>before</sub>² + u<sub>after</sub>²), u = '
                 "half-width of the bootstrap interval, or the std over runs.</p>")
    for note in cmp.notes:
        parts.append(f'<div class="note">{escape(note)}</div>')
    return "".join(parts)
