"""Calibration of the curve-gap test on real errors with null group labels.

The ISBI 2015 junior-vs-senior differences are a real distribution of landmark
errors (400 cephalograms, 19 keypoints). Group labels drawn at random are
unrelated to the errors, so every rejection is a false one. For each repeat:
random sex (two groups), the curve-gap test on the default grid with B
permutations; we record the share of raw p-values <= alpha (per-test type-I
error) and the share of data sets with any Holm-adjusted p < alpha
(family-wise error, which Holm controls). Also the time per test.

Usage::

    python benchmarks/curves_calibration.py [--repeats 200] [--permutations 199] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fairlandmark.inputs.convert import convert
from fairlandmark.inputs.study import prepare_study
from fairlandmark.stats.curves import error_curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--permutations", type=int, default=199)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    args = parser.parse_args()
    data = Path(args.data)
    long = convert(data / "isbi2015_all_junior.csv", data / "isbi2015_all_senior.csv", spacing_mm=1.0)
    ids = sorted(long["image_id"].unique())
    rng = np.random.default_rng(2026)
    raw, fwer, seconds = [], [], []
    for rep in range(args.repeats):
        meta = pd.DataFrame({"image_id": ids, "sex": rng.choice(["F", "M"], len(ids))})
        study = prepare_study(long, meta, attributes=["sex"])
        start = time.perf_counter()
        res = error_curves(study, primary=2.0, significance=dict(permutations=args.permutations, seed=rep,
                                                                 correction="holm"))
        seconds.append(time.perf_counter() - start)
        raw.append(res.tests["sex"]["p_value"])
        fwer.append(bool((res.tests["sex"]["p_adjusted"] < args.alpha).any()))
    raw = np.concatenate(raw)
    print(f"{args.repeats} null data sets x 19 keypoints, {args.permutations} permutations, grid 0.5-6 mm (12 points)")
    for a in (0.01, 0.05, 0.10):
        print(f"  P(raw p <= {a:g}) = {np.mean(raw <= a):.4f}  (n = {len(raw)})")
    print(f"  family-wise error (any Holm-adjusted p < {args.alpha:g}) = {np.mean(fwer):.3f}")
    print(f"  seconds per test (400 images, 19 keypoints): median {np.median(seconds):.3f}")


if __name__ == "__main__":
    main()
