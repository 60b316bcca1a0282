"""Clinical measurements in words and tables: terminal, HTML and Markdown helpers.

Works on the audit document's ``measurements`` records (see
:mod:`fairlandmark.stats.measurements`): one record per (attribute,
measurement) with per-group mean absolute error (MAE), success rate within
the tolerance and class agreement rate, the headline gap ``dp`` (success DP,
or agreement DP without a tolerance) and its test.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fairlandmark.formatting import num

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["measurement_records", "measurement_findings", "measurement_table", "confusion_tables",
           "render_measurements"]


def _fmt(value: object, digits: int = 3) -> str:
    v = num(value)
    return "-" if math.isnan(v) else f"{v:.{digits}f}"


def _fmt_p(value: object) -> str:
    v = num(value)
    if math.isnan(v):
        return "-"
    return f"{v:.4f}" if v >= 1e-4 else f"{v:.1e}"


def measurement_records(source: object) -> list[dict[str, Any]]:
    """The ``measurements`` records of an audit document, AuditResult or list ([] when absent)."""
    if isinstance(source, list):
        return source
    if isinstance(source, Mapping):
        return list(source.get("measurements") or [])
    m = getattr(source, "measurements", None)  # an AuditResult
    return list(m.records) if m is not None else []


def _groups(rec: Mapping[str, Any]) -> list[str]:
    return list((rec.get("n_by_group") or {}).keys())


def _pair_text(rec: Mapping[str, Any], field: str) -> str:
    pair = rec.get("pair")
    by = rec.get(field) or {}
    if not pair or len(pair) != 2:
        return ""
    return f"{_fmt(by.get(pair[0]), 2)} ({pair[0]}) vs {_fmt(by.get(pair[1]), 2)} ({pair[1]})"


def measurement_findings(source: object, *, top: int = 3) -> list[str]:
    """Findings in words: the significant measurement gaps, else the largest one.

    Examples
    --------
    >>> rec = {"attribute": "sex", "measurement": "ANB", "dp_of": "success", "dp": 0.2, "pair": ["F", "M"],
    ...        "success_by_group": {"F": 0.9, "M": 0.7}, "n_by_group": {"F": 50, "M": 50},
    ...        "p_adjusted": 0.01, "significant": True}
    >>> measurement_findings([rec])[0]
    'ANB (sex): success rate within tolerance 0.90 (F) vs 0.70 (M), gap 0.200, adjusted p 0.0100.'
    """
    recs = [r for r in measurement_records(source) if r.get("dp_of")]
    if not recs:
        return []
    words = {"success": "success rate within tolerance", "agreement": "class agreement rate"}
    sig = sorted([r for r in recs if r.get("significant")], key=lambda r: num(r.get("p_adjusted")))
    lines = []
    for r in sig[:top]:
        lines.append(f"{r['measurement']} ({r['attribute']}): {words[r['dp_of']]} "
                     f"{_pair_text(r, r['dp_of'] + '_by_group')}, gap {_fmt(r.get('dp'))}, "
                     f"adjusted p {_fmt_p(r.get('p_adjusted'))}.")
    if len(sig) > top:
        lines.append(f"... and {len(sig) - top} more significant measurement gap(s).")
    if not sig:
        tested = any("p_adjusted" in r for r in recs)
        best = max(recs, key=lambda r: num(r.get("dp")) if not math.isnan(num(r.get("dp"))) else -1.0)
        head = "No measurement gap is significant after correction; the largest" if tested else "The largest"
        p = f", adjusted p {_fmt_p(best.get('p_adjusted'))}" if tested else ""
        lines.append(f"{head}: {best['measurement']} ({best['attribute']}), {words[best['dp_of']]} "
                     f"{_pair_text(best, best['dp_of'] + '_by_group')}, gap {_fmt(best.get('dp'))}{p}.")
    return lines


def measurement_table(source: object, attribute: str, *,
                      compact: bool = False) -> tuple[list[str], list[list[str]], list[bool]]:
    """Header and rows of the per-measurement table for one attribute.

    ``compact`` (the terminal) keeps group headers on two lines and leaves out
    the raw p-value and the kind of gap, so the table fits the width.

    Returns
    -------
    header : list of str
    rows : list of list of str
    significant : list of bool
    """
    recs = [r for r in measurement_records(source) if r.get("attribute") == attribute]
    groups: list = []
    for r in recs:
        groups += [g for g in _groups(r) if g not in groups]
    tested = any("p_value" in r for r in recs)
    if compact:
        header = ["measurement", "unit", "tol"] + [f"{g}\nMAE  succ  agree" for g in groups] + ["gap", "pair"]
        if tested:
            header += ["p adj", "MAE-gap\np adj"]
    else:
        header = ["measurement", "unit", "tolerance"] + [f"{g}: MAE / success / agree" for g in groups] \
            + ["gap", "of", "pair"]
        if tested:
            header += ["p", "p adj", "MAE-gap p adj"]
    rows, flags = [], []
    for r in recs:
        cells = [str(r["measurement"]), str(r.get("unit") or ""), _fmt(r.get("tolerance"), 2)]
        sep = "  " if compact else " / "
        for g in groups:
            mae_digits = 3 if r.get("unit") == "ratio" else 2
            cells.append(sep.join(_fmt((r.get(f"{kind}_by_group") or {}).get(g), mae_digits if kind == "mae" else 2)
                                  for kind in ("mae", "success", "agreement")))
        dp = _fmt(r.get("dp"))
        if r.get("significant"):
            dp += " *"
        pair = r.get("pair")
        cells += [dp] + ([] if compact else [r.get("dp_of") or "-"]) + [f"{pair[0]} vs {pair[1]}" if pair else "-"]
        if tested:
            cells += ([] if compact else [_fmt_p(r.get("p_value"))]) + [
                _fmt_p(r.get("p_adjusted")), _fmt_p((r.get("mae_gap_test") or {}).get("p_adjusted"))]
        rows.append(cells)
        flags.append(bool(r.get("significant")))
    return header, rows, flags


def confusion_tables(source: object, attribute: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """Per measurement with classes and per group: (title, header, rows) of the confusion matrix.

    Rows are the class from the true landmarks, columns the class from the
    predicted ones.
    """
    out = []
    for r in measurement_records(source):
        if r.get("attribute") != attribute or not r.get("confusion_by_group"):
            continue
        classes = list(r.get("classes") or [])
        for g, matrix in r["confusion_by_group"].items():
            header = ["true \\ predicted"] + classes
            rows = [[classes[i]] + [str(int(v)) for v in row] for i, row in enumerate(matrix)]
            agree = (r.get("agreement_by_group") or {}).get(g)
            out.append((f"{r['measurement']} · {g} (agreement {_fmt(agree, 2)})", header, rows))
    return out


def render_measurements(source: object, console: Console) -> None:
    """Print the findings and one measurement table per attribute (rich; text never read as markup)."""
    from rich.table import Table
    from rich.text import Text

    recs = measurement_records(source)
    if not recs:
        return
    for line in measurement_findings(recs):
        console.print(Text(line))
    for a in list(dict.fromkeys(r["attribute"] for r in recs)):
        header, rows, flags = measurement_table(recs, a, compact=True)
        table = Table(title=Text(f"Measurements · {a}: MAE, success (within tolerance) and class agreement per "
                                 "group; gap in success rate (agreement without tolerance), * significant"),
                      header_style="bold", pad_edge=False)
        for i, h in enumerate(header):
            table.add_column(Text(h), justify="left" if i < 2 else "right", no_wrap=True)
        for cells, flag in zip(rows, flags):
            table.add_row(*[Text(c, style="bold red" if flag and "*" in c else "") for c in cells])
        console.print(table)
