"""Rich terminal rendering of an audit."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from fairlandmark.compare import CHANGE_TOLERANCE, Comparison
from fairlandmark.gate import GateResult
from fairlandmark.stats.privacy import PrivacyResult
from fairlandmark.formatting import fmt, fmt_p, fmt_pct, fmt_pm, fmt_signed, num
from fairlandmark.render.markdown import comparison_rows

if TYPE_CHECKING:
    from fairlandmark.audit import AuditResult

__all__ = ["render_audit", "render_comparison", "render_privacy", "render_gate", "make_console", "PRIVACY_TOP_ROWS",
           "plain", "print_plain", "print_note", "print_wrote"]

PRIVACY_TOP_ROWS = 10  # keypoints shown in the privacy importance ranking


def make_console(stderr: bool = False) -> Console:
    """Console that keeps tables whole in logs: 200 columns when not a terminal."""
    probe = Console(stderr=stderr)
    return Console(stderr=stderr, highlight=False, width=None if probe.is_terminal else 200)


# -- user text: group names, ids, keypoints, paths and messages quoting them are never rich markup ----------


def plain(value: object) -> str:
    """``value`` as text that rich prints literally (``[red]`` stays ``[red]``), for table cells and titles.

    Examples
    --------
    >>> print(plain("[red]M[/red]"))
    \\[red]M\\[/red]
    """
    return escape(str(value))


def print_plain(console: Console, text: object, *, style: str | None = None) -> None:
    """Print user-derived ``text`` as it is (no markup, no highlighting), optionally in one ``style``."""
    console.print(Text(str(text), style=style or ""), soft_wrap=True)


def print_note(console: Console, label: str, text: object, *, style: str = "yellow") -> None:
    """Print ``label: text`` with the label styled and ``text`` (which may quote user data) literal."""
    console.print(Text.assemble((f"{label}:", style), " ", str(text)), soft_wrap=True)


def print_wrote(console: Console, path: object, detail: str = "") -> None:
    """Print ``wrote PATH`` (the path literal, even with brackets in it)."""
    console.print(Text(f"wrote {path}{detail}"), soft_wrap=True)


def render_audit(result: AuditResult, console: Console) -> None:
    """Print one keypoint table per attribute, then the summary."""
    unit = result.unit
    primary = f"sdr_{result.thresholds[0]:g}"
    pk, pg = result.per_keypoint, result.per_group
    if unit == "px":
        console.print("[yellow]No pixel-to-mm scale given: errors and thresholds are in pixels.[/]")
    has_sig = "p_value" in pk.columns
    for a in result.attributes:
        groups = list(result.groups.loc[result.groups["attribute"] == a, "group"])
        table = Table(title=f"[b]{plain(a)}[/]: SDR@{result.thresholds[0]:g}{unit} and MRE ({unit}) per group; "
                            f"DP = largest SDR gap (mean ± std over runs)", header_style="bold", pad_edge=False)
        table.add_column("kp", justify="right", no_wrap=True)
        if result.study.families:
            table.add_column("family", no_wrap=True)
        for g in groups:
            table.add_column(f"{plain(g)}\nSDR   MRE", justify="right", no_wrap=True)
        table.add_column("DP", justify="right", no_wrap=True)
        table.add_column("pair (high vs low)", no_wrap=True)
        if has_sig:
            assert result.significance is not None  # p-value columns come from it
            table.add_column("chance DP", justify="right", no_wrap=True)
            table.add_column(f"{int(result.significance.options.ci * 100)}% CI", justify="right", no_wrap=True)
            table.add_column("p", justify="right", no_wrap=True)
            table.add_column("p adj", justify="right", no_wrap=True)
            table.add_column("MRE-gap\np adj", justify="right", no_wrap=True)
        sub = pk[pk["attribute"] == a]
        by_kp = {kp: frame.set_index("group") for kp, frame in pg[pg["attribute"] == a].groupby("keypoint", sort=False)}
        for row in sub.to_dict("records"):
            g_rows = by_kp[row["keypoint"]]
            cells = [plain(row["keypoint"])]
            if result.study.families:
                cells.append(plain(row["family"] or ""))
            cells += [f"{fmt(g_rows.loc[g, primary], 2)}  {fmt(g_rows.loc[g, 'mre'], 2)}" for g in groups]
            dp_text = fmt_pm(row["dp"], row["dp_std"])
            if has_sig and row.get("significant"):
                dp_text = f"[bold red]{dp_text} *[/]"
            cells += [dp_text, plain(row["pair"]) if isinstance(row["pair"], str) else "-"]
            if has_sig:
                gap_p = fmt_p(row.get("mre_gap_p_adjusted"))
                if row.get("mre_gap_significant"):
                    gap_p = f"[bold red]{gap_p} *[/]"
                cells += [fmt_pm(row.get("baseline_mean"), row.get("baseline_std")),
                          f"{fmt(row.get('dp_ci_low'))}–{fmt(row.get('dp_ci_high'))}",
                          fmt_p(row.get("p_value")), fmt_p(row.get("p_adjusted")), gap_p]
            table.add_row(*cells)
        console.print(table)

    summary = Table(title="Summary: DP over keypoints (mean ± std over runs)", header_style="bold")
    for col in ("attribute", "family", "mean DP", "max DP", "at keypoint", "groups (images)"):
        summary.add_column(col)
    counts = result.groups
    for row in result.summary.to_dict("records"):
        c = counts[counts["attribute"] == row["attribute"]]
        groups_text = ", ".join(f"{plain(g)} ({n}{'' if ok else ', not in DP'})"
                                for g, n, ok in zip(c["group"], c["n_images"], c["in_dp"]))
        summary.add_row(plain(row["attribute"]), plain(row["family"]), fmt_pm(row["mean_dp"], row["mean_dp_std"]),
                        fmt(row["max_dp"]), plain(row["max_dp_keypoint"]), groups_text if row["family"] == "all" else "")
    console.print(summary)

    overall = Table(title=f"Accuracy ({result.n_runs} run(s), mean ± std over runs)", header_style="bold")
    overall.add_column("keypoints")
    overall.add_column(f"MRE ({unit})", justify="right")
    for t in result.thresholds:
        overall.add_column(f"SDR@{t:g}{unit}", justify="right")
    overall.add_column("predictions", justify="right")
    overall.add_column("missing", justify="right")
    for row in result.overall.to_dict("records"):
        overall.add_row(plain(row["family"]), fmt_pm(row["mre"], row["mre_std"]),
                        *[fmt_pm(row[f"sdr_{t:g}"], row[f"sdr_{t:g}_std"]) for t in result.thresholds],
                        str(row["n_predictions"]), str(row["n_missing"]))
    console.print(overall)
    if has_sig:
        s = result.significance
        assert s is not None  # p-value columns come from it
        console.print(f"[dim]* adjusted p < {s.options.alpha:g} ({s.options.correction}); "
                      f"{s.options.permutations} permutations, {s.options.bootstrap} bootstrap resamples, "
                      f"{int(s.options.ci * 100)}% percentile intervals, seed {s.options.seed}.[/]")
    for note in result.warnings:
        print_note(console, "warning", note)


def render_comparison(cmp: Comparison, console: Console, *, top: int | None = None) -> None:
    """Rich tables of a :class:`Comparison`."""
    b, a = (plain(label) for label in cmp.labels)
    t = Table(title=f"DP per attribute: {b} → {a}", header_style="bold")
    for col in ("attribute", f"mean DP {b}", f"mean DP {a}", "change", "improved (beyond noise)",
                "worsened (beyond noise)"):
        t.add_column(col, justify="left" if col == "attribute" else "right")
    for r in cmp.summary.to_dict("records"):
        t.add_row(plain(r["attribute"]), fmt(r["mean_dp_before"]), fmt(r["mean_dp_after"]),
                  _colour(r["mean_dp_change"]), f"{r['n_improved']} ({r['n_improved_beyond']})",
                  f"{r['n_worsened']} ({r['n_worsened_beyond']})")
    console.print(t)
    t = Table(title=f"Accuracy cost ({cmp.unit}; positive = less accurate)", header_style="bold")
    for col in ("keypoints", f"MRE {b}", f"MRE {a}", "MRE change", f"SDR {b}", f"SDR {a}"):
        t.add_column(col, justify="left" if col == "keypoints" else "right")
    for r in cmp.accuracy.to_dict("records"):
        t.add_row(plain(r["family"]), fmt(r["mre_before"]), fmt(r["mre_after"]), _colour(r["mre_change"]),
                  fmt_pct(r["sdr_before"]), fmt_pct(r["sdr_after"]))
    console.print(t)
    frame = cmp.table
    if top is not None:
        frame = frame.dropna(subset=["dp_change"])
        frame = frame.reindex(frame["dp_change"].abs().sort_values(ascending=False, kind="stable").index).head(top)
    header, rows = comparison_rows(cmp, frame)
    t = Table(title="Per keypoint (change = after - before; negative DP change = fairer)", header_style="bold")
    for i, col in enumerate(header):
        t.add_column(plain(col), justify="left" if i < 2 else "right")
    for row, rec in zip(rows, frame.to_dict("records")):
        row = [plain(cell) for cell in row]
        row[4] = _colour(rec["dp_change"], strong=rec["exceeds_uncertainty"] is True)
        t.add_row(*row)
    console.print(t)
    for note in cmp.notes:
        print_note(console, "note", note)


def _colour(value: object, strong: bool = False) -> str:
    text = fmt_signed(value)
    v = num(value)
    if math.isnan(v) or abs(v) <= CHANGE_TOLERANCE:
        return text
    colour = "green" if v < 0 else "red"
    return f"[bold {colour}]{text}[/]" if strong else f"[{colour}]{text}[/]"


def render_privacy(result: PrivacyResult, console: Console, *, top: int = PRIVACY_TOP_ROWS) -> None:
    """Print the scores table, the importance ranking and the risk lines."""
    s = result.settings
    title = (f"[b]Attribute inference[/]: per-keypoint errors ({result.unit}) -> {plain(result.target)}; "
             f"{s['n_splits']}-fold CV over images, {s['n_permutations']} permutations "
             f"({s.get('permutation_test', 'refit')}), seed {s['seed']}")
    table = Table(title=title, header_style="bold")
    for col in ("analysis", "images", "classes (images)", "majority", "chance", "accuracy", "balanced acc.",
                "ROC AUC", "null", "p"):
        table.add_column(col, justify="left" if col in ("analysis", "classes (images)") else "right")
    for row in result.scores.to_dict("records"):
        leak = row["leak"]
        bacc = fmt_pm(row["balanced_accuracy"], row["balanced_accuracy_std"])
        table.add_row(plain(row["analysis"]), str(row["n_images"]),
                      plain(", ".join(f"{c} ({n})" for c, n in row["images_by_class"].items())),
                      fmt(row["majority_rate"]), fmt(row["chance"]),
                      fmt_pm(row["accuracy"], row["accuracy_std"]),
                      f"[bold red]{bacc}[/]" if leak else bacc,
                      fmt_pm(row["roc_auc"], row["roc_auc_std"]), fmt_pm(row["null_mean"], row["null_std"]),
                      fmt_p(row["p_value"]))
    console.print(table)

    imp = result.importance
    analyses = list(result.scores["analysis"])
    n = min(top, len(result.keypoints))
    ranking = Table(title=f"Most informative keypoints (permutation importance: drop in balanced accuracy, "
                          f"mean ± std over folds; top {n} of {len(result.keypoints)})", header_style="bold")
    ranking.add_column("rank", justify="right")
    for a in analyses:
        ranking.add_column("keypoint" if a == "all" else f"{plain(a)}: keypoint", justify="right")
        ranking.add_column("importance", justify="right")
    by = {a: imp[imp["analysis"] == a].to_dict("records") for a in analyses}
    for r in range(n):
        cells = [str(r + 1)]
        for a in analyses:
            rec = by[a][r]
            cells += [plain(rec["keypoint"]), fmt_pm(rec["importance"], rec["importance_std"])]
        ranking.add_row(*cells)
    console.print(ranking)
    for line, leak in zip(result.risk_lines, result.scores["leak"]):
        console.print(line, style="bold red" if leak else "green", markup=False)
    for note in result.warnings:
        print_note(console, "warning", note)


def render_gate(result: GateResult, console: Console, *, max_failures: int = 20) -> None:
    table = Table(title=f"fairlandmark gate ({plain(result.rules.source)})", header_style="bold")
    for col in ("rule", "limit", "checks", "failed", "worst"):
        table.add_column(col, justify="left" if col == "rule" else "right")
    for r in result.by_rule():
        style = "green" if r["failed"] == 0 else "bold red"
        table.add_row(Text(str(r["rule"]), style=style), plain(r["limit"]), str(r["checks"]), str(r["failed"]), fmt(r["worst"]))
    console.print(table)
    for c in result.failures[:max_failures]:
        print_note(console, "FAIL", f"{c.rule}: {c.message}", style="red")
    if len(result.failures) > max_failures:
        console.print(f"[red]... and {len(result.failures) - max_failures} more failures[/]")
    for note in result.notes:
        print_note(console, "note", note)
    n, f = len(result.checks), len(result.failures)
    console.print("[bold green]PASSED[/]" if result.passed else "[bold red]FAILED[/]",
                  f"{n - f} of {n} checks passed")
