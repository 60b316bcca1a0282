"""Rich terminal rendering of an audit."""

from __future__ import annotations

import math
import os
import re
import textwrap
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from fairlandmark.compare import CHANGE_TOLERANCE, Comparison
from fairlandmark.gate import GateResult
from fairlandmark.stats.privacy import PrivacyResult
from fairlandmark.formatting import fmt, fmt_p, fmt_pct, fmt_pm, fmt_signed, num
from fairlandmark.exceptions import spell_options
from fairlandmark.files import when_written
from fairlandmark.render.markdown import comparison_rows, null_phrase
from fairlandmark.render.tables import TextColumn, fit_tables
from fairlandmark.findings import Finding, findings

if TYPE_CHECKING:
    from fairlandmark.audit import AuditResult

__all__ = ["render_audit", "render_comparison", "render_privacy", "render_gate", "make_console", "PRIVACY_TOP_ROWS",
           "render_findings", "render_warnings", "collapse_warnings", "LOG_WIDTH",
           "plain", "print_plain", "print_note", "print_wrote"]

PRIVACY_TOP_ROWS = 10  # keypoints shown in the privacy importance ranking
LOG_WIDTH = 200  # columns when writing to a file or pipe and COLUMNS is not set


def make_console(stderr: bool = False) -> Console:
    """Console for the CLI: the terminal's width, or ``COLUMNS`` when set; 200 columns in logs otherwise.

    Tables adapt to this width (:func:`fairlandmark.render.tables.fit_tables`), so
    a narrow terminal gets more, narrower tables rather than shortened numbers.
    """
    probe = Console(stderr=stderr)
    columns = os.environ.get("COLUMNS", "")
    width = None if probe.is_terminal or columns.isdigit() else LOG_WIDTH
    return Console(stderr=stderr, highlight=False, width=width)


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
    """Print ``wrote PATH`` (the path literal, even with brackets in it) once the file is in place.

    Inside an :class:`fairlandmark.files.OutputSet` the line waits for its commit, so a run that fails later
    never claims to have written anything.
    """
    line = Text(f"wrote {path}{detail}")
    when_written(lambda: console.print(line, soft_wrap=True))


# A label and its number stay on one line when a finding wraps ("adjusted p 0.0111", "DP 0.469").
_KEEP_TOGETHER = re.compile(r"\b((?:keypoint|DP|chance|adjusted p|p|gap|MRE|SDR|balanced accuracy)(?: [=<>]=?)?) "
                            r"(?=[-+0-9.])")
_NBSP = "\u00a0"


def wrap_finding(text: str, width: int) -> list[str]:
    """Lines of one finding at ``width`` columns: words never split, a label kept with its number,
    continuation lines indented four columns deeper than the first so each item reads as one.

    Examples
    --------
    >>> wrap_finding("  age, keypoint 3: DP 0.195 (young vs old), chance 0.076, adjusted p 0.0111", 60)
    ['  age, keypoint 3: DP 0.195 (young vs old), chance 0.076,', '      adjusted p 0.0111']
    """
    body = text.lstrip(" ")
    indent = len(text) - len(body)
    glued = _KEEP_TOGETHER.sub(lambda m: m.group(1).replace(" ", _NBSP) + _NBSP, body)
    lines = textwrap.wrap(glued, width=max(width, 20), initial_indent=" " * indent,
                          subsequent_indent=" " * (indent + 4), break_long_words=False, break_on_hyphens=False)
    return [line.replace(_NBSP, " ") for line in lines] or [text]


def render_findings(items: Sequence[Finding], console: Console, *, title: str = "Findings") -> None:
    """Print the findings in words: a bold title, then one sentence an item (alarms in red), wrapped to the
    console's width with continuation lines indented under their item."""
    console.print(Text(title, style="bold underline"))
    for f in items:
        for line in wrap_finding(f.text, console.width):
            # soft_wrap: the lines are already fitted; rich must not wrap them again.
            console.print(Text(line, style="bold red" if f.alarm else ""), soft_wrap=True)


