"""Use fairlandmark inside another pipeline that holds predictions as numpy arrays.

Run: python examples/03_api_numpy/pipeline.py
"""

import numpy as np

import fairlandmark
from fairlandmark.stats.significance import SignificanceOptions

rng = np.random.default_rng(0)

# What a training/evaluation loop typically has at the end of each fold: (N, K, 2) arrays in pixels.
n_per_fold, n_folds, k = 120, 5, 19
true = rng.uniform(0, 1935, size=(n_per_fold * n_folds, k, 2))
sex = rng.choice(["F", "M"], size=len(true))
age_group = rng.choice(["adult", "under_age"], size=len(true))
noise_mm = np.full((len(true), k), 1.3)
noise_mm[age_group == "under_age", 4] = 2.0  # this model is worse on keypoint 5 for children
pred = true + rng.normal(size=true.shape) * (noise_mm / 0.1)[..., None]  # 0.1 mm per pixel
pred[7, 3] = np.nan  # a landmark the model did not output

result = fairlandmark.audit_arrays(
    pred, true, {"sex": sex, "age_group": age_group},
    spacing_mm=0.1,
    runs=np.repeat(np.arange(n_folds), n_per_fold),
    thresholds_mm=[2.0, 2.5, 3.0, 4.0],
    significance=SignificanceOptions(permutations=5000, bootstrap=1000, seed=0),
)

flagged = result.per_keypoint.query("significant")
print(flagged[["attribute", "keypoint", "dp", "dp_std", "pair", "p_adjusted", "baseline_mean"]].to_string(index=False))
print(result.summary.to_string(index=False))
print(result.overall.to_string(index=False))

# Fail the pipeline step if any keypoint gap is significant and larger than 0.10.
worst = result.per_keypoint.query("significant and dp > 0.10")
if len(worst):
    print(f"{len(worst)} keypoint(s) with a significant DP above 0.10")
