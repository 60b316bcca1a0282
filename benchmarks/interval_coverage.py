"""Coverage of the intervals beside DP, by simulation (figures recorded in docs/intervals.md).

For each scenario, studies are simulated with a known per-keypoint SDR for
each group; every keypoint is an independent replicate. Reported:

* ``gap CI`` coverage: how often the 95% interval of the signed gap of the
  reported pair covers the true gap of that pair (oriented as reported);
* ``contains``: how often that interval contains its own estimate;
* ``DP CI contains DP``: the same for the old percentile interval of DP.

Run: ``python benchmarks/interval_coverage.py [--studies 40]``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import fairlandmark
from fairlandmark.exceptions import FairlandmarkWarning

SCENARIOS = [
    # name, SDR per group, runs
    ("2 groups, zero gap, 1 run", (0.7, 0.7), 1),
    ("2 groups, gap 0.15, 1 run", (0.7, 0.55), 1),
    ("2 groups, zero gap, 10 runs", (0.7, 0.7), 10),
    ("2 groups, gap 0.15, 10 runs", (0.7, 0.55), 10),
    ("4 groups, zero gap, 1 run", (0.7, 0.7, 0.7, 0.7), 1),
    ("4 groups, gap 0.15, 1 run", (0.7, 0.7, 0.7, 0.55), 1),
]


def simulate(rng, sdr, runs, per_group_run, keypoints):
    groups = np.repeat(np.arange(len(sdr)), per_group_run * runs)
    run = np.tile(np.repeat(np.arange(runs), per_group_run), len(sdr))
    hit = rng.random((len(groups), keypoints)) < np.asarray(sdr)[groups][:, None]
    true = np.zeros((len(groups), keypoints, 2))
    pred = true.copy()
    pred[..., 0] = np.where(hit, 1.0, 3.0)
    return pred, true, np.array([f"g{g}" for g in groups]), run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--studies", type=int, default=40)
    parser.add_argument("--keypoints", type=int, default=25)
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()
    print(f"{args.studies} studies x {args.keypoints} keypoints per scenario, {args.bootstrap} bootstrap resamples")
    print("| scenario | gap CI coverage | gap CI contains gap | DP CI contains DP | seconds |")
    print("|---|---|---|---|---|")
    for name, sdr, runs in SCENARIOS:
        rng = np.random.default_rng(11)
        per_group_run = 80 if runs == 1 else 40
        covered, contains, dp_contains = [], [], []
        start = time.perf_counter()
        for i in range(args.studies):
            pred, true, groups, run = simulate(rng, sdr, runs, per_group_run, args.keypoints)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FairlandmarkWarning)
                pk = fairlandmark.audit_arrays(
                    pred, true, {"group": groups}, runs=run, spacing_mm=1.0, min_group_size=5,
                    significance={"permutations": 0, "baseline_repeats": 0, "bootstrap": args.bootstrap, "seed": i},
                ).per_keypoint
            levels = {f"g{g}": p for g, p in enumerate(sdr)}
            truth = np.array([levels[a] - levels[b] for a, b in pk["pair"].str.split(" vs ")])
            covered += list((pk["gap_ci_low"] <= truth) & (truth <= pk["gap_ci_high"]))
            contains += list((pk["gap_ci_low"] <= pk["gap"]) & (pk["gap"] <= pk["gap_ci_high"]))
            dp_contains += list((pk["dp_ci_low"] <= pk["dp"]) & (pk["dp"] <= pk["dp_ci_high"]))
        seconds = time.perf_counter() - start
        print(f"| {name} | {np.mean(covered):.3f} | {np.mean(contains):.3f} | {np.mean(dp_contains):.3f} | "
              f"{seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
