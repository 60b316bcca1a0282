"""Loaders for the public landmark datasets in their released layouts, and a generic one.

Every loader returns a :class:`LandmarkData`: image ids (strings, leading
zeros kept), where each image is, landmarks in original-image pixels
(N x K x 2), millimetres per pixel, and a meta table (``image_id`` plus one
column per demographic attribute). Images are read lazily by
:meth:`LandmarkData.load_image`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from reference_model.errors import InputError

__all__ = [
    "LandmarkData",
    "load_dha",
    "load_isbi2015",
    "load_cephadoadu",
    "load_generic",
    "read_meta",
    "IMAGE_SUFFIXES",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy")
ISBI_SPACING_MM = 0.1
ISBI_N_LANDMARKS = 19
DHA_N_LANDMARKS = 37
DHA_WRIST_WIDTH_MM = 50.0  # distance between landmarks 1 and 5, as in the SCN setup

ERR_MISSING_FILE = "{what} {path}: not found; check the path"
ERR_CSV_COLUMNS = "{path}: missing column(s) {missing}; the file needs columns {needed}"
ERR_CSV_VALUE = "{path}, row {row}, column {column!r}: {value!r} is not a number; fix that cell"
ERR_WIDE_WIDTH = (
    "{path}, row {row}: expected an id and {n} coordinates (x1,y1,...), got {got} values; "
    "check the landmark count"
)
ERR_NO_IMAGE = "image for id {image_id!r}: no file {stem}.* in {folder}; put the image there or drop the id"
ERR_TXT_LANDMARKS = "{path}: expected {n} lines of 'x,y' landmarks, found {got}; check the annotation file"
ERR_KEYPOINTS_RAGGED = (
    "{path}: image {image_id!r} has keypoints {have}, but other images have 1..{k}; "
    "give every image the same keypoints"
)
ERR_META_ID = "{path}: no 'image_id' column; add one that names the images"
ERR_META_MISSING = "{path}: no row for image(s) {ids}; add them to the meta file or remove their landmarks"
ERR_SPLITS_FORMAT = (
    "{path}: expected [name, group] pairs (a list, or a dict of lists); got {value!r}"
)


@dataclass
class LandmarkData:
    """Images, landmarks (original pixels), pixel spacing and demographics of one dataset."""

    image_ids: list[str]
    sources: list  # a file path, or an in-memory 2-D array, per image
    landmarks: np.ndarray  # (N, K, 2) float64, original pixels
    spacing_mm: np.ndarray  # (N,) float64, mm per original pixel; NaN when unknown
    meta: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def n_keypoints(self) -> int:
        return int(self.landmarks.shape[1])

    def load_image(self, index: int) -> np.ndarray:
        """The original image ``index`` as a numpy array."""
        source = self.sources[index]
        if isinstance(source, np.ndarray):
            return source
        if str(source).endswith(".npy"):
            return np.load(source)
        from reference_model.preprocess import read_image

        return read_image(source)

    def subset(self, indices: Sequence[int] | np.ndarray) -> "LandmarkData":
        indices = np.asarray(indices, dtype=np.int64)
        ids = [self.image_ids[i] for i in indices]
        meta = self.meta.set_index("image_id").loc[ids].reset_index() if len(self.meta) else self.meta
        return LandmarkData(ids, [self.sources[i] for i in indices], self.landmarks[indices],
                            self.spacing_mm[indices], meta)


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise InputError(ERR_MISSING_FILE.format(what=what, path=path))
    return path


def _find_image(folder: Path, stem: str, image_id: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    raise InputError(ERR_NO_IMAGE.format(image_id=image_id, stem=stem, folder=folder))


def read_meta(path: str | Path) -> pd.DataFrame:
    """Read a meta CSV (``image_id`` plus attribute columns), ids kept as strings."""
    path = _require_file(Path(path), "meta file")
    meta = pd.read_csv(path, dtype={"image_id": str})
    if "image_id" not in meta.columns:
        raise InputError(ERR_META_ID.format(path=path))
    return meta


def _attach_meta(image_ids: list[str], meta: pd.DataFrame | None, meta_path) -> pd.DataFrame:
    if meta is None:
        return pd.DataFrame({"image_id": image_ids})
    missing = sorted(set(image_ids) - set(meta["image_id"]))
    if missing:
        raise InputError(ERR_META_MISSING.format(path=meta_path, ids=", ".join(missing[:5])))
    return meta.set_index("image_id").loc[image_ids].reset_index()


def _wide_rows(path: Path, n_landmarks: int) -> tuple[list[str], np.ndarray]:
    """Parse ``id,x1,y1,...`` rows; a header row, if any, is skipped."""
    ids, rows = [], []
    for row_number, line in enumerate(path.read_text().splitlines(), start=1):
        cells = [c.strip() for c in line.split(",")]
        if not line.strip():
            continue
        if row_number == 1 and not re.fullmatch(r"-?[\d.]+(e-?\d+)?", cells[1] if len(cells) > 1 else ""):
            continue  # header
        if len(cells) != 1 + 2 * n_landmarks:
            raise InputError(ERR_WIDE_WIDTH.format(path=path, row=row_number, n=2 * n_landmarks,
                                                   got=len(cells) - 1))
        values = []
        for column, cell in enumerate(cells[1:], start=2):
            try:
                values.append(float(cell))
            except ValueError:
                raise InputError(ERR_CSV_VALUE.format(path=path, row=row_number, column=column,
                                                      value=cell)) from None
        ids.append(cells[0])
        rows.append(values)
    return ids, np.asarray(rows, dtype=np.float64).reshape(len(rows), n_landmarks, 2)


def load_dha(csv_path: str | Path, image_dir: str | Path, *, meta_path: str | Path | None = None,
             wrist_width_mm: float = DHA_WRIST_WIDTH_MM) -> LandmarkData:
    """Digital Hand Atlas as the SCN/GU2Net repositories ship it.

    Parameters
    ----------
    csv_path : path
        Wide ``all.csv``: id, x1, y1, ..., x37, y37 in pixels (header optional).
    image_dir : path
        Folder with ``<id>.jpg``.
    meta_path : path, optional
        Meta CSV with ``image_id`` and the demographic columns.
    wrist_width_mm : float, default 50
        The distance between landmarks 1 and 5, which sets each image's mm per pixel.
    """
    csv_path = _require_file(Path(csv_path), "DHA landmark file")
    image_ids, landmarks = _wide_rows(csv_path, DHA_N_LANDMARKS)
    wrist_px = np.linalg.norm(landmarks[:, 0] - landmarks[:, 4], axis=1)
    spacing = np.where(wrist_px > 0, wrist_width_mm / np.where(wrist_px > 0, wrist_px, 1.0), np.nan)
    image_dir = Path(image_dir)
    sources = [_find_image(image_dir, i, i) for i in image_ids]
    meta = read_meta(meta_path) if meta_path else None
    return LandmarkData(image_ids, sources, landmarks, spacing, _attach_meta(image_ids, meta, meta_path))


def _read_txt_landmarks(path: Path, n_landmarks: int | None) -> np.ndarray:
    """First ``n_landmarks`` lines of 'x,y' (or 'x y'); all such lines when None."""
    points = []
    for line in path.read_text().splitlines():
        numbers = re.split(r"[,\s]+", line.strip())
        if len(numbers) < 2:
            if n_landmarks is None and points:
                break
            continue
        try:
            points.append((float(numbers[0]), float(numbers[1])))
        except ValueError:
            if n_landmarks is None and points:
                break
            continue
        if n_landmarks is not None and len(points) == n_landmarks:
            break
    if n_landmarks is not None and len(points) != n_landmarks:
        raise InputError(ERR_TXT_LANDMARKS.format(path=path, n=n_landmarks, got=len(points)))
    return np.asarray(points, dtype=np.float64)


def load_isbi2015(root: str | Path, *, annotator: str = "mean",
                  meta_path: str | Path | None = None) -> LandmarkData:
    """ISBI 2015 cephalometric challenge in its released layout.

    ``root/AnnotationsByMD/400_senior/NNN.txt`` and ``400_junior/NNN.txt``
    (19 ``x,y`` lines each, pixels at 0.1 mm) and images ``NNN.bmp`` anywhere
    under ``root/RawImage/``. ``annotator`` is ``mean`` (default, the mean of
    the two doctors), ``senior`` or ``junior``.
    """
    root = Path(root)
    if annotator not in ("mean", "senior", "junior"):
        raise InputError(f"annotator {annotator!r}: use mean, senior or junior")
    folders = {name: root / "AnnotationsByMD" / f"400_{name}" for name in ("senior", "junior")}
    needed = ("senior", "junior") if annotator == "mean" else (annotator,)
    for name in needed:
        if not folders[name].is_dir():
            raise InputError(ERR_MISSING_FILE.format(what="ISBI annotation folder", path=folders[name]))
    stems = sorted(p.stem for p in folders[needed[0]].glob("*.txt"))
    images = {p.stem: p for p in (root / "RawImage").rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES}
    landmarks, sources = [], []
    for stem in stems:
        per_doctor = [_read_txt_landmarks(folders[name] / f"{stem}.txt", ISBI_N_LANDMARKS) for name in needed]
        landmarks.append(np.mean(per_doctor, axis=0))
        if stem not in images:
            raise InputError(ERR_NO_IMAGE.format(image_id=stem, stem=stem, folder=root / "RawImage"))
        sources.append(images[stem])
    landmarks = np.asarray(landmarks).reshape(len(stems), ISBI_N_LANDMARKS, 2)
    meta = read_meta(meta_path) if meta_path else None
    return LandmarkData(stems, sources, landmarks, np.full(len(stems), ISBI_SPACING_MM),
                        _attach_meta(stems, meta, meta_path))


def load_cephadoadu(root: str | Path, *, split: str | None = None,
                    spacing_mm: float = ISBI_SPACING_MM) -> LandmarkData:
    """CephAdoAdu as released with CeLDA.

    ``root/final_splits.json`` lists ``[name, group]`` pairs (``group`` is
    ``adult`` or ``under_age``), either as one list or as a dict of split
    name -> list; ``split`` picks one split (default: all). Images are
    ``root/data/{group}/dataset/{name}.jpg`` and labels
    ``root/data/{group}/txt/{name}.txt``. The group becomes the meta column
    ``age_group``.
    """
    root = Path(root)
    splits_path = _require_file(root / "final_splits.json", "CephAdoAdu split file")
    try:
        splits = json.loads(splits_path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{splits_path}: not valid JSON ({exc}); fix the file") from None
    if isinstance(splits, dict):
        if split is not None:
            if split not in splits:
                raise InputError(f"{splits_path}: no split {split!r}; known: {', '.join(splits)}")
            pairs = splits[split]
        else:
            pairs = [pair for value in splits.values() for pair in value]
    else:
        pairs = splits
    image_ids, sources, landmarks, groups = [], [], [], []
    n_landmarks = None
    for pair in pairs:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise InputError(ERR_SPLITS_FORMAT.format(path=splits_path, value=pair))
        name, group = str(pair[0]), str(pair[1])
        points = _read_txt_landmarks(_require_file(root / "data" / group / "txt" / f"{name}.txt",
                                                   "CephAdoAdu label file"), n_landmarks)
        n_landmarks = n_landmarks or len(points)
        image_ids.append(name)
        groups.append(group)
        sources.append(_find_image(root / "data" / group / "dataset", name, name))
        landmarks.append(points)
    meta = pd.DataFrame({"image_id": image_ids, "age_group": groups})
    return LandmarkData(image_ids, sources, np.asarray(landmarks, dtype=np.float64),
                        np.full(len(image_ids), spacing_mm), meta)


def load_generic(image_dir: str | Path, landmarks_csv: str | Path, meta_csv: str | Path | None = None,
                 *, spacing_mm: float | None = None) -> LandmarkData:
    """An image folder, a long-format landmarks CSV and a meta CSV.

    The landmarks CSV has columns ``image_id, keypoint, x, y`` (keypoint
    1-based) and optionally ``spacing_mm``; images are ``image_dir/<image_id>.*``.
    ``spacing_mm`` (mm per pixel) applies when the CSV has no such column.
    """
    path = _require_file(Path(landmarks_csv), "landmarks file")
    table = pd.read_csv(path, dtype={"image_id": str})
    needed = ["image_id", "keypoint", "x", "y"]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise InputError(ERR_CSV_COLUMNS.format(path=path, missing=", ".join(missing), needed=", ".join(needed)))
    for column in ("keypoint", "x", "y") + (("spacing_mm",) if "spacing_mm" in table.columns else ()):
        numeric = pd.to_numeric(table[column], errors="coerce")
        bad = numeric.isna() & table[column].notna() if column != "keypoint" else numeric.isna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(ERR_CSV_VALUE.format(path=path, row=row + 2, column=column,
                                                  value=table[column].iloc[row]))
        table[column] = numeric
    table["keypoint"] = table["keypoint"].astype(int)
    image_ids = list(dict.fromkeys(table["image_id"]))
    n_keypoints = int(table["keypoint"].max())
    landmarks = np.full((len(image_ids), n_keypoints, 2), np.nan)
    position = {image_id: i for i, image_id in enumerate(image_ids)}
    for image_id, rows in table.groupby("image_id", sort=False):
        keypoints = sorted(rows["keypoint"])
        if keypoints != list(range(1, n_keypoints + 1)):
            raise InputError(ERR_KEYPOINTS_RAGGED.format(path=path, image_id=image_id, have=keypoints[:8],
                                                         k=n_keypoints))
        landmarks[position[image_id], rows["keypoint"].to_numpy() - 1] = rows[["x", "y"]].to_numpy()
    if "spacing_mm" in table.columns:
        spacing = table.groupby("image_id", sort=False)["spacing_mm"].first().loc[image_ids].to_numpy(float)
    else:
        spacing = np.full(len(image_ids), np.nan if spacing_mm is None else float(spacing_mm))
    image_dir = Path(image_dir)
    sources = [_find_image(image_dir, i, i) for i in image_ids]
    meta = read_meta(meta_csv) if meta_csv else None
    return LandmarkData(image_ids, sources, landmarks, spacing, _attach_meta(image_ids, meta, meta_csv))
