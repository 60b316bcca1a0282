"""Validation by simulation of the privacy permutation tests: type-I error and power, fixed-model against refit.

Data: ``--images`` images in ``--runs`` runs (every image in every run, so an
image has several feature rows that must move together), 6 keypoints of
gamma(2, 1) errors, a balanced binary target; under the alternative the errors
of 2 keypoints are shifted by ``delta`` for one class. Classifier: a random
forest of ``--trees`` trees (fewer than the default 100 to keep the simulation
affordable; the argument does not depend on the forest).

* type-I error: ``--null`` null datasets, fixed-model test with 199
  permutations (and ``--null-refit`` datasets with the refit test, 19
  permutations): share of p <= 0.05 and of p <= 0.10, with a 95 % binomial
  interval;
* power: ``--power`` datasets per shift, the same datasets through both
  tests with the same 19 permutations (so the same p-value resolution), and
  the fixed-model test with 199: share of p <= 0.05.

* ``--variance N``: instead, N null datasets through the fixed-model test
  only, comparing the variance of the observed score across datasets with the
  mean variance of the fixed-model null (a ratio above 1 means the null is too
  narrow: the test is anti-conservative).

* ``--merge``: every candidate test on the same datasets (``--null`` null
  datasets, ``--power`` per shift in ``--deltas``): the per-fold exact tests
  merged by each rule of ``merge_pvalues`` (valid under any dependence), the
  fixed-model screen, the chained test (Fisher, and Stouffer for comparison)
  and, on the shifted datasets, the refit test with ``--refit-perm``
  permutations; share of p <= 0.05 (and 0.10 under the null). ``--out`` keeps
  every p-value as CSV.

Run: ``python benchmarks/privacy_validation.py`` (about 20 minutes on a busy 2-core machine);
``python benchmarks/privacy_validation.py --merge --null 300 --power 0`` and
``... --merge --null 0 --power 15 --deltas 0.7 0.5 --refit-perm 39`` for the figures in docs/privacy.md.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd

from fairlandmark.stats.privacy import attribute_inference, default_estimator


def dataset(rng, n_images, runs, delta, k=6):
    ids = np.array([f"img{i:04d}" for i in range(n_images)])
    target = np.where(rng.permutation(n_images) % 2 == 0, "a", "b")
    frames = []
    for r in range(runs):
        err = rng.gamma(2.0, 1.0, size=(n_images, k))
        err[target == "a", :2] += delta
        frames.append(pd.DataFrame({"run": str(r), "image_id": np.repeat(ids, k),
                                    "keypoint": np.tile(np.arange(1, k + 1), n_images), "error_mm": err.ravel()}))
    return pd.concat(frames, ignore_index=True), pd.DataFrame({"image_id": ids, "group": target})


def p_value(preds, meta, test, n_perm, trees, seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = attribute_inference(preds, meta, target="group", n_permutations=n_perm, n_repeats=1, seed=seed,
                                  estimator=default_estimator(n_estimators=trees, seed=seed), permutation_test=test)
    return float(res.scores["p_value"].iloc[0])


def rate(ps, level):
    ps = np.asarray(ps)
    x, n = int(np.sum(ps <= level)), len(ps)
    from scipy.stats import binomtest

    ci = binomtest(x, n).proportion_ci(0.95)
    return f"{x / n:.3f} ({x}/{n}; 95% CI {ci.low:.3f}-{ci.high:.3f})"


def variance_check(n, images, runs, trees, seed=99):
    """Variance of the observed fixed-model score across null datasets against the null's own variance."""
    rng = np.random.default_rng(seed)
    observed, null_var, ps = [], [], []
    for s in range(n):
        preds, meta = dataset(rng, images, runs, 0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = attribute_inference(preds, meta, target="group", n_permutations=199, n_repeats=1, seed=s,
                                      estimator=default_estimator(n_estimators=trees, seed=s),
                                      permutation_test="fixed-model")
        row = res.scores.iloc[0]
        observed.append(row["balanced_accuracy"])
        null_var.append(row["null_std"] ** 2)
        ps.append(row["p_value"])
    o, v, p = np.array(observed), np.array(null_var), np.array(ps)
    print(f"{n} null datasets: variance of the observed score {o.var(ddof=1):.5f}, mean null variance "
          f"{v.mean():.5f}, ratio {o.var(ddof=1) / v.mean():.2f}; p <= 0.05 in {np.mean(p <= 0.05):.3f}, "
          f"p <= 0.10 in {np.mean(p <= 0.10):.3f}")


# -- per-fold exact tests merged under arbitrary dependence (issue 20, target 5) ------------------------------------


def _pipe(trees, seed):
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline

    return Pipeline([("impute", SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)),
                     ("classifier", default_estimator(n_estimators=trees, seed=seed))])


