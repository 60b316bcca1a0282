"""``fairlandmark privacy``: do the per-keypoint errors reveal a sensitive attribute?"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from fairlandmark.render.console import make_console, print_plain, print_wrote, render_privacy, render_warnings
from fairlandmark.stats.privacy import (DEFAULT_PERMUTATION_TEST, DEFAULT_PERMUTATIONS, DEFAULT_REPEATS, DEFAULT_TREES,
                                        PERMUTATION_TESTS, attribute_inference, default_estimator)
from fairlandmark.cli._common import (FLAG_SPELLINGS, add_input_arguments, bins_from_args, n_jobs_arg, number_arg,
                                      positive_int, seed_arg)

if TYPE_CHECKING:
    from fairlandmark.inputs.study import Study
    from fairlandmark.stats.privacy import PrivacyResult

__all__ = ["register", "add_audit_privacy_arguments", "privacy_from_audit_args"]


def _run(args: argparse.Namespace) -> int:
    from fairlandmark.files import check_outputs

    check_outputs([("--json", args.json, False)],
                  inputs=[("predictions file", args.predictions), ("metadata file", args.metadata)])
    console = make_console(stderr=args.json == "-")
    result = attribute_inference(
        args.predictions, args.metadata, target=args.target, within=args.within,
        estimator=default_estimator(n_estimators=args.trees, seed=args.seed), n_splits=args.folds,
        n_permutations=args.permutations, n_repeats=args.repeats, seed=args.seed, n_jobs=args.n_jobs,
        progress=not args.quiet, spacing_mm=args.spacing_mm, wrist_width=args.wrist_width, bins=bins_from_args(args.bin),
        permutation_test=args.permutation_test,
        encoding=args.encoding, spacing_from_dicom=args.spacing_from_dicom, dicom_match=args.dicom_match,
        emit_warnings=False,
    )
    if args.quiet:
        for line in result.risk_lines:
            print_plain(console, line)
        render_warnings(result.notes, make_console(stderr=True), spellings=FLAG_SPELLINGS)
    else:
        render_privacy(result, console, spellings=FLAG_SPELLINGS)
    if args.json:
        result.to_json(args.json)
        if args.json != "-":
            print_wrote(console, args.json)
    return 0


def add_inference_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, prefix: str = "") -> None:
    """Options of the inference itself (folds, permutations, trees, repeats)."""
    parser.add_argument(f"--{prefix}folds", type=number_arg(int, low=2), default=5, metavar="K",
                        help="stratified folds over images (default 5)")
    parser.add_argument(f"--{prefix}permutations", type=positive_int, default=DEFAULT_PERMUTATIONS, metavar="N",
                        help=f"label permutations for the p-value, 0 for none (default {DEFAULT_PERMUTATIONS})")
    parser.add_argument(f"--{prefix}trees", type=number_arg(int, low=1), default=DEFAULT_TREES, metavar="N",
                        help=f"trees of the random forest (default {DEFAULT_TREES})")
    parser.add_argument(f"--{prefix}repeats", type=number_arg(int, low=1), default=DEFAULT_REPEATS, metavar="N",
                        help=f"shuffles per keypoint and fold for the importance (default {DEFAULT_REPEATS})")
    parser.add_argument(f"--{prefix}permutation-test", choices=PERMUTATION_TESTS, default=DEFAULT_PERMUTATION_TEST,
                        help="chained (default): fold k predicted by a forest fitted on folds 1..k-1 only, its "
                             "held-out labels permuted (exact given the earlier folds), the links combined by Fisher "
                             "(seconds); per-fold: an exact permutation test in each fold with its fitted forest "
                             "fixed, the fold p-values merged by Bonferroni (valid under any dependence, less "
                             "power); refit: refit the cross-validation for every permutation, stopping "
                             "once 10 permuted scores reach the observed one (Besag-Clifford); fixed-model: the fold "
                             "mean against the mean within-fold null (seconds, but mildly anti-conservative)")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "privacy", help="attribute inference: do per-keypoint errors reveal a sensitive attribute?",
        description="Train a random forest on each image's per-keypoint errors to predict a sensitive attribute "
                    "(stratified k-fold over images), with a label-permutation test and permutation importance.")
    add_input_arguments(parser)
    parser.add_argument("--target", "-t", required=True, metavar="COLUMN", help="attribute to infer, e.g. age_group")
    parser.add_argument("--within", metavar="COLUMN",
                        help="repeat inside each level of this attribute (e.g. age within each sex)")
    add_inference_options(parser)
    seed_arg(parser)
    parser.add_argument("--n-jobs", type=n_jobs_arg, default=None, metavar="N",
                        help="parallel workers (-1: all cores); results do not depend on it")
    parser.add_argument("--json", metavar="PATH", help="write the result as JSON (docs/privacy.md)")
    parser.add_argument("--quiet", "-q", action="store_true", help="print only the risk line(s)")
    parser.set_defaults(handler=_run)


# -- the audit's opt-in privacy section -------------------------------------------


def add_audit_privacy_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--privacy`` and its options to ``fairlandmark audit``."""
    group = parser.add_argument_group("privacy (attribute inference from the errors; opt-in)")
    group.add_argument("--privacy", action="store_true",
                       help="also infer each audited attribute from the per-keypoint errors")
    group.add_argument("--privacy-within", metavar="COLUMN",
                       help="infer each other attribute within each level of this one")
    add_inference_options(group, prefix="privacy-")
    if not any(a.dest == "n_jobs" for a in parser._actions):
        group.add_argument("--n-jobs", type=n_jobs_arg, default=None, metavar="N",
                           help="parallel workers for the privacy section (-1: all cores); results do not depend on it")


def privacy_from_audit_args(study: Study, args: argparse.Namespace) -> list[PrivacyResult]:
    """Run the privacy section for an audit's study; returns a list of PrivacyResult (empty without --privacy)."""
    if not getattr(args, "privacy", False):
        return []
    from fairlandmark.stats.privacy import audit_privacy

    seed = getattr(args, "seed", 0) or 0
    return audit_privacy(
        study, within=args.privacy_within,
        estimator=default_estimator(n_estimators=args.privacy_trees, seed=seed), n_splits=args.privacy_folds,
        n_permutations=args.privacy_permutations, n_repeats=args.privacy_repeats, seed=seed,
        n_jobs=getattr(args, "n_jobs", None), progress=not getattr(args, "quiet", False),
        permutation_test=args.privacy_permutation_test, emit_warnings=False,
    )
