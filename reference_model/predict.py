"""Run a trained model over a dataset and write audit-ready long-format predictions.

The predictions file has one row per (run, image_id, keypoint) with
``pred_x, pred_y, true_x, true_y`` in original-image pixels and
``spacing_mm``: what ``fairlandmark audit`` reads.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from reference_model.heatmap import decode
from reference_model.preprocess import PreparedData, to_original

__all__ = ["predict_coords", "predictions_frame", "write_csv_atomic", "mean_radial_error_mm", "PREDICTION_COLUMNS"]

PREDICTION_COLUMNS = ["run", "image_id", "keypoint", "pred_x", "pred_y", "true_x", "true_y", "spacing_mm"]


@torch.no_grad()
def predict_coords(model: torch.nn.Module, data: PreparedData, *, device: torch.device | str = "cpu",
                   batch_size: int = 8, subpixel: bool = False, bf16: bool = True,
                   channels_last: bool = False) -> np.ndarray:
    """Predicted landmarks (N, K, 2) in original-image pixels."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(data.image_ids), batch_size):
        batch = torch.from_numpy(np.asarray(data.images[start:start + batch_size])).to(device)
        images = batch[:, None].float().div_(255.0)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda"):
            logits = model(images)
        out.append(decode(logits, subpixel=subpixel).cpu().numpy().astype(np.float64))
    model.train(was_training)
    if not out:
        return np.zeros((0,) + data.landmarks.shape[1:])
    model_xy = np.concatenate(out)
    return np.stack([to_original(model_xy[i], g) for i, g in enumerate(data.geometries)])


def mean_radial_error_mm(pred_original: np.ndarray, data: PreparedData) -> float:
    """Mean radial error over images and keypoints, in mm (in pixels where spacing is unknown)."""
    distance = np.linalg.norm(pred_original - data.landmarks_original, axis=-1)
    spacing = np.where(np.isfinite(data.spacing_mm), data.spacing_mm, 1.0)
    return float(np.nanmean(distance * spacing[:, None]))


def predictions_frame(run: int | str, data: PreparedData, pred_original: np.ndarray) -> pd.DataFrame:
    """Long-format predictions: one row per image and keypoint (keypoint 1-based)."""
    n_images, n_keypoints = pred_original.shape[:2]
    return pd.DataFrame({
        "run": np.repeat(np.asarray([run] * n_images), n_keypoints),
        "image_id": np.repeat(np.asarray(data.image_ids, dtype=object), n_keypoints),
        "keypoint": np.tile(np.arange(1, n_keypoints + 1), n_images),
        "pred_x": pred_original[..., 0].ravel(),
        "pred_y": pred_original[..., 1].ravel(),
        "true_x": data.landmarks_original[..., 0].ravel(),
        "true_y": data.landmarks_original[..., 1].ravel(),
        "spacing_mm": np.repeat(data.spacing_mm, n_keypoints),
    }, columns=PREDICTION_COLUMNS)


def write_csv_atomic(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a CSV through a temporary file and ``os.replace``, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    table.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path
