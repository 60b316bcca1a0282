"""A small, realistic hand-radiograph study generated on the fly.

Shaped like the paper's Digital Hand Atlas study: 37 keypoints (1-18 wrist,
19-37 fingers), images in 10 hold-out test sets, sex and age 9-18, pixel
spacing unknown to the tool but recoverable from the wrist width (keypoints 1
and 5 are 50 mm apart). Errors are drawn per keypoint with wrist keypoints
harder, a few predictions are missing, and two biases are planted so the audit
has something to find:

- keypoint 3: older girls (sex F, age >= 14) get errors 1.7x larger;
- keypoint 12: boys (sex M) get errors 1.35x larger.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["make_demo_study", "make_confounded_errors", "PLANTED_BIAS", "N_KEYPOINTS", "WRIST_KEYPOINTS"]

N_KEYPOINTS = 37
WRIST_KEYPOINTS = range(1, 19)
PLANTED_BIAS = {3: ("sex=F & age>=14", 1.7), 12: ("sex=M", 1.35)}


def make_demo_study(*, n_images: int = 910, n_runs: int = 10, seed: int | None = 0,
                    missing_rate: float = 0.002) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Generate predictions and metadata of a hand-radiograph study.

    Parameters
    ----------
    n_images : int, default 910
        Images in the study; each lands in exactly one hold-out test set.
    n_runs : int, default 10
        Hold-outs.
    seed : int, default 0
    missing_rate : float, default 0.002
        Share of predictions left empty (missing).

    Returns
    -------
    predictions : pandas.DataFrame
        Long format with ``run`` and pixel coordinates.
    metadata : pandas.DataFrame
        ``image_id``, ``sex`` (F/M) and ``age`` (years, 9-18).

    Examples
    --------
    >>> preds, meta = make_demo_study(n_images=40, n_runs=2)
    >>> sorted(preds.columns)
    ['image_id', 'keypoint', 'pred_x', 'pred_y', 'run', 'true_x', 'true_y']
    """
    rng = np.random.default_rng(seed)
    ids = np.array([f"{4000 + i}" for i in range(n_images)], dtype=object)
    sex = rng.choice(["F", "M"], size=n_images)
    age = rng.integers(9, 19, size=n_images)
    run = rng.permutation(np.arange(n_images) % n_runs)  # balanced hold-out test sets

    # Anatomy in mm: a rough hand layout, jittered per image.
    base = np.zeros((N_KEYPOINTS, 2))
    base[:18] = np.column_stack([np.linspace(0, 50, 18) % 50, 20 + 8 * np.sin(np.arange(18))])
    base[0], base[4] = (0.0, 0.0), (50.0, 0.0)  # keypoints 1 and 5: the wrist ends
    base[18:] = np.column_stack([np.repeat([-5, 10, 25, 40, 55], 4)[:19], 40 + np.tile([20, 40, 60, 80], 5)[:19]])
    size = rng.uniform(0.85, 1.15, size=n_images)[:, None, None]
    true_mm = base[None] * size + rng.normal(0, 1.0, size=(n_images, N_KEYPOINTS, 2))
    # Exact 50 mm wrist width, whatever the hand size, as the convention assumes.
    true_mm[:, 0] = 0.0
    true_mm[:, 4] = np.column_stack([np.full(n_images, 50.0), np.zeros(n_images)])
    spacing = rng.uniform(0.08, 0.12, size=n_images)[:, None, None]  # mm per pixel, unknown to the audit
    offset = rng.uniform(300, 600, size=(n_images, 1, 2))

    scale = np.where(np.arange(1, N_KEYPOINTS + 1) <= 18, 1.25, 0.95)
    scale = scale * rng.uniform(0.8, 1.2, size=N_KEYPOINTS)
    sigma = np.tile(scale, (n_images, 1))
    sigma[(sex == "F") & (age >= 14), 2] *= PLANTED_BIAS[3][1]
    sigma[sex == "M", 11] *= PLANTED_BIAS[12][1]
    err_mm = rng.normal(0, 1, size=(n_images, N_KEYPOINTS, 2)) * sigma[..., None]

    true_px = true_mm / spacing + offset
    pred_px = (true_mm + err_mm) / spacing + offset
    missing = rng.random((n_images, N_KEYPOINTS)) < missing_rate
    pred_px[missing] = np.nan

    preds = pd.DataFrame({
        "run": np.repeat(run, N_KEYPOINTS).astype(str),
        "image_id": np.repeat(ids, N_KEYPOINTS),
        "keypoint": np.tile(np.arange(1, N_KEYPOINTS + 1), n_images),
        "pred_x": np.round(pred_px[..., 0].ravel(), 2), "pred_y": np.round(pred_px[..., 1].ravel(), 2),
        "true_x": np.round(true_px[..., 0].ravel(), 2), "true_y": np.round(true_px[..., 1].ravel(), 2),
    })
    meta = pd.DataFrame({"image_id": ids, "sex": sex, "age": age})
    return preds, meta


def make_confounded_errors(rng: np.random.Generator, n: int, k: int, *, gap: float = 0.0, site_effect: float = 0.0,
                           imbalance: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images with a sex, a site more common among one sex, and errors raised by site and/or sex.

    The study behind the confounder-adjusted gaps' validation: with ``site_effect`` and ``imbalance`` a sex
    gap appears that only the site explains (it vanishes after adjusting for site); ``gap`` plants a real
    sex effect that survives it.

    Parameters
    ----------
    rng : numpy.random.Generator
    n, k : int
        Images and keypoints.
    gap : float, default 0.0
        Errors of sex F scaled by ``1 + gap``.
    site_effect : float, default 0.0
        Errors at site A scaled by ``1 + site_effect``.
    imbalance : float, default 0.5
        Share of F images at site A (and of M images at site B); 0.5 = no confounding.

    Returns
    -------
    sex, site : ndarray of str, shape (n,)
    errors : ndarray, shape (n, k)
        Gamma(2, 0.8) errors in mm, times the scale of each image.

    Examples
    --------
    >>> sex, site, errors = make_confounded_errors(np.random.default_rng(0), 100, 3, site_effect=0.5, imbalance=0.8)
    >>> errors.shape
    (100, 3)
    """
    sex = rng.choice(np.array(["F", "M"]), n)
    p_site_a = np.where(sex == "F", imbalance, 1 - imbalance)
    site = np.where(rng.random(n) < p_site_a, "A", "B")
    scale = 1.0 + site_effect * (site == "A") + gap * (sex == "F")
    errors = rng.gamma(2.0, 0.8, (n, k)) * scale[:, None]
    return sex, site, errors
