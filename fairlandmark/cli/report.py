"""``fairlandmark report``: HTML report, Markdown summary and figures from an audit JSON."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fairlandmark.render.console import make_console, print_wrote
from fairlandmark.exceptions import InputError, spell_options
from fairlandmark.files import check_outputs
from fairlandmark.cli._common import FLAG_SPELLINGS, number_arg

if TYPE_CHECKING:
    from rich.console import Console

    from fairlandmark.document import AuditSource

__all__ = ["register", "add_report_arguments", "write_outputs", "check_figure_options"]

MSG_LABELS = "--labels {value!r}: give two different names separated by a comma, e.g. vanilla,mitigated"
MSG_FORMATS = "--format {value!r}: give png, svg or png,svg"
MSG_NO_FIGURES_CONFLICT = "--no-figures and --figures contradict each other; give one"
MSG_LABELS_NEED_BASELINE = "--labels names the baseline and this audit; it needs --baseline"


def labels_arg(text: str) -> tuple[str, ...]:
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise InputError(MSG_LABELS.format(value=text))
    return tuple(parts)


def check_figure_options(args: argparse.Namespace) -> None:
    """``--no-figures`` with ``--figures`` is a contradiction, refused before any work."""
    if args.no_figures and args.figures:
        raise InputError(MSG_NO_FIGURES_CONFLICT)


def formats_arg(text: str) -> list[str]:
    parts = [p.strip().lower() for p in str(text).split(",") if p.strip()]
    if not parts or any(p not in ("png", "svg") for p in parts):
        raise InputError(MSG_FORMATS.format(value=text))
    return parts


dpi_arg = number_arg(int, low=30, high=600)


def add_report_arguments(parser: argparse.ArgumentParser, *, default_html: bool = False) -> None:
    """Output options shared by ``report`` (and usable by ``audit``)."""
    parser.add_argument("--html", metavar="PATH", help="write a self-contained HTML report (one file, no network)")
    parser.add_argument("--markdown", metavar="PATH", help="write a Markdown summary ('-' prints it)")
    parser.add_argument("--figures", metavar="DIR", help="write the figures to DIR")
    parser.add_argument("--format", default="png,svg", metavar="png,svg", help="figure formats (default png,svg)")
    parser.add_argument("--no-figures", action="store_true", help="HTML without figures (no matplotlib needed)")
    parser.add_argument("--title", help="report title")
    parser.add_argument("--dpi", type=dpi_arg, default=150, metavar="N",
                        help="resolution of PNG figures (default 150; the HTML embeds them at 2/3 of it)")


def write_outputs(doc: AuditSource, args: argparse.Namespace, console: Console, *, baseline: AuditSource | None = None,
                  labels: Sequence[str] = ("before", "after")) -> list[str]:
    """Write what ``--html``, ``--markdown`` and ``--figures`` ask for; returns the paths."""
    from fairlandmark.render import html as report

    notes = getattr(doc, "notes", None)  # an audit just run here: its notes, not yet spelled
    doc = report.load_audit(doc)  # an AuditResult is converted once
    if isinstance(notes, list) and len(notes) == len(doc.get("warnings") or []):
        # The reports of this command name options as its flags (--min-group-size), as the terminal does; the
        # JSON keeps the Python names.
        doc = {**doc, "warnings": [spell_options(str(text), FLAG_SPELLINGS) for text in notes]}
    written = []
    formats = formats_arg(args.format)
    if args.html:
        report.write_html(doc, args.html, title=args.title, figures=not args.no_figures, baseline=baseline,
                          labels=labels, dpi=max(int(args.dpi * 2 / 3), 30))
        if args.html != "-":
            written.append(args.html)
    if args.markdown:
        report.write_markdown(doc, args.markdown, title=args.title)
        if args.markdown != "-":
            written.append(args.markdown)
    if args.figures:
        from fairlandmark.render.figures import write_figures

        written += write_figures(doc, args.figures, formats=formats, baseline=baseline, labels=labels, dpi=args.dpi)
    for path in written:
        print_wrote(console, path)
    return written


def _run(args: argparse.Namespace) -> int:
    from fairlandmark.document import load_audit

    if not (args.html or args.markdown or args.figures):
        args.html = os.path.splitext(args.audit)[0] + ".html"
    check_outputs([("--html", args.html, False), ("--markdown", args.markdown, False),
                   ("--figures", args.figures, True)],
                  inputs=[("audit", args.audit), ("baseline", args.baseline)])
    check_figure_options(args)
    if args.labels and not args.baseline:
        raise InputError(MSG_LABELS_NEED_BASELINE)
    labels = labels_arg(args.labels or "before,after")
    console = make_console(stderr="-" in (args.html, args.markdown))
    doc = load_audit(args.audit)
    baseline = load_audit(args.baseline, what="baseline") if args.baseline else None
    write_outputs(doc, args, console, baseline=baseline, labels=labels)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "report", help="HTML report, Markdown summary and figures from an audit JSON",
        description="Render an audit JSON (fairlandmark audit --json) as a self-contained HTML report, a Markdown "
                    "summary and figures. With no output option, writes AUDIT.html next to the JSON.")
    parser.add_argument("audit", help="audit JSON written by `fairlandmark audit --json`")
    add_report_arguments(parser)
    parser.add_argument("--baseline", metavar="JSON",
                        help="an earlier audit (e.g. the vanilla model): adds a comparison section and figure")
    parser.add_argument("--labels", metavar="A,B",
                        help="names of the baseline and this audit (default before,after)")
    parser.set_defaults(handler=_run)