def collapse_warnings(notes: Sequence[str]) -> list[str]:
    """Repeated warnings once, with a count (``(x12)``), in first-seen order.

    Examples
    --------
    >>> collapse_warnings(["a", "b", "a"])
    ['a (x2)', 'b']
    """
    counts = Counter(notes)
    return [n if counts[n] == 1 else f"{n} (x{counts[n]})" for n in dict.fromkeys(notes)]


def render_warnings(notes: Sequence[str], console: Console, *, spellings: Mapping[str, str] | None = None) -> None:
    """One line per distinct warning, user text shown as text, options spelled as in ``spellings``."""
    for note in collapse_warnings([spell_options(n, spellings) for n in notes]):
        console.print(Text.assemble(("warning: ", "yellow"), note))


def _keypoint_columns(result: AuditResult, a: str, has_sig: bool) -> tuple[list[TextColumn], list[TextColumn]]:
    """Key columns (keypoint, family) and value columns of one attribute's table."""
    primary = f"sdr_{result.thresholds[0]:g}"
    pk, pg = result.per_keypoint, result.per_group
    sub = pk[pk["attribute"] == a].to_dict("records")
    groups = list(result.groups.loc[result.groups["attribute"] == a, "group"])
    by_kp = {kp: frame.set_index("group") for kp, frame in pg[pg["attribute"] == a].groupby("keypoint", sort=False)}
    key = [TextColumn("kp", [str(r["keypoint"]) for r in sub])]
    if result.study.families:
        key.append(TextColumn("family", [r["family"] or "" for r in sub], justify="left"))
    cols = [TextColumn(f"{g}\nSDR   MRE", [f"{fmt(by_kp[r['keypoint']].loc[g, primary], 2)}  "
                                           f"{fmt(by_kp[r['keypoint']].loc[g, 'mre'], 2)}" for r in sub])
            for g in groups]
    sig = [bool(has_sig and r.get("significant")) for r in sub]
    cols.append(TextColumn("DP", [fmt_pm(r["dp"], r["dp_std"]) + (" *" if s else "  ") for r, s in zip(sub, sig)],
                           styles=["bold red" if s else "" for s in sig]))
    cols.append(TextColumn("pair\n(high vs low)",
                           [r["pair"] if isinstance(r["pair"], str) and num(r["dp"]) > 0 else "-" for r in sub],
                           justify="left"))
    if has_sig:
        assert result.significance is not None  # the p-value columns come from it
        ci = int(round(result.significance.options.ci * 100))
        cols.append(TextColumn("chance\nDP", [fmt_pm(r.get("baseline_mean"), r.get("baseline_std")) for r in sub]))
        if "gap_ci_low" in pk.columns:
            cols.append(TextColumn("pair\ngap", [fmt_signed(r.get("gap")) for r in sub]))
            cols.append(TextColumn(f"pair gap\n{ci}% CI", [
                f"{fmt_signed(r['gap_ci_low'])}, {fmt_signed(r['gap_ci_high'])}"
                if not math.isnan(num(r.get("gap_ci_low"))) else "-" for r in sub]))
        elif "dp_ci_low" in pk.columns:
            cols.append(TextColumn(f"{ci}% CI", [f"{fmt(r.get('dp_ci_low'))}–{fmt(r.get('dp_ci_high'))}"
                                                 for r in sub]))
        cols.append(TextColumn("p", [fmt_p(r.get("p_value")) for r in sub], optional=True))
        cols.append(TextColumn("p adj", [fmt_p(r.get("p_adjusted")) + (" *" if s else "  ") for r, s in zip(sub, sig)],
                               styles=["bold red" if s else "" for s in sig]))
        gap_sig = [bool(r.get("mre_gap_significant")) for r in sub]
        cols.append(TextColumn("MRE-gap\np adj", [fmt_p(r.get("mre_gap_p_adjusted")) + (" *" if s else "  ")
                                                  for r, s in zip(sub, gap_sig)],
                               styles=["bold red" if s else "" for s in gap_sig]))
    return key, cols


