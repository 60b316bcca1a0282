"""``fairlandmark convert``: wide annotation files to the long predictions format."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fairlandmark.inputs.convert import (WideTable, MSG_TEMPLATE_EXISTS, check_template_columns, convert, metadata_template, read_wide,
                       write_long)
from fairlandmark.exceptions import FairlandmarkWarning, InputError
from fairlandmark.cli._common import FLAG_SPELLINGS, finite_float
from fairlandmark.files import check_outputs, when_written

if TYPE_CHECKING:
    from fairlandmark.inputs.coco import CocoTruth

MSG_COCO_ONLY = "{option}: applies to COCO files; give a .json --truth (COCO keypoints) or drop {option}"
MSG_COCO_MIX = "--pred {path}: a COCO --truth (.json) needs COCO results (.json) for every --pred"
MSG_DICOM_AND_SPACING = "--spacing-from-dicom and --spacing-mm: give only one pixel-to-mm scale"
MSG_COCO_ENCODING = "--encoding: COCO JSON files are always UTF-8; drop --encoding (it applies to wide CSV files)"

__all__ = ["register"]

EPILOG = """examples:
  fairlandmark convert --pred pred_wide.csv --truth truth_wide.csv --out long.csv --spacing-mm 0.1
  fairlandmark convert --pred h1.csv --run h1 --pred h2.csv --run h2 --truth truth.csv --out long.csv --predicted-only
  fairlandmark convert --truth gt_coco.json --pred results.json --out long.csv --metadata-from-coco meta.csv
  fairlandmark convert --truth gt_coco.json --pred results.json --out long.csv --image-key file_stem \\
      --spacing-from-dicom scans/

