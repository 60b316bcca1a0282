"""Small clean studies for the hostile-input tests, and a helper to run the CLI in-process."""

from __future__ import annotations

import numpy as np
import pandas as pd

N_IMAGES, KEYPOINTS = 24, (1, 2, 3)


def study_frames(seed: int = 0, n_images: int = N_IMAGES, groups=("F", "M")):
    """Predictions (long format, pixels) and metadata with a two-level attribute and a site column."""
    rng = np.random.default_rng(seed)
    ids = [f"im{i:03d}" for i in range(n_images)]
    rows = []
    for image in ids:
        for kp in KEYPOINTS:
            rows.append({"image_id": image, "keypoint": kp, "pred_x": round(float(rng.normal(10, 2)), 3),
                         "pred_y": round(float(rng.normal(10, 2)), 3), "true_x": 10.0, "true_y": 10.0})
    preds = pd.DataFrame(rows)
    meta = pd.DataFrame({"image_id": ids, "sex": [groups[i % len(groups)] for i in range(n_images)],
                         "site": ["NA" if i % 3 == 0 else ("None" if i % 3 == 1 else "NULL") for i in range(n_images)]})
    return preds, meta


def write_study(folder, seed: int = 0, **options):
    """Write the study as preds.csv and meta.csv in ``folder``; returns the two paths."""
    preds, meta = study_frames(seed, **options)
    p, m = folder / "preds.csv", folder / "meta.csv"
    preds.to_csv(p, index=False)
    meta.to_csv(m, index=False)
    return p, m


def run_cli(capsys, *argv):
    """Run ``fairlandmark argv`` in this process; returns (exit code, stdout, stderr)."""
    from fairlandmark.cli import main

    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err
