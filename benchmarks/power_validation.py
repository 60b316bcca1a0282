"""Validate the power plan: plant the planned minimal detectable DP in simulated studies of the same design,
run the real audit (permutation test + correction) on each, and count how often the planted keypoint is flagged.

Usage: PYTHONPATH=. python benchmarks/power_validation.py [--studies 200] [--quick]

Each design's flagged share should be the requested power (0.8) within Monte-Carlo error (sd 0.028 at 200 studies).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from fairlandmark import audit_arrays
from fairlandmark.exceptions import FairlandmarkWarning
from fairlandmark.stats.power import PlanDesign, detectable_dp, planted_sdr

__all__ = ["simulate_flag_rate", "DESIGNS"]

# name: (group sizes (distinct images per group), runs, shared images, keypoints, SDR, correction, permutations)
DESIGNS = {
    "2 groups, 1 run, SDR 0.7, holm, 5 tests": ((100, 100), 1, False, 5, 0.7, "holm", 999),
    "2 unequal groups, 1 run, SDR 0.85, bh, 10 tests": ((150, 60), 1, False, 10, 0.85, "bh", 1999),
    "3 groups, 1 run, SDR 0.6, bh, 5 tests": ((80, 60, 40), 1, False, 5, 0.6, "bh", 999),
    "2 groups, 3 disjoint folds, SDR 0.75, holm, 5 tests": ((90, 90), 3, False, 5, 0.75, "holm", 999),
    "2 groups, 3 runs on the same images, SDR 0.75, bh, 5 tests": ((80, 80), 3, True, 5, 0.75, "bh", 999),
    "2 groups, 1 run, SDR 0.7, westfall-young, 5 tests": ((100, 100), 1, False, 5, 0.7, "westfall-young", 999),
}


def _study(rng, sizes, n_runs, shared, n_keypoints, sdr_by_group_kp0, sdr):
    """Errors of one simulated study: 1 mm for a hit, 3 mm for a miss (threshold 2 mm)."""
    labels = np.repeat(np.array([f"g{i}" for i in range(len(sizes))]), sizes)
    n = len(labels)
    if shared:
        hits = rng.random((n, n_keypoints)) < sdr
        hits[:, 0] = rng.random(n) < sdr_by_group_kp0[np.repeat(np.arange(len(sizes)), sizes)]
        errors = np.tile(np.where(hits, 1.0, 3.0), (n_runs, 1))
        ids = np.tile(np.arange(n).astype(str), n_runs)
        runs = np.repeat(np.arange(n_runs), n)
        groups = np.tile(labels, n_runs)
    else:
        hits = rng.random((n, n_keypoints)) < sdr
        hits[:, 0] = rng.random(n) < sdr_by_group_kp0[np.repeat(np.arange(len(sizes)), sizes)]
        errors = np.where(hits, 1.0, 3.0)
        ids = np.arange(n).astype(str)
        # folds: images of each group dealt round-robin over the runs
        runs = np.concatenate([np.arange(s) % n_runs for s in sizes])
        groups = labels
    true = np.zeros(errors.shape + (2,))
    pred = true.copy()
    pred[..., 0] = errors
    return pred, true, groups, runs, ids


def simulate_flag_rate(sizes, n_runs, shared, n_keypoints, sdr, correction, permutations, *, n_studies=200,
                       power=0.8, alpha=0.05, seed=0):
    """(planned MDD, share of studies flagging the planted keypoint)."""
    sizes = np.asarray(sizes)
    per_run = sizes if shared else sizes / n_runs
    design = PlanDesign(np.tile(per_run, (n_runs, 1)), shared)
    mdd = float(detectable_dp(sdr, design, power=power, alpha=alpha, n_tests=n_keypoints, correction=correction,
                              permutations=permutations)[0])
    truth = planted_sdr(np.array([sdr]), np.array([mdd]), design)[0]
    rng = np.random.default_rng(seed)
    flagged = 0
    for i in range(n_studies):
        pred, true, groups, runs, ids = _study(rng, sizes, n_runs, shared, n_keypoints, truth, sdr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FairlandmarkWarning)
            res = audit_arrays(pred, true, {"g": groups}, spacing_mm=1.0, runs=runs, image_ids=ids,
                               min_group_size=2,
                               significance=dict(permutations=permutations, bootstrap=0, baseline_repeats=0,
                                                 correction=correction, alpha=alpha, seed=i))
        flagged += bool(res.per_keypoint["significant"].iloc[0])
    return mdd, flagged / n_studies


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="first design only")
    parser.add_argument("--only", default=None, metavar="I,J", help="designs by number (1-based), e.g. 3,4")
    args = parser.parse_args()
    items = list(DESIGNS.items())[:1] if args.quick else list(DESIGNS.items())
    if args.only:
        items = [items[int(i) - 1] for i in args.only.split(",")]
    print(f"| design | planned MDD | flagged share ({args.studies} studies) | seconds |")
    print("|---|---|---|---|")
    for name, spec in items:
        start = time.perf_counter()
        mdd, rate = simulate_flag_rate(*spec, n_studies=args.studies)
        print(f"| {name} | {mdd:.3f} | {rate:.3f} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
