"""``fairlandmark plan``: minimal detectable DP and images needed, from an audit or from assumptions."""

from __future__ import annotations

from fairlandmark.cli._common import checked, number_arg, positive_int
from fairlandmark.exceptions import InputError
from fairlandmark.files import check_outputs, dump_json
from fairlandmark.formatting import fmt
from fairlandmark.render.console import print_wrote

__all__ = ["register", "parse_group_sizes", "parse_sdr_list"]

MSG_SOURCE = ("plan: give an audit JSON (fairlandmark plan audit.json) or assumptions (--sdr and --group-sizes), "
              "not {what}")
MSG_GROUP_SIZES = "--group-sizes {value!r}: expected NAME=N,NAME=N or N,N (two or more groups), e.g. F=120,M=80"
MSG_SDR_LIST = "--sdr {value!r}: expected one SDR or a comma-separated list, each between 0 and 1, e.g. 0.8,0.65"
MSG_ASSUMPTION_ONLY = "{option}: only applies to a plan from assumptions (--sdr, --group-sizes); drop it"

fraction = number_arg(float, low=0.0, high=1.0, forbid={0.0: "must be above 0", 1.0: "must be below 1"})


def parse_group_sizes(text: str) -> dict:
    """``"F=120,M=80"`` or ``"120,80"`` as a dict of group -> images.

    Examples
    --------
    >>> parse_group_sizes("F=120,M=80")
    {'F': 120, 'M': 80}
    >>> parse_group_sizes("50,70")
    {'group 1': 50, 'group 2': 70}
    """
    out = {}
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    for i, part in enumerate(parts):
        name, sep, value = part.rpartition("=")
        name = name.strip() if sep else f"group {i + 1}"
        try:
            n = int(value)
        except ValueError:
            raise InputError(MSG_GROUP_SIZES.format(value=text)) from None
        if n < 2 or name in out:
            raise InputError(MSG_GROUP_SIZES.format(value=text))
        out[name] = n
    if len(out) < 2:
        raise InputError(MSG_GROUP_SIZES.format(value=text))
    return out


def parse_sdr_list(text: str) -> list:
    """``"0.8,0.65"`` as a list of floats in [0, 1].

    Examples
    --------
    >>> parse_sdr_list("0.8, 0.65")
    [0.8, 0.65]
    """
    try:
        values = [float(p) for p in str(text).split(",") if p.strip()]
    except ValueError:
        raise InputError(MSG_SDR_LIST.format(value=text)) from None
    if not values or not all(0 <= v <= 1 for v in values):
        raise InputError(MSG_SDR_LIST.format(value=text))
    return values


def _plan_from_args(args):
    from fairlandmark.stats.power import plan_from_assumptions, plan_from_audit

    if args.audit and (args.sdr or args.group_sizes):
        raise InputError(MSG_SOURCE.format(what="both"))
    if args.audit:
        for option, value in (("--runs", args.runs != 1), ("--shared-images", args.shared_images),
                              ("--tests", args.tests is not None)):
            if value:
                raise InputError(MSG_ASSUMPTION_ONLY.format(option=option))
        from fairlandmark.document import load_audit

        doc = load_audit(args.audit)
        return plan_from_audit(doc, power=args.power, target_dp=args.target_dp, alpha=args.alpha,
                               correction=args.correction, n_sim=args.simulations, seed=args.seed,
                               source=str(args.audit))
    if not (args.sdr and args.group_sizes):
        raise InputError(MSG_SOURCE.format(what="neither" if not (args.sdr or args.group_sizes) else
                                           "only one of --sdr and --group-sizes"))
    return plan_from_assumptions(args.sdr, args.group_sizes, n_runs=args.runs, shared_images=args.shared_images,
                                 n_tests=args.tests, power=args.power, target_dp=args.target_dp,
                                 alpha=args.alpha if args.alpha is not None else 0.05,
                                 correction=args.correction or "bh", n_sim=args.simulations, seed=args.seed)


def _span(values, digits: int) -> str:
    low, high = fmt(values.min(), digits), fmt(values.max(), digits)
    return low if low == high else f"{low}-{high} across keypoints"