def render_audit(result: AuditResult, console: Console, *, closing_findings: bool = True,
                 spellings: Mapping[str, str] | None = None) -> None:
    """Print the findings, one keypoint table per attribute (split to fit), the summary, then the findings again.

    Every table fits ``console.width``: columns that do not fit go to a
    continuation table that repeats the keypoint, so no number is shortened.
    ``closing_findings=False`` leaves the final repeat to the caller (the demo
    prints it after its own last lines, so the findings end the screen).
    """
    items = findings(result)
    unit = result.unit
    width = console.width
    render_findings(items, console)
    if unit == "px":
        console.print(Text("No pixel-to-mm scale given: errors and thresholds are in pixels.", style="yellow"))
    has_sig = "p_value" in result.per_keypoint.columns
    for a in result.attributes:
        key, cols = _keypoint_columns(result, a, has_sig)
        title = (f"{a}: SDR@{result.thresholds[0]:g}{unit} and MRE ({unit}) per group; "
                 f"DP = largest SDR gap (mean ± std over runs)")
        for table in fit_tables(title, key, cols, width=width, continuation_key=key[:1], short_title=a):
            console.print(table)

    summary = result.summary.to_dict("records")
    scols = [TextColumn("attribute", [r["attribute"] for r in summary], justify="left"),
             TextColumn("family", [r["family"] for r in summary], justify="left")]
    vcols = [TextColumn("mean DP", [fmt_pm(r["mean_dp"], r["mean_dp_std"]) for r in summary]),
             TextColumn("max DP", [fmt(r["max_dp"]) for r in summary]),
             TextColumn("at keypoint", [str(r["max_dp_keypoint"]) for r in summary])]
    for table in fit_tables("Summary: DP over keypoints (mean ± std over runs)", scols, vcols, width=width,
                            short_title="Summary"):
        console.print(table)

    counts = result.groups.to_dict("records")
    gkey = [TextColumn("attribute", [r["attribute"] for r in counts], justify="left"),
            TextColumn("group", [str(r["group"]) for r in counts], justify="left")]
    gcols = [TextColumn("images", [str(r["n_images"]) for r in counts]),
             TextColumn("in DP", ["yes" if r["in_dp"] else "no (too small)" for r in counts], justify="left")]
    for table in fit_tables("Groups", gkey, gcols, width=width):
        console.print(table)

    overall = result.overall.to_dict("records")
    okey = [TextColumn("keypoints", [r["family"] for r in overall], justify="left")]
    ocols = [TextColumn(f"MRE ({unit})", [fmt_pm(r["mre"], r["mre_std"]) for r in overall])]
    ocols += [TextColumn(f"SDR@{t:g}{unit}", [fmt_pm(r[f"sdr_{t:g}"], r[f"sdr_{t:g}_std"]) for r in overall])
              for t in result.thresholds]
    ocols += [TextColumn("predictions", [str(r["n_predictions"]) for r in overall]),
              TextColumn("missing", [str(r["n_missing"]) for r in overall])]
    for table in fit_tables(f"Accuracy ({result.n_runs} run(s), mean ± std over runs)", okey, ocols, width=width,
                            short_title="Accuracy"):
        console.print(table)
    if has_sig:
        s = result.significance
        assert s is not None  # p-value columns come from it
        interval = ("pair gap = SDR of the higher minus the lower group of the pair, with its percentile bootstrap "
                    "interval" if "gap_ci_low" in result.per_keypoint.columns else "percentile intervals")
        console.print(Text(f"* adjusted p < {s.options.alpha:g} ({s.options.correction}); "
                           f"{null_phrase(s.method, s.options.permutations)}, {s.options.bootstrap} bootstrap "
                           "resamples "
                           f"({interval}); chance DP = DP with the attribute randomized; seed {s.options.seed}.",
                           style="dim"))
    render_warnings(result.notes, console, spellings=spellings)
    if closing_findings:
        console.print()
        render_findings(items, console, title="Findings (as above)")


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


