"""Pad to square, resize, scale to [0, 1]: the paper's preprocessing, with exact coordinate maps.

Coordinates are continuous pixel coordinates whose integer values are pixel
centres (x to the right, y down), as in the landmark files. Padding centres
the image in a square of side ``max(h, w)``; resizing that square to
``size`` maps a point by ``u = (x + pad_x + 0.5) * size / side - 0.5``, which
is also where a bilinear resize puts pixel centres, so a landmark stays on its
structure. :func:`to_original` inverts :func:`to_model` exactly (up to float
rounding).

Preprocessed images are cached as one uint8 array per dataset (``.npy``,
memory-mapped when read back), so an epoch never decodes a file again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from reference_model.errors import InputError

if TYPE_CHECKING:
    from reference_model.datasets import LandmarkData

__all__ = [
    "Geometry",
    "geometry_for",
    "to_model",
    "to_original",
    "pad_and_resize",
    "PreparedData",
    "prepare",
]

ERR_IMAGE_READ = "image {path}: cannot read it ({reason}); check that the file is a valid image"


@dataclass(frozen=True)
class Geometry:
    """How one original image sits in the model's square input."""

    height: int
    width: int
    side: int  # side of the padded square, max(height, width)
    pad_x: int
    pad_y: int
    size: int  # model input side

    @property
    def scale(self) -> float:
        """Model pixels per original pixel."""
        return self.size / self.side


