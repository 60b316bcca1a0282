"""Small realistic audit documents for the report, figure, compare and gate tests."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np

import fairlandmark as fl


def make_doc(n_keypoints=10, *, significance=False, privacy=False, missing_group=False, seed=0, n_images=80,
             runs=2, effect=1.6, scale=1.0, real_significance=True):
    """Audit simulated predictions and return the JSON document (a dict).

    Keypoint 2 (or 1 with a single keypoint) has larger errors for sex=F.
    ``significance`` runs the real significance layer (small B) or, with
    ``real_significance=False``, hand-adds its fields (deterministic in DP);
    ``privacy`` a privacy block; ``missing_group`` makes a tiny group and
    drops one group from one keypoint's record.
    """
    rng = np.random.default_rng(seed)
    true = rng.uniform(0, 500, (n_images, n_keypoints, 2))
    sex = np.array(["F", "M"] * (n_images // 2))
    age = rng.choice(["young", "old"], n_images).astype(object)
    if missing_group:
        age[:3] = "infant"
    err = rng.gamma(2.0, 8.0, (n_images, n_keypoints)) * scale
    target = 1 if n_keypoints > 1 else 0
    err[sex == "F", target] *= effect
    ang = rng.uniform(0, 2 * np.pi, (n_images, n_keypoints))
    pred = true + np.stack([err * np.cos(ang), err * np.sin(ang)], -1)
    half = n_keypoints // 2
    families = {"wrist": range(1, half + 1), "fingers": range(half + 1, n_keypoints + 1)} if n_keypoints > 1 else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fl.audit_arrays(pred, true, {"sex": sex, "age_group": age}, spacing_mm=0.1,
                              runs=(np.arange(n_images) // 2) % runs, thresholds_mm=[2.0, 2.5, 3.0, 4.0],
                              families=families, min_group_size=5,
                              significance=(dict(permutations=400, bootstrap=100, baseline_repeats=100, seed=seed)
                                            if significance and real_significance else None))
    doc = res.to_dict()
    if significance and not real_significance:
        add_significance(doc)
    if privacy:
        doc["privacy"] = privacy_block({"sex": (0.71, 0.002, True, [2, 5, 7]), "age_group": (0.53, 0.31, False, [1])})
    if missing_group:
        rec = next(r for r in doc["per_keypoint"] if r["attribute"] == "age_group")
        for key in ("sdr_by_group", "mre_by_group", "n_by_group", "sdr_std_by_group", "mre_std_by_group"):
            rec[key].pop("infant", None)
        for thr in rec["sdr_by_threshold"].values():
            thr.pop("infant", None)
    return doc


def add_significance(doc, alpha=0.05):
    """Hand-add the significance layer's fields (deterministic in DP)."""
    m = len(doc["per_keypoint"])
    for rec in doc["per_keypoint"]:
        dp = rec["dp"] if rec["dp"] is not None else 0.0
        p = float(min(1.0, math.exp(-40 * dp)))
        rec["p_value"] = p
        rec["p_adjusted"] = float(min(1.0, p * m / 2))
        rec["significant"] = rec["p_adjusted"] < alpha
        rec["dp_ci"] = [max(0.0, dp - 0.06), dp + 0.05]
        rec["baseline_mean"] = 0.06
        rec["baseline_std"] = 0.02
        rec["mre_gap_p"] = p
        rec["mre_gap_p_adjusted"] = rec["p_adjusted"]
        rec["sdr_ci_by_group"] = {g: [max(0, (v or 0) - 0.05), min(1, (v or 0) + 0.05)]
                                  for g, v in rec["sdr_by_group"].items()}
        rec["mre_ci_by_group"] = {g: [(v or 0) * 0.9, (v or 0) * 1.1] for g, v in rec["mre_by_group"].items()}
    doc["significance"] = {"permutations": 2000, "bootstrap": 500, "ci": 0.95, "alpha": alpha,
                           "correction": "bh", "seed": 0, "baseline_repeats": 100}
    return doc


def copy_doc(doc):
    return copy.deepcopy(doc)


def privacy_block(scores):
    """A privacy block shaped like fairlandmark.stats.privacy.privacy_block: {attribute: (bacc, p, leak, top)}."""
    attrs = {}
    for name, (bacc, p, leak, top) in scores.items():
        line = (f"errors predict {name} better than chance: balanced accuracy {bacc:.2f} (chance 0.50, p = {p:.3f})"
                if leak else f"errors do not predict {name} better than chance: balanced accuracy {bacc:.2f} "
                             f"(chance 0.50, p = {p:.3f})")
        attrs[name] = {"schema_version": "1.0", "kind": "attribute_inference", "target": name, "n_splits": 5,
                       "n_permutations": 200, "analyses": [{
                           "attribute": name, "analysis": "all", "balanced_accuracy": bacc,
                           "balanced_accuracy_std": 0.04, "chance": 0.5, "p_value": p, "leak": leak,
                           "risk_line": line, "top_keypoints": top,
                           "importance": [{"keypoint": k, "importance": 0.01, "rank": i + 1}
                                          for i, k in enumerate(top)]}]}
    return {"schema_version": "1.0", "attributes": attrs}
