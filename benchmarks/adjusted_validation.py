"""Validate covariate-adjusted disparities by simulation, and time them.

Usage: PYTHONPATH=. python benchmarks/adjusted_validation.py [--studies 40]

1. Type-I error: no group effect, a site effect and sex imbalanced across sites; share of raw adjusted p < 0.05
   over independent keypoints (should be <= 0.05 within Monte-Carlo error); one run, then three runs of the
   same images (rows of an image correlated).
2. Confounded gap: the gap is the site's; share of studies whose keypoint is flagged raw (permutation test) and
   after adjustment.
3. Real gap plus an irrelevant covariate: share flagged after adjustment (power).
4. Time of an adjusted audit: 400 images, 19 keypoints, sex x age group (3 attributes), 2 covariates.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from fairlandmark import audit_arrays
from fairlandmark.exceptions import FairlandmarkWarning
from fairlandmark.inputs.demo_data import make_confounded_errors

QUICK = dict(permutations=999, bootstrap=0, baseline_repeats=0)


def _arrays(errors):
    true = np.zeros(errors.shape + (2,))
    pred = true.copy()
    pred[..., 0] = errors
    return pred, true


_study = make_confounded_errors  # the same generator as tests/test_adjusted.py


def _audit(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairlandmarkWarning)
        return audit_arrays(*args, **kwargs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=40)
    args = parser.parse_args()
    rng = np.random.default_rng(2026)

    p_err, p_hit = [], []
    for _ in range(max(args.studies // 4, 1)):
        sex, site, errors = _study(rng, 300, 100, site_effect=1.0, imbalance=0.8)
        table = _audit(*_arrays(errors), {"sex": sex}, spacing_mm=1.0, covariates={"site": site},
                       adjust=["site"], significance=False).adjusted.table
        p_err += list(table["p_value"])
        p_hit += list(table["sdr_p_value"])
    p_err, p_hit = np.array(p_err), np.array(p_hit)
    print(f"type-I error at 0.05 over {len(p_err)} null keypoints: error model {np.mean(p_err < 0.05):.3f}, "
          f"hit model {np.nanmean(p_hit < 0.05):.3f} (MC sd {np.sqrt(0.05 * 0.95 / len(p_err)):.3f})")

    p_err, p_hit = [], []
    runs = 3
    for _ in range(max(args.studies // 8, 1)):
        sex, site, errors = _study(rng, 200, 100, site_effect=1.0, imbalance=0.8)
        repeated = np.abs(np.tile(errors, (runs, 1)) * rng.lognormal(0, 0.2, (runs * 200, 100)))
        table = _audit(*_arrays(repeated), {"sex": np.tile(sex, runs)}, spacing_mm=1.0,
                       runs=np.repeat(np.arange(runs), 200), image_ids=np.tile(np.arange(200).astype(str), runs),
                       covariates={"site": np.tile(site, runs)}, adjust=["site"], significance=False).adjusted.table
        p_err += list(table["p_value"])
        p_hit += list(table["sdr_p_value"])
    p_err, p_hit = np.array(p_err), np.array(p_hit)
    print(f"type-I error at 0.05, 3 runs of the same 200 images (images as clusters), {len(p_err)} null keypoints: "
          f"error model {np.mean(p_err < 0.05):.3f}, hit model {np.nanmean(p_hit < 0.05):.3f} "
          f"(MC sd {np.sqrt(0.05 * 0.95 / len(p_err)):.3f})")

    raw = adj = 0
    for i in range(args.studies):
        sex, site, errors = _study(rng, 400, 1, site_effect=1.0, imbalance=0.85)
        pk = _audit(*_arrays(errors), {"sex": sex}, spacing_mm=1.0, covariates={"site": site}, adjust=["site"],
                    significance=dict(QUICK, seed=i)).per_keypoint.iloc[0]
        raw += bool(pk["significant"])
        adj += bool(pk["adjusted_sdr_significant"])
    print(f"confounded gap (site effect, 85% of F at the worse site), {args.studies} studies: flagged raw "
          f"{raw / args.studies:.3f}, after adjustment {adj / args.studies:.3f}")

    kept = 0
    for i in range(args.studies):
        sex, site, errors = _study(rng, 400, 1, gap=0.8)
        pk = _audit(*_arrays(errors), {"sex": sex}, spacing_mm=1.0,
                    covariates={"site": site, "noise": rng.normal(size=400)}, adjust=["site", "noise"],
                    significance=dict(QUICK, seed=i)).per_keypoint.iloc[0]
        kept += bool(pk["adjusted_sdr_significant"])
    print(f"real gap (F errors x1.8) adjusted for an irrelevant site and noise, {args.studies} studies: "
          f"flagged after adjustment {kept / args.studies:.3f}")

    n, k = 400, 19
    sex = rng.choice(np.array(["F", "M"]), n)
    age = rng.choice(np.array(["child", "adult"]), n)
    errors = rng.gamma(2.0, 0.8, (n, k))
    cov = {"site": rng.choice(np.array(["A", "B", "C"]), n), "spacing": rng.uniform(0.08, 0.12, n)}
    _audit(*_arrays(errors[:40, :1]), {"sex": sex[:40]}, spacing_mm=1.0, covariates={"site": cov["site"][:40]},
           adjust=["site"], significance=False)  # warm-up: imports
    start = time.perf_counter()
    _audit(*_arrays(errors), {"sex": sex, "age": age}, spacing_mm=1.0, covariates=cov, significance=False)
    plain = time.perf_counter() - start
    start = time.perf_counter()
    _audit(*_arrays(errors), {"sex": sex, "age": age}, spacing_mm=1.0, covariates=cov, adjust=["site", "spacing"],
           significance=False)
    adjusted = time.perf_counter() - start
    runs = 3
    repeated = np.abs(np.tile(errors, (runs, 1)) + rng.normal(0, 0.2, (runs * n, k)))
    start = time.perf_counter()
    _audit(*_arrays(repeated), {"sex": np.tile(sex, runs), "age": np.tile(age, runs)}, spacing_mm=1.0,
           runs=np.repeat(np.arange(runs), n), image_ids=np.tile(np.arange(n).astype(str), runs),
           covariates={c: np.tile(v, runs) for c, v in cov.items()}, adjust=["site", "spacing"], significance=False)
    three = time.perf_counter() - start
    print(f"time, 400 images x 19 keypoints x 3 attributes (sex, age, sex&age), no significance: audit {plain:.2f} s; "
          f"with --adjust site --adjust spacing {adjusted:.2f} s; the same on 3 runs of the same images "
          f"{three:.2f} s (3 x 19 x 2 models each)")


if __name__ == "__main__":
    main()
