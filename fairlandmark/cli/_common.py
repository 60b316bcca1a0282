"""Arguments shared by commands that read predictions and metadata."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from fairlandmark.audit import prepare_study
from fairlandmark.stats.significance import (CORRECTIONS, LARGE_SAMPLE_MIN_GROUP, LARGE_SAMPLE_ROWS, METHODS,
                                               SignificanceOptions)
from fairlandmark.exceptions import InputError
from fairlandmark.inputs.families import parse_family
from fairlandmark.inputs.groups import parse_bin
from fairlandmark.inputs.radial_error import parse_wrist_width

if TYPE_CHECKING:
    from rich.console import Console

    from fairlandmark.inputs.study import Study

__all__ = ["write_text_outputs", "bins_from_args", "add_input_arguments", "add_study_arguments", "study_from_args", "add_output_arguments", "number_arg", "positive_int", "finite_float",
           "seed_arg", "checked", "FLAG_SPELLINGS", "add_significance_arguments", "significance_from_args", "n_jobs_arg"]


# How the command line spells the options that core messages name by their API names.
FLAG_SPELLINGS = {
    "attributes": "--attribute", "bins": "--bin", "families": "--family", "spacing_mm": "--spacing-mm",
    "wrist_width": "--wrist-width", "thresholds_mm": "--threshold-mm", "min_group_size": "--min-group-size",
    "permutations": "--permutations", "bootstrap": "--bootstrap", "baseline_repeats": "--baseline-repeats",
    "within": "--within", "n_splits": "--folds", "runs": "--run", "pred_paths": "--pred",
    "predicted_only": "--predicted-only", "max_dp": "--max-dp", "baseline": "--baseline",
    "significance": "--no-significance", "privacy": "--privacy", "seed": "--seed", "alpha": "--alpha",
    "ci": "--ci", "correction": "--correction", "encoding": "--encoding",
    "spacing_from_dicom": "--spacing-from-dicom", "dicom_match": "--dicom-match", "category": "--category",
    "instance": "--instance", "image_key": "--image-key", "metadata_from_coco": "--metadata-from-coco",
}


def checked(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Wrap a parser raising InputError so argparse shows our message as is."""

    def wrapper(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            text = exc.spelled(FLAG_SPELLINGS) if isinstance(exc, InputError) else str(exc)
            raise argparse.ArgumentTypeError(text) from None

    wrapper.__name__ = parse.__name__
    return wrapper


def number_arg(kind: Callable[[str], Any] = int, *, low: float | None = None, high: float | None = None,
               forbid: Mapping[float, str] | None = None) -> Callable[[str], Any]:
    """An argparse type: a number of ``kind`` in ``[low, high]``, one-line messages.

    ``forbid`` maps values that are in range but meaningless to their message.
    """
    noun = "an integer" if kind is int else "a number"
    forbid = dict(forbid or {})

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if value in forbid:
            raise argparse.ArgumentTypeError(forbid[value])
        if low is not None and high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} must be between {low:g} and {high:g}")
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"{text!r} must be >= {low}")
        return value

    parse.__name__ = noun if low is None else f"{noun} >= {low}"
    return parse


n_jobs_arg = number_arg(int, forbid={0: "0 workers: give 1 or more, or -1 for all cores"})


positive_int = number_arg(int, low=0)
finite_float = number_arg(float)


def seed_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=positive_int, default=0,
                        help="random seed; the same seed gives the same numbers bit for bit (default 0)")


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """The two input files, the pixel-to-mm scale and --bin: what every command that reads a study needs."""
    parser.add_argument("predictions", help="predictions file (CSV or Parquet, long format)")
    parser.add_argument("metadata", help="metadata file: image_id plus one column per attribute")
    scale = parser.add_argument_group("pixel to mm (choose at most one; default: errors stay in pixels)")
    scale.add_argument("--spacing-mm", type=finite_float, metavar="MM", help="mm per pixel for every image")
    scale.add_argument("--wrist-width", type=checked(parse_wrist_width), metavar="A,B,MM",
                       help="per-image scale MM/|true_A - true_B|, e.g. 1,5,50 for the Digital Hand Atlas")
    parser.add_argument("--encoding", metavar="NAME",
                        help="text encoding of CSV inputs, e.g. latin-1 (default: UTF-8, or UTF-16 with a BOM)")
    add_dicom_arguments(scale)
    parser.add_argument("--bin", action="append", type=checked(parse_bin), default=[], metavar="COL=CUT[,CUT]",
                        help="bin a numeric attribute, e.g. age=14 gives age<14 / age>=14")


def add_dicom_arguments(group: argparse._ArgumentGroup | argparse.ArgumentParser) -> None:
    """``--spacing-from-dicom DIR`` and ``--dicom-match`` (pixel spacing from DICOM headers)."""
    group.add_argument("--spacing-from-dicom", metavar="DIR",
                       help="mm per pixel (x and y) of each image from the DICOM headers in DIR: PixelSpacing, "
                            "else ImagerPixelSpacing (needs pip install 'fairlandmark[dicom]')")
    group.add_argument("--dicom-match", choices=("stem", "uid"), default="stem",
                       help="match DICOM files to image_id by file stem (001.dcm -> 001, default) or SOPInstanceUID")