def geometry_for(height: int, width: int, size: int) -> Geometry:
    """Geometry of an original ``height x width`` image centred in a ``size`` square."""
    side = max(height, width)
    return Geometry(height=height, width=width, side=side, pad_x=(side - width) // 2,
                    pad_y=(side - height) // 2, size=size)


def to_model(xy: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Original-image pixel coordinates (..., 2) to model-input coordinates."""
    xy = np.asarray(xy, dtype=np.float64)
    pad = np.array([geometry.pad_x, geometry.pad_y], dtype=np.float64)
    return (xy + pad + 0.5) * geometry.scale - 0.5


def to_original(uv: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Model-input coordinates (..., 2) back to original-image pixel coordinates."""
    uv = np.asarray(uv, dtype=np.float64)
    pad = np.array([geometry.pad_x, geometry.pad_y], dtype=np.float64)
    return (uv + 0.5) / geometry.scale - 0.5 - pad


def _to_unit_range(image: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 1] in float32; a constant image becomes zeros."""
    image = image.astype(np.float32)
    low, high = float(image.min()), float(image.max())
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def pad_and_resize(image: np.ndarray, size: int) -> tuple[np.ndarray, Geometry]:
    """Centre-pad a 2-D image to a square, resize it to ``size`` and scale it to [0, 1].

    Returns the float32 image and its :class:`Geometry`.
    """
    from PIL import Image  # pillow comes with the [train] extra

    if image.ndim == 3:  # colour file of a grey radiograph: average the channels
        image = image[..., :3].mean(axis=2)
    unit = _to_unit_range(image)
    geometry = geometry_for(*unit.shape, size)
    square = np.zeros((geometry.side, geometry.side), dtype=np.float32)
    square[geometry.pad_y:geometry.pad_y + geometry.height,
           geometry.pad_x:geometry.pad_x + geometry.width] = unit
    if geometry.side != size:
        square = np.asarray(Image.fromarray(square).resize((size, size), Image.BILINEAR))
    return np.clip(square, 0.0, 1.0).astype(np.float32), geometry


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as a 2-D (or H x W x C) array."""
    from PIL import Image

    try:
        with Image.open(path) as handle:
            return np.asarray(handle)
    except (OSError, ValueError) as exc:
        raise InputError(ERR_IMAGE_READ.format(path=path, reason=exc)) from None


@dataclass
class PreparedData:
    """A dataset ready for the network: uint8 square images and model-space landmarks.

    Attributes
    ----------
    image_ids : list of str
    images : ndarray, uint8, (N, size, size)
        Possibly a read-only memory map of the cache file.
    landmarks : ndarray, float64, (N, K, 2)
        Landmarks in model-input coordinates (NaN where missing).
    landmarks_original : ndarray, float64, (N, K, 2)
    geometries : list of Geometry
    spacing_mm : ndarray, float64, (N,)
        Millimetres per original pixel (NaN when unknown).
    """

    image_ids: list[str]
    images: np.ndarray
    landmarks: np.ndarray
    landmarks_original: np.ndarray
    geometries: list[Geometry]
    spacing_mm: np.ndarray

    def subset(self, indices: Sequence[int] | np.ndarray) -> "PreparedData":
        """The images at ``indices`` (an index array), in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        return PreparedData(
            image_ids=[self.image_ids[i] for i in indices],
            images=self.images[indices],
            landmarks=self.landmarks[indices],
            landmarks_original=self.landmarks_original[indices],
            geometries=[self.geometries[i] for i in indices],
            spacing_mm=self.spacing_mm[indices],
        )

    def index_of(self, image_ids: Iterable[object]) -> np.ndarray:
        """Positions of ``image_ids`` in this dataset."""
        position = {image_id: i for i, image_id in enumerate(self.image_ids)}
        return np.array([position[str(i)] for i in image_ids], dtype=np.int64)


def _cache_key(data, size: int) -> str:
    """Hash of the size and every source: a file's path, size and mtime, or an array's bytes."""
    digest = hashlib.sha256(str(size).encode())
    for source in data.sources:
        if isinstance(source, np.ndarray):
            digest.update(str(source.shape).encode() + np.ascontiguousarray(source).tobytes())
        else:
            stat = Path(source).stat()
            digest.update(json.dumps([str(Path(source).resolve()), stat.st_size, stat.st_mtime_ns]).encode())
    return digest.hexdigest()[:16]


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # several ranks may fill one cache
    with open(tmp, "wb") as handle:
        np.save(handle, array)
    os.replace(tmp, path)


def prepare(data: LandmarkData, *, size: int, cache_dir: str | Path | None = None,
            progress: bool = False) -> PreparedData:
    """Pad, resize and scale every image of a :class:`~reference_model.datasets.LandmarkData`.

    With ``cache_dir``, the uint8 images and geometries are stored there, keyed
    by the image sources and ``size``, and memory-mapped on the next call.
    """
    cache_images = cache_meta = None
    if cache_dir is not None:
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        key = _cache_key(data, size)
        cache_images = cache_dir / f"images_{size}_{key}.npy"
        cache_meta = cache_dir / f"geometry_{size}_{key}.json"
    if cache_images is not None and cache_images.is_file() and cache_meta.is_file():
        images = np.load(cache_images, mmap_mode="r")
        geometries = [Geometry(**g) for g in json.loads(cache_meta.read_text())]
    else:
        images = np.empty((len(data.image_ids), size, size), dtype=np.uint8)
        geometries = []
        for i in _progress(range(len(data.image_ids)), progress, "preprocessing"):
            square, geometry = pad_and_resize(data.load_image(i), size)
            images[i] = np.round(square * 255.0).astype(np.uint8)
            geometries.append(geometry)
        if cache_images is not None:
            _atomic_save_npy(cache_images, images)
            tmp = cache_meta.with_name(f".{cache_meta.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps([g.__dict__ for g in geometries]))
            os.replace(tmp, cache_meta)
            images = np.load(cache_images, mmap_mode="r")
    model_xy = np.stack([to_model(data.landmarks[i], g) for i, g in enumerate(geometries)]) \
        if geometries else np.zeros((0,) + data.landmarks.shape[1:])
    return PreparedData(image_ids=list(data.image_ids), images=images, landmarks=model_xy,
                        landmarks_original=np.asarray(data.landmarks, dtype=np.float64),
                        geometries=geometries, spacing_mm=np.asarray(data.spacing_mm, dtype=np.float64))


def _progress(iterable, enabled: bool, description: str):
    if not enabled:
        return iterable
    from rich.progress import track

    return track(iterable, description=description)