def render_privacy(result: PrivacyResult, console: Console, *, top: int = PRIVACY_TOP_ROWS,
                   spellings: Mapping[str, str] | None = None, show_notes: bool = True) -> None:
    """Print the scores table, the importance ranking and the risk lines."""
    s = result.settings
    title = (f"Attribute inference: per-keypoint errors ({result.unit}) -> {result.target}; "
             f"{s['n_splits']}-fold CV over images, {s['n_permutations']} permutations "
             f"({s.get('permutation_test', 'refit')} test), seed {s['seed']}")
    rows = result.scores.to_dict("records")
    leak_style = ["bold red" if r["leak"] else "" for r in rows]
    key = [TextColumn("analysis", [Text(str(r["analysis"])) for r in rows], justify="left")]
    columns = [
        TextColumn("images", [str(r["n_images"]) for r in rows]),
        TextColumn("classes (images)", [Text(", ".join(f"{c} ({n})" for c, n in r["images_by_class"].items()))
                                        for r in rows], justify="left"),
        TextColumn("majority", [fmt(r["majority_rate"]) for r in rows]),
        TextColumn("chance", [fmt(r["chance"]) for r in rows]),
        TextColumn("accuracy", [fmt_pm(r["accuracy"], r["accuracy_std"]) for r in rows]),
        TextColumn("balanced acc.", [fmt_pm(r["balanced_accuracy"], r["balanced_accuracy_std"]) for r in rows],
                   styles=leak_style),
        TextColumn("ROC AUC", [fmt_pm(r["roc_auc"], r["roc_auc_std"]) for r in rows]),
        TextColumn("test stat.", [fmt(r.get("test_statistic")) for r in rows]),
        TextColumn("null", [fmt_pm(r["null_mean"], r["null_std"]) for r in rows]),
        TextColumn("p", [fmt_p(r["p_value"]) for r in rows], styles=leak_style),
    ]
    caption = ("test stat.: what the p-value compares; null: its mean ± std over the permutations "
               f"({s.get('permutation_test', 'refit')} test: {s.get('permutation_test_description', '')})")
    for table in fit_tables(title, key, columns, width=console.width, caption=caption):
        console.print(table)

    imp = result.importance
    analyses = list(result.scores["analysis"])
    n = min(top, len(result.keypoints))
    by = {a: imp[imp["analysis"] == a].to_dict("records")[:n] for a in analyses}
    ranked = [TextColumn("rank", [str(r + 1) for r in range(n)])]
    for a in analyses:
        ranked.append(TextColumn("keypoint" if a == "all" else f"{a}: keypoint",
                                 [Text(str(rec["keypoint"])) for rec in by[a]]))
        ranked.append(TextColumn("importance", [fmt_pm(rec["importance"], rec["importance_std"]) for rec in by[a]]))
    for table in fit_tables(f"Most informative keypoints (permutation importance: drop in balanced accuracy, "
                            f"mean ± std over folds; top {n} of {len(result.keypoints)})", ranked[:1], ranked[1:],
                            width=console.width):
        console.print(table)
    for risk, leak in zip(result.risk_lines, result.scores["leak"]):
        for line in wrap_finding(risk, console.width):
            console.print(Text(line, style="bold red" if leak else "green"), soft_wrap=True)
    if show_notes:
        render_warnings(result.notes, console, spellings=spellings)


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
    verdict = Text("PASSED: " if result.passed else "FAILED: ", style="bold green" if result.passed else "bold red")
    detail = f"all {n} checks passed" if not f else f"{f} of {n} checks failed"
    console.print(Text.assemble(verdict, detail))
