"""``fairlandmark gate audit.json``: fail a build on fairness rules (exit 0 pass, 1 fail, 2 usage)."""

from __future__ import annotations

import argparse
import json
import math
from typing import TYPE_CHECKING, Any

from fairlandmark.render.console import make_console, render_gate
from fairlandmark.cli._common import number_arg, write_text_outputs

if TYPE_CHECKING:
    from rich.console import Console

    from fairlandmark.document import AuditSource
    from fairlandmark.gate import GateRules

__all__ = ["register", "add_gate_arguments", "rules_from_args", "run_gate_from_args", "gate_requested"]

RULE_DESTS = ("max_dp", "max_mean_dp", "max_mre", "min_sdr", "max_privacy_balanced_accuracy", "max_dp_regression",
              "max_mean_dp_regression", "max_mre_regression")


_unit_float = number_arg(float, low=0.0, high=1.0)


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value >= 0.0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return value


def _sdr(text: str) -> tuple[float | None, float]:
    thr, sep, value = str(text).rpartition("=")
    try:
        threshold = float(thr) if sep else None
        if threshold is not None and not (math.isfinite(threshold) and threshold > 0):
            raise ValueError(thr)
        return threshold, _unit_float(value)
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"{text!r}: give MIN (primary threshold) or THRESHOLD=MIN, e.g. 2=0.8") \
            from None


def add_gate_arguments(parser: argparse.ArgumentParser, *, standalone: bool = True) -> None:
    """Rule flags (they override the config file) and outputs.

    ``standalone=False`` (to wire the gate into ``fairlandmark audit``) prefixes
    the options that would clash with, or be confused with, the audit's own:
    ``--gate-config``, ``--gate-no-config``, ``--gate-baseline``,
    ``--gate-attribute``, ``--gate-markdown``, ``--gate-json``.
    """
    pre = "" if standalone else "gate-"
    cfg = parser.add_argument_group("configuration")
    cfg.add_argument(f"--{pre}config", metavar="TOML", dest="config",
                     help="rules file: fairlandmark.toml ([gate]) or pyproject.toml ([tool.fairlandmark.gate]); "
                          "default: either one in the current folder")
    cfg.add_argument(f"--{pre}no-config", action="store_true", dest="no_config",
                     help="ignore config files; use the flags only")
    rules = parser.add_argument_group("rules (override the config file)")
    rules.add_argument("--max-dp", type=_unit_float, metavar="X", help="max DP of every keypoint x attribute")
    rules.add_argument("--only-significant", action="store_true", dest="max_dp_only_significant",
                       help="count --max-dp only where the gap is significant after correction")
    rules.add_argument("--max-mean-dp", type=_unit_float, metavar="X", help="max mean DP over keypoints, per attribute")
    rules.add_argument("--max-mre", type=_nonneg_float, metavar="X", help="max overall MRE (the audit's unit)")
    rules.add_argument("--min-sdr", type=_sdr, action="append", metavar="[THR=]X",
                       help="min overall SDR at the primary threshold, or at THR (repeatable)")
    rules.add_argument("--max-privacy-bacc", type=_unit_float, metavar="X", dest="max_privacy_balanced_accuracy",
                       help="max balanced accuracy of inferring an attribute from the errors")
    rules.add_argument(f"--{pre}baseline", metavar="JSON", dest="baseline",
                       help="baseline audit for the regression rules")
    rules.add_argument("--max-dp-regression", type=_unit_float, metavar="X",
                       help="max DP increase per keypoint x attribute against the baseline")
    rules.add_argument("--max-mean-dp-regression", type=_unit_float, metavar="X",
                       help="max mean-DP increase per attribute against the baseline")
    rules.add_argument("--max-mre-regression", type=_nonneg_float, metavar="X",
                       help="max overall MRE increase against the baseline")
    rules.add_argument(f"--{pre}attribute", action="append", dest="gate_attributes", metavar="NAME",
                       help="apply the rules to this attribute only (repeatable; default all)")
    out = parser.add_argument_group("outputs")
    out.add_argument("--junit", metavar="PATH", help="write JUnit XML (one testcase per rule x attribute x keypoint)")
    out.add_argument(f"--{pre}markdown", metavar="PATH", dest="gate_markdown",
                     help="write the Markdown summary ('-' prints it), e.g. for $GITHUB_STEP_SUMMARY")
    out.add_argument(f"--{pre}json", metavar="PATH", dest="gate_json", help="write every check as JSON")


