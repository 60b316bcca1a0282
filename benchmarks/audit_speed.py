"""Speed of the whole audit at paper scale, against what users write today.

Study: 10 runs x 300 test images x 37 keypoints; attributes sex (2 groups),
age group (2) and their intersection (4); 10000 permutations, 2000 bootstrap
resamples, 1000 randomized-baseline repeats. Target: <= 2 s wall on 2 cores.

Baselines, timed on a slice and extrapolated to the same work:
(a) a per-keypoint, per-permutation loop with ``fairlearn.metrics.MetricFrame``
    (``pip install -e '.[bench]'``; skipped if fairlearn is absent);
(b) ``scipy.stats.permutation_test`` run per keypoint and attribute.

Run: ``python benchmarks/audit_speed.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd

import fairlandmark
from fairlandmark.stats.significance import SignificanceOptions

R, N, K = 10, 300, 37
B_PERM, B_BOOT, B_BASE = 10000, 2000, 1000


def make_study(seed=0):
    rng = np.random.default_rng(seed)
    n = R * N
    true = rng.uniform(0, 2000, size=(n, K, 2))
    pred = true + rng.normal(0, 12, size=(n, K, 2))
    sex = rng.choice(["F", "M"], n)
    age = rng.choice(["young", "old"], n)
    ids = np.array([f"img{i:05d}" for i in range(n)])
    runs = np.repeat(np.arange(R), N)
    preds = pd.DataFrame({
        "run": np.repeat(runs, K), "image_id": np.repeat(ids, K), "keypoint": np.tile(np.arange(1, K + 1), n),
        "pred_x": pred[..., 0].ravel(), "pred_y": pred[..., 1].ravel(),
        "true_x": true[..., 0].ravel(), "true_y": true[..., 1].ravel(),
    })
    meta = pd.DataFrame({"image_id": ids, "sex": sex, "age_group": age})
    errors = np.hypot(*(pred - true).transpose(2, 0, 1)) * 0.1
    return preds, meta, errors, runs, sex, age


def time_audit(preds_path, meta_path, repeats=1, curves=True):
    options = SignificanceOptions(permutations=B_PERM, bootstrap=B_BOOT, baseline_repeats=B_BASE, seed=0)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fairlandmark.audit(preds_path, meta_path, attributes=["sex", "age_group"], spacing_mm=0.1,
                           significance=options, curves=curves)
        best = min(best, time.perf_counter() - start)
    return best


def paired_ratio(preds_path, meta_path, errors, runs, sex, age, pairs, cpu=None, curves=True, each=None):
    """Whole audit against the plain numpy permutation test, alternating, ``pairs`` times; median ratio.

    Wall-clock seconds; ``cpu`` (a list) also receives the paired ratios of CPU seconds of this process
    (user + system, all threads), less sensitive to other jobs sharing the machine; ``each`` (a list) the
    wall-clock ratio of every pair.
    """
    ratios, ours, plain = [], [], []
    for _ in range(pairs):
        c0 = time.process_time()
        ours.append(time_audit(preds_path, meta_path, curves=curves))
        c1 = time.process_time()
        plain.append(time_plain_numpy(errors, runs, sex, age)[0])
        c2 = time.process_time()
        ratios.append(ours[-1] / plain[-1])
        if cpu is not None:
            cpu.append(((c1 - c0) / (c2 - c1), c1 - c0, c2 - c1))
    if each is not None:
        each.extend(ratios)
    return float(np.median(ratios)), float(np.median(ours)), float(np.median(plain))


def time_cli(preds_path, meta_path, out):
    cmd = [sys.executable, "-m", "fairlandmark.cli", "audit", preds_path, meta_path, "-a", "sex", "-a", "age_group",
           "--spacing-mm", "0.1", "--quiet", "--json", out]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def time_plain_numpy(errors, runs, sex, age, n_perm=B_PERM, batch=500, seed=0):
    """A plain numpy permutation test: DP p-values only, no bootstrap, baseline or multiple testing.

    Per run, attribute (sex, age group, their intersection) and batch of permutations: permuted labels
    (``Generator.permuted``), a one-hot group matrix times the hit matrix for the SDRs, DP as max - min,
    mean over runs, ``p = (1 + #{null >= observed}) / (1 + B)``. What a careful user writes by hand.
    """
    rng = np.random.default_rng(seed)
    hits = (errors <= 2.0).astype(np.float64)
    inter = np.char.add(np.char.add(sex.astype(str), "&"), age.astype(str))
    start = time.perf_counter()
    pvalues = []
    for attr in (sex, age, inter):
        levels, codes = np.unique(attr, return_inverse=True)
        null = np.zeros((n_perm, K))
        observed = np.zeros(K)
        for r in range(R):
            rows = runs == r
            h, c = hits[rows], codes[rows]
            onehot = (c[None, :] == np.arange(len(levels))[:, None]).astype(np.float64)
            sizes = onehot.sum(axis=1)
            sdr = onehot @ h / sizes[:, None]
            observed += (sdr.max(axis=0) - sdr.min(axis=0)) / R
            for b0 in range(0, n_perm, batch):
                perm = rng.permuted(np.broadcast_to(c, (batch, len(c))), axis=1)
                group = (perm[:, None, :] == np.arange(len(levels))[None, :, None]).astype(np.float64)
                sdr = group @ h / sizes[None, :, None]  # (batch, G, K)
                null[b0:b0 + batch] += (sdr.max(axis=1) - sdr.min(axis=1)) / R
        pvalues.append((1 + (null >= observed - 1e-12).sum(axis=0)) / (1 + n_perm))
    return time.perf_counter() - start, np.concatenate(pvalues)


def _sdr(y_true, y_pred):
    return float(np.mean(y_pred))


def time_fairlearn(errors, runs, sex, age, n_perm):
    """Per keypoint, per permutation: MetricFrame of SDR by group, DP from its difference()."""
    from fairlearn.metrics import MetricFrame

    rng = np.random.default_rng(0)
    inter = np.char.add(np.char.add(sex.astype(str), "&"), age.astype(str))
    hits = errors <= 2.0
    start = time.perf_counter()
    for _ in range(n_perm):
        for attr in (sex, age, inter):
            for k in range(K):
                dps = []
                for r in range(R):
                    rows = runs == r
                    labels = rng.permutation(attr[rows])
                    frame = MetricFrame(metrics=_sdr, y_true=hits[rows, k], y_pred=hits[rows, k],
                                        sensitive_features=labels)
                    dps.append(frame.difference())
    return (time.perf_counter() - start) / n_perm


def time_scipy(errors, runs, sex, age, n_keypoints, n_resamples):
    """scipy.stats.permutation_test per keypoint and attribute on the run-mean DP."""
    from scipy import stats

    inter = np.char.add(np.char.add(sex.astype(str), "&"), age.astype(str))
    hits = (errors <= 2.0).astype(float)
    start = time.perf_counter()
    for attr in (sex, age, inter):
        levels = np.unique(attr)
        codes = np.searchsorted(levels, attr)
        for k in range(n_keypoints):
            def statistic(labels, axis=-1):
                labels = np.asarray(labels)
                sdr = np.stack([np.stack([np.sum((labels[..., runs == r] == g) * hits[runs == r, k], axis=-1)
                                          / np.sum(labels[..., runs == r] == g, axis=-1) for g in range(len(levels))])
                                for r in range(R)])
                return np.mean(sdr.max(axis=1) - sdr.min(axis=1), axis=0)

            stats.permutation_test((codes,), statistic, permutation_type="pairings", n_resamples=n_resamples,
                                   vectorized=True, alternative="greater", random_state=0)
    elapsed = time.perf_counter() - start
    return elapsed / n_keypoints * K  # per attribute set, scaled to all keypoints


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and baseline samples")
    parser.add_argument("--ratio-only", action="store_true", help="only the paired ratio against plain numpy")
    parser.add_argument("--pairs", type=int, default=5, help="paired runs for --ratio-only (default 5)")
    parser.add_argument("--no-curves", action="store_true",
                        help="audit without the error curves (the audit as the issue first measured it)")
    args = parser.parse_args()
    preds, meta, errors, runs, sex, age = make_study()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.platform()}")
    print(f"study: {R} runs x {N} images x {K} keypoints; sex (2), age_group (2), sex&age_group (4); "
          f"{B_PERM} permutations, {B_BOOT} bootstrap, {B_BASE} baseline repeats")
    if args.ratio_only:
        with tempfile.TemporaryDirectory() as tmp:
            preds_path, meta_path = os.path.join(tmp, "preds.csv"), os.path.join(tmp, "meta.csv")
            preds.to_csv(preds_path, index=False)
            meta.to_csv(meta_path, index=False)
            cpu, each = [], []
            ratio, ours_med, plain_med = paired_ratio(preds_path, meta_path, errors, runs, sex, age, pairs=args.pairs,
                                                      cpu=cpu, curves=not args.no_curves, each=each)
        print(f"paired median: audit {ours_med:.2f} s, plain numpy {plain_med:.2f} s, ratio {ratio:.2f} "
              f"(pairs: {' '.join(f'{r:.2f}' for r in each)})")
        cpu_ratio, cpu_ours, cpu_plain = (float(np.median([c[i] for c in cpu])) for i in range(3))
        print(f"CPU seconds, paired median: audit {cpu_ours:.2f} s, plain numpy {cpu_plain:.2f} s, "
              f"ratio {cpu_ratio:.2f}; load average {os.getloadavg()[0]:.1f}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        preds_path, meta_path = os.path.join(tmp, "preds.csv"), os.path.join(tmp, "meta.csv")
        preds.to_csv(preds_path, index=False)
        meta.to_csv(meta_path, index=False)
        ours = time_audit(preds_path, meta_path, repeats=1 if args.quick else 3)
        cli = time_cli(preds_path, meta_path, os.path.join(tmp, "audit.json"))
        ratio, ours_med, plain_med = paired_ratio(preds_path, meta_path, errors, runs, sex, age,
                                                  pairs=1 if args.quick else 5)
    print(f"whole audit against a plain numpy permutation test ({B_PERM} permutations, DP p-values only), "
          f"median of paired runs: {ours_med:.2f} s against {plain_med:.2f} s, ratio {ratio:.2f}  "
          f"target <= 0.6: {'PASS' if ratio <= 0.6 else 'FAIL'}")
    print(f"fairlandmark.audit (CSV in, everything computed): {ours:.2f} s (best of runs)  target <= 2 s: "
          f"{'PASS' if ours <= 2 else 'FAIL'}")
    print(f"fairlandmark audit CLI, wall incl. interpreter start and imports: {cli:.2f} s")

    n_fl = 2 if args.quick else 5
    try:
        per_perm = time_fairlearn(errors, runs, sex, age, n_fl)
        total = per_perm * B_PERM
        print(f"(a) fairlearn MetricFrame loop: {per_perm:.2f} s per permutation (timed {n_fl}) -> "
              f"{total / 3600:.1f} h for {B_PERM} permutations; fairlandmark is {total / ours:,.0f}x faster")
    except ImportError:
        print("(a) fairlearn not installed: pip install -e '.[bench]'")
    n_kp, n_res = (2, 1000) if args.quick else (4, 2000)
    per_set = time_scipy(errors, runs, sex, age, n_kp, n_res) * (B_PERM / n_res)
    print(f"(b) scipy.stats.permutation_test per keypoint (timed {n_kp} keypoints x 3 attributes x {n_res} "
          f"resamples): {per_set:.1f} s extrapolated to 37 keypoints x {B_PERM} permutations (p-values only, "
          f"no bootstrap/baseline); fairlandmark is {per_set / ours:,.0f}x faster")


if __name__ == "__main__":
    main()