COCO: a .json --truth is a COCO keypoints file and each --pred a COCO results
file; keypoints are named from the category, ground truth with v=0 is written
with empty true_x/true_y (no ground truth: left out of that keypoint's numbers),
a predicted keypoint with score 0 is a missing prediction. See docs/formats.md.

Wide files have one row per image, id,x1,y1,...,xK,yK, with or without a header
row. An empty cell in a prediction file is a missing prediction (a miss at every
threshold); ground-truth images with no prediction row are written as missing
predictions unless --predicted-only is given."""


def conversion_summary(frame: pd.DataFrame, n_keypoints: int) -> str:
    """What a converted file holds, with arithmetic that adds up (a run may predict only some images).

    Examples
    --------
    >>> import pandas as pd
    >>> f = pd.DataFrame({"run": ["a"] * 4 + ["b"] * 2, "image_id": [1, 1, 2, 2, 3, 3], "keypoint": [1, 2] * 3})
    >>> conversion_summary(f, 2)
    '6 rows = 3 (run, image) pairs x 2 keypoints; 3 images, 2 runs'
    """
    runs = frame["run"] if "run" in frame.columns else pd.Series(0, index=frame.index)
    pairs = len(pd.DataFrame({"run": runs, "image": frame["image_id"]}).drop_duplicates())
    n_runs = runs.nunique()
    return (f"{len(frame)} rows = {pairs} (run, image) pairs x {n_keypoints} keypoints; "
            f"{frame['image_id'].nunique()} images, {n_runs} run{'s' if n_runs != 1 else ''}")


def _is_coco(path: object) -> bool:
    return os.path.splitext(str(path))[1].lower() == ".json"


def _check_coco_options(args: argparse.Namespace) -> bool:
    """COCO options only with a COCO truth; COCO truth only with COCO results; one scale."""
    coco = _is_coco(args.truth)
    if not coco:
        for option, value in (("--category", args.category), ("--instance", args.instance != "only"),
                              ("--image-key", args.image_key != "id"),
                              ("--metadata-from-coco", args.metadata_from_coco)):
            if value:
                raise InputError(MSG_COCO_ONLY.format(option=option))
    else:
        for path in args.pred:
            if not _is_coco(path):
                raise InputError(MSG_COCO_MIX.format(path=path))
        if args.encoding:
            raise InputError(MSG_COCO_ENCODING)
    if args.spacing_from_dicom and args.spacing_mm is not None:
        raise InputError(MSG_DICOM_AND_SPACING)
    return coco


def _convert_coco(args: argparse.Namespace) -> tuple[pd.DataFrame, pd.DataFrame | None, CocoTruth]:
    from fairlandmark.inputs.coco import coco_metadata, coco_to_long, read_coco_truth

    truth = read_coco_truth(args.truth, category=args.category, instance=args.instance, image_key=args.image_key)
    frame = coco_to_long(args.pred, truth, runs=args.run, instance=args.instance, spacing_mm=args.spacing_mm,
                         predicted_only=args.predicted_only)
    meta = coco_metadata(truth) if args.metadata_from_coco else None
    return frame, meta, truth


def _with_dicom_spacing(frame: pd.DataFrame, args: argparse.Namespace) -> pd.DataFrame:
    from fairlandmark.inputs.dicom import read_dicom_spacing, spacing_columns

    table = read_dicom_spacing(args.spacing_from_dicom, match=args.dicom_match,
                               image_ids=frame["image_id"].unique())
    return frame.assign(**spacing_columns(frame["image_id"].to_numpy(), table))


def _run(args: argparse.Namespace) -> int:
    # Refuse before writing anything, so a failed call leaves no half result.
    check_outputs([("--out", args.out, False), ("--metadata-template", args.metadata_template, False),
                   ("--metadata-from-coco", args.metadata_from_coco, False)],
                  inputs=[("--truth file", args.truth)] + [("--pred file", p) for p in args.pred])
    coco = _check_coco_options(args)
    if args.metadata_template and os.path.exists(args.metadata_template):
        raise InputError(MSG_TEMPLATE_EXISTS.format(path=args.metadata_template))
    if args.metadata_template:
        check_template_columns(args.template_columns.split(","))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FairlandmarkWarning)
        meta = None
        coco_truth = None
        if coco:
            frame, meta, coco_truth = _convert_coco(args)
            # The ids (and points) of the COCO images, for the summary line and --metadata-template.
            truth = WideTable(source=coco_truth.source, ids=coco_truth.image_ids, coords=coco_truth.true,
                              rows=np.arange(1, len(coco_truth.image_ids) + 1), has_header=False)
        else:
            truth = read_wide(args.truth, truth=True, encoding=args.encoding)
            frame = convert(args.pred, truth, runs=args.run, spacing_mm=args.spacing_mm, encoding=args.encoding,
                            predicted_only=args.predicted_only)
        if args.spacing_from_dicom:
            frame = _with_dicom_spacing(frame, args)
    write_long(frame, args.out)
    if meta is not None:
        write_long(meta, args.metadata_from_coco)
    for w in caught:
        if issubclass(w.category, FairlandmarkWarning):
            text = w.message.spelled(FLAG_SPELLINGS) if isinstance(w.message, FairlandmarkWarning) else w.message
            sys.stderr.write(f"warning: {text}\n")
    lines = [f"wrote {args.out}: {conversion_summary(frame, truth.n_keypoints)}"]
    if coco_truth is not None and coco_truth.n_unlabelled:
        lines.append(f"{coco_truth.n_unlabelled} ground-truth point(s) have v=0 (no ground truth): written with "
                     f"empty true_x/true_y, left out of their keypoint's numbers")
    if meta is not None:
        lines.append(f"wrote {args.metadata_from_coco}: {len(meta)} images, columns {', '.join(meta.columns[1:])}")
    if args.metadata_template:
        n = metadata_template(truth, args.metadata_template, columns=args.template_columns.split(","))
        lines.append(f"wrote {args.metadata_template}: {n} images, fill in {args.template_columns}")
    say = sys.stderr if args.out == "-" else sys.stdout  # stdout carries the table itself
    when_written(lambda: print("\n".join(lines), file=say))  # only once every file is in place
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
    parser.add_argument("--spacing-mm", type=finite_float, metavar="MM", help="add a spacing_mm column (mm per pixel)")
    parser.add_argument("--encoding", metavar="NAME",
                        help="text encoding of the wide CSV files, e.g. latin-1 (default: UTF-8, or UTF-16 with a "
                             "BOM); COCO JSON is always UTF-8")
    parser.add_argument("--predicted-only", action="store_true",
                        help="write only images that have a prediction (hold-outs predicting their own test images)")
    parser.add_argument("--metadata-template", metavar="PATH",
                        help="also write a metadata CSV to fill in: image_id plus empty attribute columns "
                             "(never overwrites a file)")
    parser.add_argument("--template-columns", default="sex,age", metavar="A,B",
                        help="attribute columns of the metadata template (default sex,age)")
    coco = parser.add_argument_group("COCO keypoints (a .json --truth; see docs/formats.md)")
    coco.add_argument("--category", metavar="NAME", help="category to audit when several have keypoints")
    coco.add_argument("--instance", choices=("only", "largest"), default="only",
                      help="several instances per image: refuse (only, default) or keep the largest ground-truth "
                           "area and the highest prediction score (largest)")
    coco.add_argument("--image-key", choices=("id", "file_stem"), default="id",
                      help="image_id of the output: COCO image id (default) or file_name without folder/extension")
    coco.add_argument("--metadata-from-coco", metavar="PATH",
                      help="also write metadata (image_id plus extra fields of the images entries, e.g. sex, age)")
    from fairlandmark.cli._common import add_dicom_arguments

    add_dicom_arguments(parser.add_argument_group("pixel spacing from DICOM headers (instead of --spacing-mm)"))
    parser.set_defaults(handler=_run)