def merge_methods(preds, meta, trees, seed, n_refit, n_fold_perm=199):
    """p-values of every candidate test on one dataset: merged per-fold tests, fixed-model, forward chaining, refit."""
    from scipy.stats import chi2, norm
    from sklearn.base import clone
    from sklearn.metrics import balanced_accuracy_score

    from fairlandmark.stats.privacy import MERGE_RULES, fold_permutation_pvalues, merge_pvalues, row_folds

    wide = preds.pivot_table(index=["run", "image_id"], columns="keypoint", values="error_mm").reset_index()
    X = wide.drop(columns=["run", "image_id"]).to_numpy(float)
    row_image = wide["image_id"].to_numpy(str)
    images, image_of_row = np.unique(row_image, return_inverse=True)
    label = meta.set_index("image_id").loc[images, "group"].to_numpy()
    image_y = (label == "b").astype(int)
    y = image_y[image_of_row]
    folds = row_folds(row_image, y, n_splits=5, seed=seed)
    pipe = _pipe(trees, seed)
    preds_k = [clone(pipe).fit(X[tr], y[tr]).predict(X[te]) for tr, te in folds]
    out = {}
    rng = np.random.default_rng([seed, 1])
    p, obs, null = fold_permutation_pvalues(folds, preds_k, y, image_of_row, n_fold_perm, rng)
    for rule in MERGE_RULES:
        out[rule] = merge_pvalues(p, rule)
    # the old fixed-model test: the mean over folds against the mean of the within-fold nulls
    out["fixed-model"] = float((1 + np.sum(null.mean(axis=1) >= obs.mean() - 1e-12)) / (1 + n_fold_perm))
    # forward chaining: fold k tested with a model fitted on folds < k only -> sequentially valid p-values
    pf, pp = [], []
    for k in range(1, len(folds)):
        train = np.concatenate([folds[j][1] for j in range(k)])
        test = folds[k][1]
        model = clone(pipe).fit(X[train], y[train])
        pred = model.predict(X[test])
        proba = np.zeros((len(test), 2))
        proba[:, model.classes_] = model.predict_proba(X[test])
        pk, _, _ = fold_permutation_pvalues([(train, test)], [pred], y, image_of_row, n_fold_perm, rng)
        pf.append(pk[0])
        pk, _, _ = fold_permutation_pvalues([(train, test)], [proba], y, image_of_row, n_fold_perm, rng)
        pp.append(pk[0])
    pf = np.array(pf)
    out["chain-proba-fisher"] = float(chi2.sf(-2 * np.sum(np.log(pp)), 2 * len(pp)))
    out["chain-stouffer"] = float(norm.sf(np.sum(norm.isf(pf)) / np.sqrt(len(pf))))
    out["chain-fisher"] = float(chi2.sf(-2 * np.sum(np.log(pf)), 2 * len(pf)))
    if n_refit:
        observed = np.mean([balanced_accuracy_score(y[te], pr) for (_, te), pr in zip(folds, preds_k)])
        hits = 0
        for _ in range(n_refit):
            yp = rng.permutation(image_y)[image_of_row]
            s = np.mean([balanced_accuracy_score(yp[te], clone(pipe).fit(X[tr], yp[tr]).predict(X[te]))
                         for tr, te in folds])
            hits += s >= observed - 1e-12
        out["refit"] = (1 + hits) / (1 + n_refit)
    return out


