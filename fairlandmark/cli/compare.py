"""``fairlandmark compare before.json after.json``: change in DP and MRE per keypoint."""

from __future__ import annotations

import argparse

from fairlandmark.render.console import make_console, print_wrote
from fairlandmark.files import check_outputs
from fairlandmark.cli._common import number_arg, write_text_outputs
from fairlandmark.cli.report import labels_arg

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    from fairlandmark.compare import compare
    from fairlandmark.render.console import render_comparison

    check_outputs([("--json", args.json, False), ("--markdown", args.markdown, False),
                   ("--figure", args.figure, False)],
                  inputs=[("first audit", args.before), ("second audit", args.after)])
    to_stdout = "-" in (args.json, args.markdown, args.figure)
    console = make_console(stderr=to_stdout)
    cmp = compare(args.before, args.after, labels=labels_arg(args.labels), attribute=args.attributes)
    if not args.quiet and not to_stdout:
        render_comparison(cmp, console, top=None if args.all else args.top)
    from fairlandmark.render.markdown import comparison_markdown

    write_text_outputs(console, [(args.json, lambda: cmp.to_json() + "\n"),
                                 (args.markdown, lambda: comparison_markdown(cmp, top=args.top))])
    if args.figure:
        from fairlandmark.render.figures import compare_bars, save_figure

        save_figure(compare_bars(args.before, args.after, labels=cmp.labels, attribute=args.attributes), args.figure)
        print_wrote(console, args.figure)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "compare", help="compare two audits (e.g. vanilla vs mitigated): change in DP and MRE per keypoint",
        description="Per keypoint and attribute, the change in DP and MRE between two audit JSONs; which keypoints "
                    "improved or worsened and whether the change exceeds the bootstrap uncertainty (dp_ci, else "
                    "dp_std); and the MRE cost.")
    parser.add_argument("before", help="audit JSON of the reference model (e.g. vanilla)")
    parser.add_argument("after", help="audit JSON of the new model (e.g. mitigated)")
    parser.add_argument("--labels", default="before,after", metavar="A,B",
                        help="names of the two (default before,after)")
    parser.add_argument("--attribute", "-a", action="append", dest="attributes", metavar="NAME",
                        help="only this attribute (repeatable)")
    parser.add_argument("--json", metavar="PATH", help="write the comparison as JSON ('-' prints it)")
    parser.add_argument("--markdown", metavar="PATH", help="write a Markdown summary ('-' prints it)")
    parser.add_argument("--figure", metavar="PATH", help="write the side-by-side figure (.png or .svg)")
    parser.add_argument("--top", type=number_arg(int, low=1), default=15, metavar="N",
                        help="keypoint rows to show, largest changes first (default 15)")
    parser.add_argument("--all", action="store_true", help="show every keypoint row")
    parser.add_argument("--quiet", "-q", action="store_true", help="print no tables")
    parser.set_defaults(handler=_run)
