"""Validation of the large-sample (normal) null against the permutation test, by simulation.

1. Agreement where both run: studies of ``--sizes`` images (2 runs, 37
   keypoints, sex x age group and their intersection, a planted sex effect on
   8 keypoints), p-values of the DP and of the MRE gap and Westfall-Young
   adjusted p-values from 2000 permutations and from 2000 normal draws:
   largest and mean absolute difference; the same for the error-curve test
   (which follows the DP test's null).
2. Type-I error of the normal null: ``--null`` studies of 2000 images
   (1 run, 10 keypoints) with no effect; share of raw p <= 0.05 over all
   tests, and the family-wise error (share of studies where any
   Westfall-Young adjusted p <= 0.05); the same for the curve test.

Run: ``python benchmarks/asymptotic_validation.py``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from fairlandmark import audit_arrays
from fairlandmark.stats.significance import SignificanceOptions


def study(rng, n_images, n_kp, runs, effect):
    n = n_images * runs
    sex = rng.choice(["F", "M"], n)
    age = rng.choice(["young", "old"], n, p=[0.35, 0.65])
    scale = np.ones((n, n_kp))
    scale[:, :8] += effect * (sex == "M")[:, None]
    true = np.zeros((n, n_kp, 2))
    pred = true + rng.normal(0.0, 1.4, size=(n, n_kp, 2)) * scale[..., None]
    return pred, true, {"sex": sex, "age": age}, np.repeat(np.arange(runs), n_images)


def run(data, method, b, seed=0):
    pred, true, groups, runs = data
    options = SignificanceOptions(permutations=b, bootstrap=0, baseline_repeats=0, seed=seed, method=method,
                                  correction="westfall-young")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return audit_arrays(pred, true, groups, spacing_mm=1.0, runs=runs, min_group_size=5,
                            significance=options)


def curve_column(result, name):
    """One curve-test column over attributes x keypoints."""
    return np.concatenate([result.curves.tests[a][name] for a in result.curves.attributes])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--null", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(20261130)
    for n in args.sizes:
        data = study(rng, n, 37, 2, effect=0.03)
        start = time.perf_counter()
        perm = run(data, "permutation", 2000)
        t_perm = time.perf_counter() - start
        start = time.perf_counter()
        norm = run(data, "normal", 2000)
        t_norm = time.perf_counter() - start
        parts = []
        for col in ("p_value", "mre_gap_p", "p_westfall_young"):
            d = np.abs(perm.per_keypoint[col].to_numpy() - norm.per_keypoint[col].to_numpy())
            parts.append(f"{col}: max |diff| {np.nanmax(d):.3f}, mean {np.nanmean(d):.4f}")
        for col in ("p_value", "p_westfall_young"):
            d = np.abs(curve_column(perm, col) - curve_column(norm, col))
            parts.append(f"curve {col}: max |diff| {np.nanmax(d):.3f}, mean {np.nanmean(d):.4f}")
        print(f"{n} images x 2 runs x 37 keypoints (111 tests): {'; '.join(parts)}; "
              f"time permutation {t_perm:.1f} s, normal {t_norm:.1f} s", flush=True)
    raw, fwer, curve_raw, curve_fwer = [], [], [], []
    for rep in range(args.null):
        res = run(study(rng, 2000, 10, 1, effect=0.0), "normal", 500, seed=rep)
        pk = res.per_keypoint
        raw.append(pk["p_value"].to_numpy() <= 0.05)
        fwer.append(bool((pk["p_westfall_young"] <= 0.05).any()))
        curve_raw.append(curve_column(res, "p_value") <= 0.05)
        curve_fwer.append(bool((curve_column(res, "p_westfall_young") <= 0.05).any()))
    raw, curve_raw = np.concatenate(raw), np.concatenate(curve_raw)
    print(f"type-I, normal null, {args.null} null studies of 2000 images x 10 keypoints x 3 attributes: "
          f"raw p <= 0.05 in {raw.mean():.4f} of {raw.size} tests (alpha 0.05, 2 s.e. {2 * np.sqrt(0.0475 / raw.size):.4f}); "
          f"family-wise (any Westfall-Young p <= 0.05) {np.mean(fwer):.3f} of {len(fwer)} studies "
          f"(2 s.e. {2 * np.sqrt(0.0475 / len(fwer)):.3f})")
    print(f"type-I, curve test on the normal null, same studies: raw p <= 0.05 in {curve_raw.mean():.4f} of "
          f"{curve_raw.size} tests; family-wise {np.mean(curve_fwer):.3f} of {len(curve_fwer)} studies")


if __name__ == "__main__":
    main()
