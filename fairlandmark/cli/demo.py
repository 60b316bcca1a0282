"""``fairlandmark demo``: write a small realistic study to a folder and audit it."""

from __future__ import annotations

import argparse
import os
import shlex
from typing import Any


from fairlandmark.audit import audit
from fairlandmark.findings import findings
from fairlandmark.render.console import make_console, print_plain, print_wrote, render_audit, render_findings
from fairlandmark.inputs.demo_data import PLANTED_BIAS, make_demo_study
from fairlandmark.exceptions import InputError
from fairlandmark.files import atomic_write_text, check_outputs, current_outputs
from fairlandmark.stats.significance import SignificanceOptions
from fairlandmark.cli._common import FLAG_SPELLINGS, number_arg, positive_int, seed_arg

__all__ = ["register"]


def demo_command(preds_path: str, meta_path: str, written: list[str], args: argparse.Namespace) -> str:
    """The ``fairlandmark audit`` command that repeats the demo's audit and writes the same outputs."""
    parts = ["fairlandmark", "audit", preds_path, meta_path, "-a", "sex", "-a", "age", "--bin", "age=14",
             "--wrist-width", "1,5,50", "--threshold-mm", "2", "--threshold-mm", "4", "--threshold-mm", "10",
             "--family", "wrist=1-18", "--family", "fingers=19-37",
             "--permutations", str(args.permutations), "--bootstrap", str(args.bootstrap), "--seed", str(args.seed)]
    flags = {".json": "--json", ".csv": "--csv", ".html": "--html"}
    for path in written:
        parts += [flags[os.path.splitext(path)[1]], path]
    return shlex.join(parts)


def _run(args: argparse.Namespace) -> int:
    check_outputs([("--out", args.out, True)])
    console = make_console()
    os.makedirs(args.out, exist_ok=True)
    preds, meta = make_demo_study(n_images=args.images, n_runs=args.runs, seed=args.seed)
    preds_path, meta_path = os.path.join(args.out, "preds.csv"), os.path.join(args.out, "meta.csv")
    atomic_write_text(preds_path, preds.to_csv(index=False))
    atomic_write_text(meta_path, meta.to_csv(index=False))
    outputs = current_outputs()
    if outputs is not None:
        outputs.commit()  # the audit below reads these two files back
    print_plain(console, f"Demo study: {args.images} hand radiographs, 37 keypoints, {args.runs} hold-outs -> "
                         f"{preds_path}, {meta_path}")
    planted = "; ".join(f"keypoint {k}: {who} x{factor}" for k, (who, factor) in PLANTED_BIAS.items())
    console.print(f"Planted biases (errors scaled): {planted}")
    options: dict[str, Any] = dict(attributes=["sex", "age"], bins={"age": [14]}, wrist_width="1,5,50",
                   thresholds_mm=[2.0, 4.0, 10.0], families={"wrist": range(1, 19), "fingers": range(19, 38)})
    result = audit(preds_path, meta_path, **options,
                   significance=SignificanceOptions(permutations=args.permutations, bootstrap=args.bootstrap,
                                                    seed=args.seed, progress=True), emit_warnings=False)
    if not args.quiet:
        render_audit(result, console, closing_findings=False, spellings=FLAG_SPELLINGS)
        if result.curves is not None and result.curves.tests:
            from fairlandmark.render.curves import curve_findings

            for line in curve_findings({"curves": result.curves.block(), "unit": result.unit}):
                console.print(line, markup=False)
    json_path = os.path.join(args.out, "audit.json")
    result.to_json(json_path)
    result.to_csv(os.path.join(args.out, "audit.csv"))
    written = [json_path, os.path.join(args.out, "audit.csv")]
    try:
        from fairlandmark.render.html import write_html

        html_path = os.path.join(args.out, "report.html")
        write_html(result, html_path)
        written.append(html_path)
    except InputError as exc:  # matplotlib (the [report] extra) missing
        print_plain(console, f"no HTML report: {exc}", style="yellow")
    print_wrote(console, ", ".join(written))
    if outputs is not None:
        outputs.commit()  # the reports are in place: say so before the command that repeats them
    console.print("Same audit from the command line:")
    # soft_wrap: never break the command across lines; markup off: paths are shown as they are.
    console.print(demo_command(preds_path, meta_path, written, args), soft_wrap=True, markup=False,
                  highlight=False)
    console.print()
    render_findings(findings(result), console, title="Findings" if args.quiet else "Findings (as above)")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("demo", help="generate a small realistic study and audit it",
                                   description="Write a generated hand-radiograph study (predictions + metadata) "
                                               "to a folder and audit it, with significance.")
    parser.add_argument("--out", default="demo_study", help="folder to write to (default demo_study)")
    parser.add_argument("--images", type=number_arg(int, low=1), default=910, help="images (default 910, as the hand atlas)")
    parser.add_argument("--runs", type=number_arg(int, low=1), default=10, help="hold-outs (default 10)")
    parser.add_argument("--permutations", type=positive_int, default=10000, help="permutations (default 10000)")
    parser.add_argument("--bootstrap", type=positive_int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--quiet", "-q", action="store_true", help="print only the findings (no tables)")
    seed_arg(parser)
    parser.set_defaults(handler=_run)