def add_study_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser)
    parser.add_argument("--attribute", "-a", action="append", dest="attributes", metavar="COLUMN",
                        help="attribute to audit (repeatable); default every metadata column")
    parser.add_argument("--family", action="append", type=checked(parse_family), default=[], metavar="NAME=SPEC",
                        help="keypoint family, e.g. wrist=1-18 (repeatable)")
    parser.add_argument("--no-intersection", action="store_true",
                        help="do not audit the combination of two or more attributes")


def bins_from_args(pairs: Iterable[tuple[str, list[float]]]) -> dict[str, list[float]]:
    """``--bin`` pairs as a dict; a column binned twice is an error, not a silent last-one-wins."""
    bins = {}
    for column, cuts in pairs:
        if column in bins:
            raise InputError(f"--bin {column}: given twice; give all its cut points in one --bin, e.g. "
                             f"{column}=10,14")
        bins[column] = cuts
    return bins


def study_from_args(args: argparse.Namespace) -> Study:
    return prepare_study(
        args.predictions, args.metadata, attributes=args.attributes, spacing_mm=args.spacing_mm,
        wrist_width=args.wrist_width, bins=bins_from_args(args.bin), families=list(args.family),
        intersection=not args.no_intersection, metadata_source=args.metadata, encoding=args.encoding,
        spacing_from_dicom=args.spacing_from_dicom, dicom_match=args.dicom_match,
        keep_pred_xy=getattr(args, "measurements", None) is not None,  # only the measurement audit reads them
        progress=not getattr(args, "quiet", False),
    )


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="PATH", help="write the result as JSON (versioned schema)")
    parser.add_argument("--quiet", "-q", action="store_true", help="print only the findings (no tables)")


def add_significance_arguments(parser: argparse.ArgumentParser) -> None:
    """Permutations, bootstrap, baseline, alpha, correction and seed: the significance options of ``audit``."""
    group = parser.add_argument_group("significance")
    group.add_argument("--permutations", type=positive_int, default=10000, metavar="B",
                       help="label permutations for p-values (default 10000; 0 = off)")
    group.add_argument("--bootstrap", type=positive_int, default=2000, metavar="B",
                       help="stratified bootstrap resamples for intervals (default 2000; 0 = off)")
    group.add_argument("--ci", type=finite_float, default=0.95, help="interval coverage (default 0.95)")
    group.add_argument("--alpha", type=finite_float, default=0.05, help="level for adjusted p-values (default 0.05)")
    group.add_argument("--correction", choices=CORRECTIONS, default="bh",
                       help="multiple-testing adjustment over attributes x keypoints (default bh)")
    group.add_argument("--baseline-repeats", type=positive_int, default=1000, metavar="B",
                       help="repeats of the randomized-attribute baseline (default 1000; 0 = off)")
    group.add_argument("--significance-method", choices=METHODS, default="auto",
                       help="null of the p-values: exact permutations, or the large-sample normal null whose cost "
                            f"does not grow with the images (default auto: normal above {LARGE_SAMPLE_ROWS:,} "
                            f"(run, image) rows when every group has {LARGE_SAMPLE_MIN_GROUP:,}+ images)")
    if not any(a.dest == "n_jobs" for a in parser._actions):
        group.add_argument("--n-jobs", type=n_jobs_arg, default=None, metavar="N",
                           help="worker threads (-1: all cores); default all cores for these tests, one process for "
                                "the privacy section; the numbers do not depend on it")
    group.add_argument("--no-significance", action="store_true", help="skip all of the above")
    if not any(a.dest == "seed" for a in parser._actions):  # privacy adds --seed too
        group.add_argument("--seed", type=positive_int, default=0,
                           help="random seed; same seed, same numbers bit for bit (default 0)")


def significance_from_args(args: argparse.Namespace) -> SignificanceOptions | None:
    """The significance options the flags ask for; ``None`` when every part is off."""
    if args.no_significance or (args.permutations == 0 and args.bootstrap == 0 and args.baseline_repeats == 0):
        return None
    return SignificanceOptions(permutations=args.permutations, bootstrap=args.bootstrap, ci=args.ci, alpha=args.alpha,
                               correction=args.correction, baseline_repeats=args.baseline_repeats, seed=args.seed,
                               progress=not getattr(args, "quiet", False),
                               method=getattr(args, "significance_method", "auto"),
                               n_jobs=getattr(args, "n_jobs", None) or -1)  # default: every core


def write_text_outputs(console: Console, outputs: Iterable[tuple[str | None, Callable[[], str]]]) -> None:
    """Write each requested text output (``-`` = standard output) and say "wrote PATH" for the files.

    ``outputs`` pairs a path (None or empty: not requested) with a function making the text, so nothing is
    rendered that was not asked for.
    """
    from fairlandmark.files import STDOUT, write_text_output
    from fairlandmark.render.console import print_wrote

    for path, make_text in outputs:
        if path:
            write_text_output(path, make_text())
            if path != STDOUT:
                print_wrote(console, path)