def merge_study(args):
    rng = np.random.default_rng(args.sim_seed)
    start = time.perf_counter()
    print(f"{args.images} images x {args.runs} runs, 6 keypoints, forest of {args.trees} trees, 5 folds; "
          f"per-fold tests 199 permutations, refit {args.refit_perm}", flush=True)
    rows = []
    for s in range(args.null):
        r = merge_methods(*dataset(rng, args.images, args.runs, 0.0), args.trees, s, 0)
        rows.append({"delta": 0.0, **r})
    for delta in args.deltas:
        for s in range(args.power):
            r = merge_methods(*dataset(rng, args.images, args.runs, delta), args.trees, s, args.refit_perm)
            rows.append({"delta": delta, **r})
            if args.out:
                pd.DataFrame(rows).to_csv(args.out, index=False)
        print(f"  shift {delta} done, {time.perf_counter() - start:.0f} s", flush=True)
    frame = pd.DataFrame(rows)
    if args.out:
        frame.to_csv(args.out, index=False)
    for delta, part in frame.groupby("delta"):
        what = "type-I" if delta == 0 else f"power at shift {delta}"
        print(f"{what} ({len(part)} datasets), share p <= 0.05:")
        for col in part.columns.drop("delta"):
            ps = part[col].dropna()
            if len(ps):
                print(f"  {col:15s} {rate(ps, 0.05)}" + (f"; at 0.10: {rate(ps, 0.10)}" if delta == 0 else ""))
    print(f"{time.perf_counter() - start:.0f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--trees", type=int, default=25)
    parser.add_argument("--null", type=int, default=200)
    parser.add_argument("--null-refit", type=int, default=30)
    parser.add_argument("--power", type=int, default=25)
    parser.add_argument("--deltas", type=float, nargs="+", default=[0.4, 0.7])
    parser.add_argument("--variance", type=int, default=0, metavar="N", help="only the variance check, N datasets")
    parser.add_argument("--merge", action="store_true",
                        help="compare the merged per-fold tests with the refit test (--null null datasets, --power "
                             "per shift, refit with --refit-perm permutations)")
    parser.add_argument("--refit-perm", type=int, default=99)
    parser.add_argument("--sim-seed", type=int, default=20261130)
    parser.add_argument("--out", default=None, help="CSV of every p-value (--merge)")
    args = parser.parse_args()
    if args.merge:
        merge_study(args)
        return
    if args.variance:
        variance_check(args.variance, args.images, args.runs, args.trees)
        return
    rng = np.random.default_rng(20261130)
    start = time.perf_counter()
    print(f"{args.images} images x {args.runs} runs, 6 keypoints, forest of {args.trees} trees, 5 folds")
    fixed = [p_value(*dataset(rng, args.images, args.runs, 0.0), "fixed-model", 199, args.trees, s)
             for s in range(args.null)]
    print(f"type-I fixed-model (199 perm.): alpha 0.05 -> {rate(fixed, 0.05)}; alpha 0.10 -> {rate(fixed, 0.10)}",
          flush=True)
    refit = [p_value(*dataset(rng, args.images, args.runs, 0.0), "refit", 19, args.trees, s)
             for s in range(args.null_refit)]
    print(f"type-I refit (19 perm.): alpha 0.05 -> {rate(refit, 0.05)}; alpha 0.10 -> {rate(refit, 0.10)}",
          flush=True)
    for delta in args.deltas:
        pf, pf19, pr = [], [], []
        for s in range(args.power):
            preds, meta = dataset(rng, args.images, args.runs, delta)
            pf.append(p_value(preds, meta, "fixed-model", 199, args.trees, s))
            pf19.append(p_value(preds, meta, "fixed-model", 19, args.trees, s))
            pr.append(p_value(preds, meta, "refit", 19, args.trees, s))
        print(f"power at shift {delta}: fixed-model 199 perm. {rate(pf, 0.05)}; fixed-model 19 perm. "
              f"{rate(pf19, 0.05)}; refit 19 perm. {rate(pr, 0.05)}", flush=True)
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
