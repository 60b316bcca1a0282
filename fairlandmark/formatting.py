"""Plain-text formatting of numbers and Markdown tables, shared by every output.

Pure string functions with no rendering library: the gate's check messages,
the comparison's Markdown, the terminal tables and the HTML report all format
numbers the same way through these.

Examples
--------
>>> fmt(0.12345), fmt(None), fmt(3), fmt_pm(0.1, 0.02), fmt_p(0.00001), fmt_pct(0.5)
('0.123', '-', '3', '0.100 ± 0.020', '1.0e-05', '50.0%')
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["num", "fmt", "fmt_pm", "fmt_p", "fmt_pct", "fmt_signed", "md_escape", "md_table", "threshold_key"]


def num(value: object) -> float:
    """Float or NaN (None, booleans and non-numbers become NaN)."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return math.nan
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def fmt(value: object, digits: int = 3) -> str:
    """A number for a table cell: ``digits`` decimals, integers as they are, ``-`` for missing."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return str(value)
    v = num(value)
    return "-" if math.isnan(v) else f"{v:.{digits}f}"


def fmt_pm(mean: object, std: object, digits: int = 3) -> str:
    """``mean ± std``, or the mean alone when the std is missing (one run)."""
    return fmt(mean, digits) if math.isnan(num(std)) else f"{fmt(mean, digits)} ± {fmt(std, digits)}"


def fmt_p(p: object) -> str:
    """A p-value: four decimals, scientific below 1e-4, ``-`` for missing."""
    v = num(p)
    if math.isnan(v):
        return "-"
    return f"{v:.4f}" if v >= 1e-4 else f"{v:.1e}"


def fmt_pct(value: object, digits: int = 1) -> str:
    """A share as a percentage (``0.5`` -> ``50.0%``)."""
    v = num(value)
    return "-" if math.isnan(v) else f"{100 * v:.{digits}f}%"


def fmt_signed(value: object, digits: int = 3) -> str:
    """A change with its sign (``+0.010``, ``-0.020``)."""
    v = num(value)
    return "-" if math.isnan(v) else f"{v:+.{digits}f}"


def threshold_key(value: float) -> str:
    """How outputs name a threshold: ``2.0`` -> ``"2"`` (``sdr_2``, ``"2"`` in the JSON)."""
    return f"{float(value):g}"


def md_escape(text: object) -> str:
    """A Markdown table cell: pipes escaped, newlines flattened."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(header: Sequence[object], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table.

    Examples
    --------
    >>> print(md_table(["a", "b"], [[1, "x|y"]]))
    | a | b |
    |---|---|
    | 1 | x\\|y |
    """
    lines = ["| " + " | ".join(md_escape(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
