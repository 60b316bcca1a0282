"""``fairlandmark convert``: wide annotation files to the long predictions format."""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from fairlandmark.inputs.convert import (MSG_TEMPLATE_EXISTS, check_template_columns, convert, metadata_template, read_wide,
                       write_long)
from fairlandmark.exceptions import FairlandmarkWarning, InputError
from fairlandmark.cli._common import FLAG_SPELLINGS
from fairlandmark.files import check_outputs

__all__ = ["register"]

EPILOG = """examples:
  fairlandmark convert --pred pred_wide.csv --truth truth_wide.csv --out long.csv --spacing-mm 0.1
  fairlandmark convert --pred h1.csv --run h1 --pred h2.csv --run h2 --truth truth.csv --out long.csv --predicted-only

Wide files have one row per image, id,x1,y1,...,xK,yK, with or without a header
row. An empty cell in a prediction file is a missing prediction (a miss at every
threshold); ground-truth images with no prediction row are written as missing
predictions unless --predicted-only is given."""


def _run(args: argparse.Namespace) -> int:
    # Refuse before writing anything, so a failed call leaves no half result.
    check_outputs([("--out", args.out, False), ("--metadata-template", args.metadata_template, False)],
                  inputs=[("--truth file", args.truth)] + [("--pred file", p) for p in args.pred])
    if args.metadata_template and os.path.exists(args.metadata_template):
        raise InputError(MSG_TEMPLATE_EXISTS.format(path=args.metadata_template))
    if args.metadata_template:
        check_template_columns(args.template_columns.split(","))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FairlandmarkWarning)
        truth = read_wide(args.truth, truth=True)
        frame = convert(args.pred, truth, runs=args.run, spacing_mm=args.spacing_mm,
                        predicted_only=args.predicted_only)
    write_long(frame, args.out)
    for w in caught:
        if issubclass(w.category, FairlandmarkWarning):
            text = w.message.spelled(FLAG_SPELLINGS) if isinstance(w.message, FairlandmarkWarning) else w.message
            sys.stderr.write(f"warning: {text}\n")
    n_runs = frame["run"].nunique() if "run" in frame.columns else 1
    print(f"wrote {args.out}: {len(frame)} rows ({frame['image_id'].nunique()} images x "
          f"{truth.n_keypoints} keypoints x {n_runs} run(s))")
    if args.metadata_template:
        n = metadata_template(truth, args.metadata_template, columns=args.template_columns.split(","))
        print(f"wrote {args.metadata_template}: {n} images, fill in {args.template_columns}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert wide files (id,x1,y1,...) to the long predictions format",
        description="Pair wide prediction file(s) with the wide ground truth and write the long format "
                    "(run, image_id, keypoint, pred_x, pred_y, true_x, true_y, spacing_mm) that audit reads.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pred", action="append", required=True, metavar="PATH",
                        help="wide predictions, CSV or Parquet (repeatable: one file per run)")
    parser.add_argument("--truth", required=True, metavar="PATH", help="wide ground truth, CSV or Parquet")
    parser.add_argument("--out", required=True, metavar="PATH",
                        help="long output; .parquet/.pq writes Parquet, anything else CSV (written atomically)")
    parser.add_argument("--run", action="append", metavar="NAME",
                        help="run label of each --pred, in the same order (needed with several --pred)")
    parser.add_argument("--spacing-mm", type=float, metavar="MM", help="add a spacing_mm column (mm per pixel)")
    parser.add_argument("--predicted-only", action="store_true",
                        help="write only images that have a prediction (hold-outs predicting their own test images)")
    parser.add_argument("--metadata-template", metavar="PATH",
                        help="also write a metadata CSV to fill in: image_id plus empty attribute columns "
                             "(never overwrites a file)")
    parser.add_argument("--template-columns", default="sex,age", metavar="A,B",
                        help="attribute columns of the metadata template (default sex,age)")
    parser.set_defaults(handler=_run)
