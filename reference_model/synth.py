"""Synthetic X-ray-like landmark dataset with a planted, controllable group effect.

Each image is a skull-like shape: an elliptical bone rim over a soft
interior and a noisy background, with a small bright bony feature at each
landmark. Landmarks sit at fixed anatomical positions of the shape, moved by a
random per-image pose and a small per-landmark anatomical variation.

The group effect: for images of ``effect_group`` (attribute ``sex``),
landmark ``effect_keypoint`` gets a feature of lower contrast
(``effect_contrast`` times the normal amplitude) and extra anatomical
variation (``effect_jitter`` pixels), so a model is less accurate on that
subgroup and an audit should find a disparity on that keypoint only.

Written in the generic layout that :func:`reference_model.datasets.load_generic`
reads: ``images/<id>.png``, ``landmarks.csv`` (long format) and ``meta.csv``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from reference_model.datasets import LandmarkData

__all__ = ["SynthSpec", "make_synthetic", "write_synthetic"]

# Anatomical template: landmark positions in units of the skull's half-axes, centred.
_TEMPLATE = np.array([
    [0.0, -1.0],   # 1 vertex (top of the rim)
    [1.0, 0.0],    # 2 right rim
    [0.0, 0.35],   # 3 interior structure (the default planted keypoint)
    [-1.0, 0.0],   # 4 left rim
    [0.0, 1.0],    # 5 base (bottom of the rim)
    [0.5, -0.45],  # 6
    [-0.5, -0.45],  # 7
    [0.45, 0.6],   # 8
])


@dataclass(frozen=True)
class SynthSpec:
    """Parameters of a synthetic dataset (see the module docstring)."""

    n_images: int = 60
    size: int = 64  # image height in pixels; width is 85% of it, so padding is exercised
    n_keypoints: int = 5
    female_fraction: float = 0.5
    effect_group: str = "F"
    effect_keypoint: int = 3  # 1-based
    effect_contrast: float = 0.3
    effect_jitter: float = 3.0
    feature_amplitude: float = 0.6
    noise: float = 0.06
    spacing_mm: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.n_keypoints <= len(_TEMPLATE):
            raise ValueError(f"n_keypoints must be 1..{len(_TEMPLATE)}, got {self.n_keypoints}")
        if not 1 <= self.effect_keypoint <= self.n_keypoints:
            raise ValueError(f"effect_keypoint must be 1..{self.n_keypoints}, got {self.effect_keypoint}")
        if self.size < 24:
            raise ValueError(f"size must be at least 24 pixels, got {self.size}")


def _render(rng: np.random.Generator, spec: SynthSpec, planted: bool) -> tuple[np.ndarray, np.ndarray]:
    height, width = spec.size, int(round(spec.size * 0.85))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    centre = np.array([width / 2, height / 2]) + rng.normal(0, 0.04 * spec.size, 2)
    half_axes = np.array([0.33 * width, 0.36 * height]) * rng.uniform(0.9, 1.1)
    angle = rng.normal(0, np.deg2rad(6))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])

    # Skull: elliptical distance in the shape's own frame.
    local = (np.stack([xx - centre[0], yy - centre[1]], -1) @ rotation) / half_axes
    radius = np.hypot(local[..., 0], local[..., 1])
    image = 0.15 + 0.25 * np.exp(-((radius - 1.0) / 0.07) ** 2) + 0.12 * (radius < 1.0)

    template = _TEMPLATE[: spec.n_keypoints]
    landmarks = centre + (template * half_axes) @ rotation.T
    landmarks += rng.normal(0, 0.5, landmarks.shape)  # normal anatomical variation
    amplitudes = np.full(spec.n_keypoints, spec.feature_amplitude)
    if planted:
        k = spec.effect_keypoint - 1
        landmarks[k] += rng.normal(0, spec.effect_jitter, 2)
        amplitudes[k] *= spec.effect_contrast
    for (x, y), amplitude in zip(landmarks, amplitudes):
        image += amplitude * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.2 ** 2))
    image += rng.normal(0, spec.noise, image.shape)
    image = np.clip(image, 0.0, 1.0)
    return (image * 255).round().astype(np.uint8), landmarks


def make_synthetic(spec: SynthSpec = SynthSpec()) -> LandmarkData:
    """Generate the dataset in memory (images as uint8 arrays)."""
    rng = np.random.default_rng(spec.seed)
    width = len(str(spec.n_images))
    image_ids = [f"{i + 1:0{max(3, width)}d}" for i in range(spec.n_images)]
    sex = np.where(rng.random(spec.n_images) < spec.female_fraction, "F", "M")
    age = rng.integers(8, 80, spec.n_images)
    images, landmarks = [], []
    for s in sex:
        image, points = _render(rng, spec, planted=(s == spec.effect_group))
        images.append(image)
        landmarks.append(points)
    meta = pd.DataFrame({"image_id": image_ids, "sex": sex, "age": age,
                         "age_group": np.where(age < 40, "young", "old")})
    return LandmarkData(image_ids, images, np.asarray(landmarks), np.full(spec.n_images, spec.spacing_mm), meta)


def write_synthetic(out_dir: str | Path, spec: SynthSpec = SynthSpec()) -> LandmarkData:
    """Generate the dataset and write it in the generic layout under ``out_dir``.

    Returns the in-memory dataset; its ``sources`` are the written PNG files.
    """
    from PIL import Image

    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    data = make_synthetic(spec)
    paths = []
    for image_id, image in zip(data.image_ids, data.sources):
        path = out_dir / "images" / f"{image_id}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    k = data.n_keypoints
    table = pd.DataFrame({
        "image_id": np.repeat(data.image_ids, k),
        "keypoint": np.tile(np.arange(1, k + 1), len(data.image_ids)),
        "x": data.landmarks[..., 0].ravel(),
        "y": data.landmarks[..., 1].ravel(),
        "spacing_mm": np.repeat(data.spacing_mm, k),
    })
    _atomic_csv(table, out_dir / "landmarks.csv")
    _atomic_csv(data.meta, out_dir / "meta.csv")
    data.sources = paths
    return data


def _atomic_csv(table: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    table.to_csv(tmp, index=False)
    os.replace(tmp, path)