def gate_requested(args: argparse.Namespace) -> bool:
    """True when ``--gate`` or any rule flag was given (for the gate wired into ``audit``)."""
    return bool(getattr(args, "gate", False)) or any(getattr(args, d, None) is not None for d in RULE_DESTS)


def rules_from_args(args: argparse.Namespace) -> GateRules:
    """Config file rules, overridden by the flags."""
    from fairlandmark.gate import GateRules, load_rules

    base = GateRules(source="flags") if args.no_config else load_rules(args.config)
    flags = {
        "max_dp": args.max_dp, "max_dp_only_significant": args.max_dp_only_significant or None,
        "max_mean_dp": args.max_mean_dp, "max_mre": args.max_mre,
        "min_sdr": ({(f"{t:g}" if t is not None else None): v for t, v in args.min_sdr} if args.min_sdr else None),
        "max_privacy_balanced_accuracy": args.max_privacy_balanced_accuracy, "baseline": args.baseline,
        "max_dp_regression": args.max_dp_regression, "max_mean_dp_regression": args.max_mean_dp_regression,
        "max_mre_regression": args.max_mre_regression, "attributes": args.gate_attributes,
    }
    given: dict[str, Any] = {k: (tuple(v) if k == "attributes" and v else v) for k, v in flags.items()
                             if v is not None and k != "max_dp_only_significant"}
    over = GateRules(**given, max_dp_only_significant=bool(flags["max_dp_only_significant"]), source="flags")
    return base.merged(over)


def run_gate_from_args(audit: AuditSource, args: argparse.Namespace, console: Console, *, rules: GateRules | None = None) -> int:
    """Run the gate on ``audit`` (path, dict or AuditResult) and write the outputs; returns the exit code."""
    from fairlandmark.gate import run_gate

    result = run_gate(audit, rules if rules is not None else rules_from_args(args))
    if not getattr(args, "quiet", False):
        render_gate(result, console)
    from fairlandmark.render.markdown import gate_markdown

    write_text_outputs(console, [(args.junit, result.to_junit),
                                 (args.gate_markdown, lambda: gate_markdown(result)),
                                 (args.gate_json, lambda: json.dumps(result.to_dict(), indent=2) + "\n")])
    return result.exit_code


def _run(args: argparse.Namespace) -> int:
    from fairlandmark.files import check_outputs

    check_outputs([("--junit", args.junit, False), ("--markdown", args.gate_markdown, False),
                   ("--json", args.gate_json, False)],
                  inputs=[("audit", args.audit), ("config", args.config), ("baseline", args.baseline)])
    console = make_console(stderr=True)  # stdout stays free for '-' outputs
    return run_gate_from_args(args.audit, args, console)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "gate", help="check an audit JSON against fairness rules (exit 0 pass, 1 fail, 2 usage error)",
        description="Check an audit JSON against fairness rules from fairlandmark.toml, [tool.fairlandmark.gate] in "
                    "pyproject.toml, or flags. Exit code 0 when every rule passes, 1 when one fails, 2 on bad input "
                    "or usage. Writes JUnit XML and a Markdown summary for CI.")
    parser.add_argument("audit", help="audit JSON written by `fairlandmark audit --json`")
    add_gate_arguments(parser)
    parser.add_argument("--quiet", "-q", action="store_true", help="print no table")
    parser.set_defaults(handler=_run)
