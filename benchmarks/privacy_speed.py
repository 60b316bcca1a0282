"""Speed of the privacy analysis with its defaults, against scikit-learn's permutation_test_score.

Study: the demo study (``fairlandmark.inputs.demo_data.make_demo_study``, 910
images x 10 hold-out runs, 37 keypoints); target age binned at 14, ``within``
sex (two analyses); defaults: forest of 100 trees, 5 folds over images, 200
permutations, permutation importance with 5 repeats.

Compared, in the same run, on the same features, forest and folds:
``sklearn.model_selection.permutation_test_score(..., n_permutations=200)``
for each of the two analyses, timed with ``--sklearn-permutations`` (default
4) permutations and extrapolated linearly to 200 (its cost is one
cross-validation per permutation plus one). Target (issue 20): ours <= 0.1x.

Run: ``python benchmarks/privacy_speed.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import numpy as np

from fairlandmark.audit import prepare_study
from fairlandmark.inputs.demo_data import make_demo_study
from fairlandmark.stats.privacy import DEFAULT_PERMUTATIONS, attribute_inference, default_estimator, row_folds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sklearn-permutations", type=int, default=4)
    args = parser.parse_args()
    from sklearn.model_selection import permutation_test_score

    preds, meta = make_demo_study()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = prepare_study(preds, meta, attributes=["age", "sex"], bins={"age": [14]}, intersection=False)
        start = time.perf_counter()
        res = attribute_inference(study, target="age", within="sex", seed=0)
        ours = time.perf_counter() - start
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M')}; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"ours (defaults: {res.settings['permutation_test']} test, {DEFAULT_PERMUTATIONS} permutations): "
          f"{ours:.1f} s; p-values {res.scores['p_value'].round(4).tolist()}")

    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline

    k = args.sklearn_permutations
    total = 0.0
    sex, age = study.coding.base_codes["sex"], study.coding.base_codes["age"]
    for level in np.unique(sex):
        rows = np.flatnonzero(sex == level)
        X, y = np.asarray(study.errors, dtype=float)[rows], age[rows]
        folds = row_folds(np.asarray(study.row_image)[rows], y, n_splits=5, seed=0)  # the folds ours uses
        pipe = Pipeline([("impute", SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)),
                         ("classifier", default_estimator(seed=0))])
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            permutation_test_score(pipe, X, y, cv=folds, n_permutations=k, scoring="balanced_accuracy",
                                   random_state=0)
        total += (time.perf_counter() - start) * (DEFAULT_PERMUTATIONS + 1) / (k + 1)
    print(f"sklearn permutation_test_score, {DEFAULT_PERMUTATIONS} permutations, both analyses (timed {k}, "
          f"extrapolated): {total:.1f} s")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print(f"ratio ours / sklearn: {ours / total:.3f}  target <= 0.1: {'PASS' if ours <= 0.1 * total else 'FAIL'}")


if __name__ == "__main__":
    main()
