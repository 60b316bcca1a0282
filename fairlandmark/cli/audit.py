"""``fairlandmark audit``: per-keypoint MRE/SDR by group, DP and significance."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from fairlandmark.audit import run_audit
from fairlandmark.render.console import make_console, print_wrote, render_audit
from fairlandmark.cli._common import (FLAG_SPELLINGS, finite_float, add_output_arguments, add_significance_arguments, add_study_arguments,
                                     significance_from_args, study_from_args)
from fairlandmark.exceptions import InputError
from fairlandmark.files import STDOUT, check_outputs
from fairlandmark.cli.gate import add_gate_arguments, gate_requested, rules_from_args
from fairlandmark.cli.privacy import add_audit_privacy_arguments, privacy_from_audit_args
from fairlandmark.render.console import render_findings, render_privacy, render_warnings
from fairlandmark.findings import findings
from fairlandmark.cli.report import add_report_arguments, check_figure_options

if TYPE_CHECKING:
    from rich.console import Console

    from fairlandmark.audit import AuditResult
    from fairlandmark.gate import GateRules

__all__ = ["register", "add_audit_arguments", "audit_from_args"]

MSG_WITHIN_NEEDS_PRIVACY = "--privacy-within needs --privacy (the attribute-inference section); add it or drop the option"


def add_audit_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser)
    parser.add_argument("--threshold-mm", action="append", type=finite_float, dest="thresholds", metavar="MM",
                        help="SDR threshold (repeatable; the first is primary for DP; default 2)")
    parser.add_argument("--min-group-size", type=int, default=10, metavar="N",
                        help="groups with fewer images in a run are left out of DP (default 10)")
    parser.add_argument("--adjust", action="append", default=[], metavar="COLUMN",
                        help="metadata column to adjust the gaps for (repeatable; numeric or categorical, "
                             "COLUMN:cat forces categorical): GEE models with images as clusters")
    add_significance_arguments(parser)
    add_audit_privacy_arguments(parser)  # after significance, which adds --seed
    add_measurement_arguments(parser)


def add_measurement_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("clinical measurements and error curves")
    group.add_argument("--measurements", metavar="FILE.toml|PRESET",
                       help="also audit clinical measurements computed from the landmarks (angles, distances, "
                            "ratios, classes): a TOML file or a preset (isbi2015, dha); see docs/measurements.md")
    group.add_argument("--no-curves", action="store_true",
                       help="skip the error curves (SDR over a threshold grid) and their curve-gap test")


def audit_from_args(args: argparse.Namespace) -> AuditResult:
    study = study_from_args(args)
    significance = significance_from_args(args)
    covariates = None
    if getattr(args, "adjust", None):
        from fairlandmark.stats.adjusted import check_covariates

        base = [a for a in study.coding.attributes if a in study.coding.base_codes]
        covariates = check_covariates(args.metadata, args.adjust, image_ids=study.row_image, attributes=base,
                                      source=args.metadata)
    measurements = getattr(args, "measurement_set", None)
    if measurements is None and getattr(args, "measurements", None):
        from fairlandmark.inputs.measurements import load_measurements

        measurements = load_measurements(args.measurements)
    result = run_audit(study, thresholds_mm=args.thresholds or [2.0], min_group_size=args.min_group_size,
                       significance=significance, adjust=covariates, measurements=measurements,
                       curves=not getattr(args, "no_curves", False), emit_warnings=False,
                       progress=not getattr(args, "quiet", False))
    result.add_privacy(privacy_from_audit_args(study, args))
    return result


def _outputs(args: argparse.Namespace) -> list[tuple[str, str | None, bool]]:
    return [("--json", args.json, False), ("--csv", args.csv, False), ("--html", args.html, False),
            ("--markdown", args.markdown, False), ("--figures", args.figures, True),
            ("--junit", args.junit, False), ("--gate-markdown", args.gate_markdown, False),
            ("--gate-json", args.gate_json, False)]


def _output_paths(args: argparse.Namespace) -> list[str]:
    return [path for _, path, _ in _outputs(args) if path is not None]


def _say_wrote(console: Console, path: str) -> None:
    if path != STDOUT:
        print_wrote(console, path)


def check_audit_args(args: argparse.Namespace) -> GateRules | None:
    """Refuse bad outputs and gate rules before the audit runs (it can take minutes); returns the gate rules."""
    check_outputs(_outputs(args),
                  inputs=[("predictions file", args.predictions), ("metadata file", args.metadata),
                          ("gate config", args.config), ("gate baseline", args.baseline),
                          ("measurements file", _measurement_path(args))])
    if args.measurements:
        from fairlandmark.inputs.measurements import load_measurements

        args.measurement_set = load_measurements(args.measurements)  # bad definitions fail before the audit
    if args.privacy_within and not args.privacy:
        raise InputError(MSG_WITHIN_NEEDS_PRIVACY)
    check_figure_options(args)
    if not gate_requested(args):
        return None
    rules = rules_from_args(args)
    rules.check_consistent()
    return rules


def _measurement_path(args: argparse.Namespace) -> str | None:
    from fairlandmark.inputs.measurements import PRESETS

    value = getattr(args, "measurements", None)
    return None if not value or value.lower() in PRESETS else value


def _run(args: argparse.Namespace) -> int:
    rules = check_audit_args(args)
    console = make_console(stderr=STDOUT in _output_paths(args))  # stdout stays free for '-' outputs
    result = audit_from_args(args)
    if not args.quiet:
        render_audit(result, console, spellings=FLAG_SPELLINGS)
        from fairlandmark.render.adjusted_power import print_adjustment_and_power

        print_adjustment_and_power(result.to_dict(), console)
        if result.curves is not None and result.curves.tests:
            from fairlandmark.render.curves import curve_findings

            for line in curve_findings({"curves": result.curves.block(), "unit": result.unit}):
                console.print(line, markup=False)
        if result.measurements is not None:
            from fairlandmark.render.measurements import render_measurements

            render_measurements(result, console)
        for privacy in result.privacy:
            render_privacy(privacy, console, spellings=FLAG_SPELLINGS, show_notes=False)  # in the audit's notes
    else:
        # Only the findings (they include any privacy leak); warnings still reach stderr, once each.
        render_findings(findings(result), console)
        render_warnings(result.notes, make_console(stderr=True), spellings=FLAG_SPELLINGS)
    if args.json:
        result.to_json(args.json)
        _say_wrote(console, args.json)
    if args.csv:
        result.to_csv(args.csv)
        _say_wrote(console, args.csv)
    if args.html or args.markdown or args.figures:
        from fairlandmark.cli.report import write_outputs

        write_outputs(result, args, console)
    if rules is not None:
        from fairlandmark.cli.gate import run_gate_from_args

        return run_gate_from_args(result, args, console, rules=rules)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("audit", help="audit predictions for per-keypoint demographic parity",
                                   description="Audit landmark predictions for per-keypoint demographic parity.")
    add_audit_arguments(parser)
    add_output_arguments(parser)
    parser.add_argument("--csv", metavar="PATH", help="write one row per attribute x keypoint x group as CSV")
    add_report_arguments(parser)
    parser.add_argument("--gate", action="store_true",
                        help="after the audit, apply the gate rules (fairlandmark.toml, [tool.fairlandmark.gate] "
                             "or the rule flags); exit 1 if one fails")
    add_gate_arguments(parser, standalone=False)
    parser.set_defaults(handler=_run)