def render_plan(plan, console) -> None:
    """Findings in words, then one compact table per attribute."""
    from rich.table import Table

    from fairlandmark.render.console import plain

    s = plan.settings
    console.print(f"Power plan: power {s['power']:g}, alpha {s['alpha']:g} ({s['correction']}) over "
                  f"{s['n_tests']} test(s), so a single gap must pass p <= {s['per_test_level']:.2g}.", markup=False)
    for note in plan.warnings:
        console.print(f"warning: {note}", markup=False, style="yellow")
    table = plan.table
    for attribute, rows in table.groupby("attribute", sort=False):
        mdd = rows["min_detectable_dp"].astype(float)
        words = (f"{attribute}: the smallest gap flagged with power {s['power']:g} is "
                 f"{_span(mdd, 2)} (pair {rows['pair'].iloc[0]})")
        if s.get("target_dp") is not None:
            need = rows["n_per_group_for_target"].astype(float)
            words += f"; a DP of {s['target_dp']:g} needs {_span(need, 0)} images per group"
        console.print(words + ".", markup=False)
        out = Table(title=f"{plain(attribute)}: minimal detectable DP", header_style="bold", pad_edge=False)
        has_obs = "observed_dp" in rows
        out.add_column("kp", justify="right", no_wrap=True)
        out.add_column("SDR", justify="right", no_wrap=True)
        if has_obs:
            out.add_column("DP", justify="right", no_wrap=True)
            out.add_column("sig", no_wrap=True)
        out.add_column("MDD", justify="right", no_wrap=True)
        if s.get("target_dp") is not None:
            out.add_column(f"n/group for {s['target_dp']:g}", justify="right", no_wrap=True)
        for row in rows.to_dict("records"):
            cells = [plain(row["keypoint"]), fmt(row["sdr"], 2)]
            if has_obs:
                cells += [fmt(row["observed_dp"]), "*" if row.get("significant") else ""]
            cells.append(fmt(row["min_detectable_dp"]))
            if s.get("target_dp") is not None:
                cells.append(fmt(row["n_per_group_for_target"], 0))
            out.add_row(*cells)
        console.print(out)


def _run(args):
    from fairlandmark.render.console import make_console

    check_outputs([("--json", args.json, False), ("--figure", args.figure, False)],
                  inputs=[("audit JSON", args.audit)] if args.audit else [])
    if args.figure:
        from fairlandmark.render.figures import require_matplotlib

        require_matplotlib()
    plan = _plan_from_args(args)
    console = make_console()
    if not args.quiet:
        render_plan(plan, console)
    else:
        for note in plan.warnings:
            console.print(f"warning: {note}", markup=False)
    if args.json:
        dump_json(plan.to_dict(), args.json)
        print_wrote(console, args.json)
    if args.figure:
        from fairlandmark.render.figures import save_figure
        from fairlandmark.render.plan_figures import detectable_dp_figure
        from fairlandmark.stats.power import detectable_curve

        curve = detectable_curve(plan, n_sim=min(args.simulations, 1000), seed=args.seed)
        save_figure(detectable_dp_figure(curve, plan, target_dp=args.target_dp), args.figure)
        print_wrote(console, args.figure)
    return 0


def register(subparsers):
    parser = subparsers.add_parser(
        "plan", help="minimal detectable DP and images needed per group (power planning)",
        description="Power planning: the smallest DP an audit can flag with the given power, and the images per "
                    "group needed for a target DP. From an audit JSON (its own design and test) or from assumed "
                    "SDRs and group sizes.")
    parser.add_argument("audit", nargs="?", help="audit JSON written by fairlandmark audit --json")
    assumed = parser.add_argument_group("assumptions (instead of an audit JSON)")
    assumed.add_argument("--sdr", type=checked(parse_sdr_list), metavar="P[,P...]",
                         help="expected SDR at the primary threshold, one value or one per keypoint")
    assumed.add_argument("--group-sizes", type=checked(parse_group_sizes), metavar="NAME=N,NAME=N",
                         help="test images per group, e.g. F=120,M=80")
    assumed.add_argument("--runs", type=number_arg(int, low=1), default=1, metavar="R",
                         help="runs (folds) the images are split over (default 1)")
    assumed.add_argument("--shared-images", action="store_true", help="every run evaluates the same images")
    assumed.add_argument("--tests", type=number_arg(int, low=1), metavar="M",
                         help="number of tests of the audit (attributes x keypoints; default the keypoints)")
    parser.add_argument("--power", type=fraction, default=0.8, help="power to detect a gap (default 0.8)")
    parser.add_argument("--target-dp", type=fraction, default=0.10, metavar="DP",
                        help="gap to size the next study for (default 0.10)")
    parser.add_argument("--alpha", type=fraction, help="level (default: the audit's, else 0.05)")
    parser.add_argument("--correction", choices=("bh", "holm", "westfall-young"),
                        help="multiple-testing correction (default: the audit's, else bh)")
    parser.add_argument("--simulations", type=number_arg(int, low=200), default=4000, metavar="N",
                        help="Monte-Carlo draws per power evaluation (default 4000)")
    parser.add_argument("--seed", type=positive_int, default=0, help="random seed (default 0)")
    parser.add_argument("--json", metavar="PATH", help="write one record per attribute x keypoint as JSON")
    parser.add_argument("--figure", metavar="PATH", help="write the detectable-DP curve (.png or .svg)")
    parser.add_argument("--quiet", "-q", action="store_true", help="print no tables")
    parser.set_defaults(handler=_run)
