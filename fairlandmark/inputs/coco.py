"""COCO keypoints to the long predictions format.

Keypoint pipelines (MMPose, Detectron2, most data sets) write the ground truth
as a COCO file and the predictions in the COCO *results* format:

* ground truth: ``{"images": [{"id", "file_name", ...}], "annotations":
  [{"image_id", "category_id", "keypoints": [x, y, v] * K, ...}],
  "categories": [{"id", "name", "keypoints": [names]}]}``;
* predictions: ``[{"image_id", "category_id", "keypoints": [x, y, s] * K,
  "score"}]`` (a dict with an ``annotations`` list is read the same way).

Rules (see docs/formats.md):

* keypoints are named from the category's ``keypoints`` list, in its order;
* ground truth with ``v = 0`` is *unlabelled*: written with empty
  ``true_x``/``true_y``, left out of that keypoint's numbers, never a miss;
* a predicted keypoint with third value ``0`` is a missing prediction;
* one instance per image. Several annotations (or predictions) of the
  category for an image are refused unless ``instance="largest"``: the
  ground-truth annotation with the largest ``area`` (else bounding-box area)
  and the prediction with the highest ``score`` are kept;
* crowd annotations (``iscrowd = 1``) and other categories are ignored.

Image ids are the COCO ``id`` as a string, or the stem of ``file_name`` with
``image_key="file_stem"`` (to match DICOM files or a metadata file by name).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fairlandmark.exceptions import FairlandmarkWarning, InputError
from fairlandmark.inputs.convert import check_spacing, run_labels

__all__ = ["CocoTruth", "read_coco_truth", "read_coco_predictions", "coco_to_long", "coco_metadata",
           "INSTANCE_RULES", "IMAGE_KEYS"]

INSTANCE_RULES = ("only", "largest")
IMAGE_KEYS = ("id", "file_stem")
# Fields of a COCO image entry that describe the file, not the patient.
STANDARD_IMAGE_FIELDS = frozenset({"id", "file_name", "width", "height", "license", "flickr_url", "coco_url",
                                   "date_captured"})

MSG_NO_FILE = "{src}: file not found; check the path"
MSG_NOT_JSON = "{src}: is not valid JSON ({detail}); give a COCO keypoints file"
MSG_TRUTH_SHAPE = "{src}: a COCO ground-truth file is an object with 'images', 'annotations' and 'categories'; {why}"
MSG_PRED_SHAPE = ("{src}: COCO results are a list of {{image_id, category_id, keypoints, score}} objects "
                  "(or an object with an 'annotations' list); {why}")
MSG_FIELD = "{src}: {what} {index} has no '{field}'; every {what} needs one"
MSG_NO_CATEGORY = "{src}: no category has a 'keypoints' list of names; add one to 'categories'"
MSG_WHICH_CATEGORY = ("{src}: categories {names} all have keypoints; choose one with «category»")
MSG_UNKNOWN_CATEGORY = "{src}: category {value!r} is not in 'categories' (those with keypoints: {names})"
MSG_DUP_KEYPOINT_NAME = "{src}: category {cat!r} names keypoint {name!r} twice; give each keypoint its own name"
MSG_LENGTH = ("{src}: {what} {index} (image {image}) has {n} keypoint values; category {cat!r} has {k} keypoints, "
              "so give 3 x {k} = {n3} values [x, y, v, ...]")
MSG_NOT_NUMBER = "{src}: {what} {index} (image {image}): keypoint values must be numbers; found {value!r}"
MSG_DUP_IMAGE = "{src}: image id {image!r} appears twice in 'images'; keep one entry per image"
MSG_DUP_STEM = ("{src}: images {a!r} and {b!r} have the same file stem {stem!r}; use «image_key» id "
                "or rename the files")
MSG_UNKNOWN_IMAGE = ("{src}: {what} {index} refers to image_id {image!r}, which is not in the ground truth's "
                     "'images' ({truth}); fix the id or add the image")
MSG_PRED_CATEGORY = ("{src}: prediction {index} has category_id {value!r}, which is not a category of the "
                     "ground truth {truth}")
MSG_NO_PRED_OF_CATEGORY = "{src}: no prediction has category_id {cat_id} ({cat!r}); check the category"
MSG_SEVERAL = ("{src}: image {image!r} has {n} {what} of category {cat!r}; fairlandmark audits one instance per "
               "image: keep one, or pass «instance» largest (largest ground-truth area, highest prediction score)")
MSG_NO_AREA = ("{src}: annotation {index} (image {image!r}) has neither 'area' nor 'bbox', so «instance» largest "
               "cannot rank it; add an area")
MSG_NO_SCORE = ("{src}: prediction {index} (image {image!r}) has no 'score', so «instance» largest cannot rank it; "
                "add scores or keep one prediction per image")
MSG_INSTANCE_RULE = "«instance»: must be one of {rules}, got {value!r}"
MSG_IMAGE_KEY = "«image_key»: must be one of {keys}, got {value!r}"
MSG_UNANNOTATED = ("{src}: {n} image(s) have no annotation of category {cat!r} (e.g. {examples}); they have no "
                   "ground truth and are left out")
MSG_UNPREDICTED = ("{src}: {n} image(s) of the ground truth have no prediction (e.g. {examples}); they are written "
                   "with empty pred_x/pred_y and count as misses")
MSG_NO_METADATA = ("{src}: the 'images' entries hold no fields beyond the standard COCO ones; add fields such as "
                   "sex, age, site to each image, or give a metadata file")


@dataclass(frozen=True)
class CocoTruth:
    """A validated COCO ground truth, one instance per image.

    Attributes
    ----------
    source : str
        File name, for messages.
    category_id : int
        The category audited.
    category : str
        Its name.
    keypoints : list of str
        Keypoint names, in the category's order.
    image_ids : ndarray of str, shape (N,)
        Ids of the images with an annotation (COCO id or file stem).
    coco_ids : ndarray of object, shape (N,)
        Their COCO image ids, as written in the file.
    true : ndarray of float, shape (N, K, 2)
        Ground-truth (x, y); NaN where ``v = 0`` (unlabelled).
    images : pandas.DataFrame
        Every ``images`` entry, with an ``image_id`` column in the chosen key.
    category_ids : frozenset
        Ids of every category in the file (to tell another category's
        predictions from an unknown category).
    """

    source: str
    category_id: object
    category: str
    keypoints: list
    image_ids: np.ndarray
    coco_ids: np.ndarray
    true: np.ndarray
    images: pd.DataFrame
    category_ids: frozenset = frozenset()

    @property
    def n_unlabelled(self) -> int:
        return int(np.isnan(self.true[..., 0]).sum())


def _load_json(path: str | os.PathLike) -> tuple[Any, str]:
    src = os.fspath(path)
    if not os.path.exists(src):
        raise InputError(MSG_NO_FILE.format(src=src))
    try:
        with open(src, encoding="utf-8-sig") as handle:
            return json.load(handle), src
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(MSG_NOT_JSON.format(src=src, detail=str(exc).splitlines()[0])) from None


def _field(entry: Any, name: str, src: str, what: str, index: Any) -> Any:
    if not isinstance(entry, dict) or name not in entry:
        raise InputError(MSG_FIELD.format(src=src, what=what, index=index, field=name))
    return entry[name]


def _check_choice(value: Any, choices: tuple, message: str, **names: str) -> Any:
    if value not in choices:
        raise InputError(message.format(value=value, **names))
    return value


def _keypoint_array(entries: list, k: int, src: str, what: str, cat: str,
                    image_of: Callable[[dict], Any]) -> np.ndarray:
    """(n, K, 3) float array of the entries' keypoints; InputError on a wrong length or a non-number."""
    out = np.empty((len(entries), k, 3))
    for i, (index, entry) in enumerate(entries):
        values = _field(entry, "keypoints", src, what, index)
        if not isinstance(values, list) or len(values) != 3 * k:
            n = len(values) if isinstance(values, list) else 0
            raise InputError(MSG_LENGTH.format(src=src, what=what, index=index, image=image_of(entry), n=n,
                                               cat=cat, k=k, n3=3 * k))
        bad = next((v for v in values if isinstance(v, bool) or not isinstance(v, (int, float))), None)
        if bad is not None or any(v is None for v in values):
            raise InputError(MSG_NOT_NUMBER.format(src=src, what=what, index=index, image=image_of(entry),
                                                   value=bad))
        out[i] = np.asarray(values, dtype=float).reshape(k, 3)
    return out


def _choose_category(doc: dict, src: str, category: str | int | None) -> dict:
    cats = [c for c in doc["categories"] if isinstance(c, dict) and isinstance(c.get("keypoints"), list)]
    if category is not None:
        match = [c for c in doc["categories"] if isinstance(c, dict)
                 and (str(c.get("name")) == str(category) or str(c.get("id")) == str(category))]
        if not match or not isinstance(match[0].get("keypoints"), list):
            names = ", ".join(repr(c.get("name")) for c in cats) or "none"
            raise InputError(MSG_UNKNOWN_CATEGORY.format(src=src, value=category, names=names))
        return match[0]
    if not cats:
        raise InputError(MSG_NO_CATEGORY.format(src=src))
    if len(cats) > 1:
        raise InputError(MSG_WHICH_CATEGORY.format(src=src, names=", ".join(repr(c.get("name")) for c in cats)))
    return cats[0]


def _pick_instances(keys: list, ranks: Any, src: str, what: str, cat: str, instance: str) -> np.ndarray:
    """Index of the kept entry per key: refuse repeats, or keep the highest rank ("largest")."""
    series = pd.Series(keys, dtype=object)
    repeated = series.duplicated(keep=False).to_numpy()
    if repeated.any() and instance == "only":
        image = series[repeated].iloc[0]
        raise InputError(MSG_SEVERAL.format(src=src, image=image, n=int((series == image).sum()), what=what, cat=cat))
    # Highest rank first, ties by order in the file; then the first entry per key.
    order = np.lexsort((np.arange(len(series)), -np.asarray(ranks, dtype=float)))
    first = ~series.iloc[order].duplicated(keep="first").to_numpy()
    return np.sort(order[first])


def read_coco_truth(path: str | os.PathLike, *, category: str | int | None = None, instance: str = "only",
                    image_key: str = "id") -> CocoTruth:
    """Read and validate a COCO keypoints ground-truth file.

    Parameters
    ----------
    path : str or path-like
        COCO JSON with ``images``, ``annotations`` and ``categories``.
    category : str or int, optional
        Name or id of the category to audit; needed only when several
        categories have keypoints.
    instance : {"only", "largest"}, default "only"
        ``"only"`` refuses an image with several annotations of the category;
        ``"largest"`` keeps the one with the largest ``area`` (else bbox area).
    image_key : {"id", "file_stem"}, default "id"
        Image ids of the output: the COCO id as a string, or the stem of
        ``file_name`` (``"scans/001.dcm"`` -> ``"001"``).

    Returns
    -------
    CocoTruth

    Raises
    ------
    InputError
        On a malformed file, a missing category, a wrong number of keypoint
        values, an annotation of an unknown image or several instances.

    Examples
    --------
    >>> import json, os, tempfile
    >>> gt = {"images": [{"id": 1, "file_name": "a.png"}],
    ...       "annotations": [{"image_id": 1, "category_id": 1, "keypoints": [10, 20, 2, 0, 0, 0]}],
    ...       "categories": [{"id": 1, "name": "skull", "keypoints": ["sella", "nasion"]}]}
    >>> path = os.path.join(tempfile.mkdtemp(), "gt.json"); _ = open(path, "w").write(json.dumps(gt))
    >>> truth = read_coco_truth(path)
    >>> truth.keypoints, truth.true[0].tolist(), truth.n_unlabelled
    (['sella', 'nasion'], [[10.0, 20.0], [nan, nan]], 1)
    """
    _check_choice(instance, INSTANCE_RULES, MSG_INSTANCE_RULE, rules=", ".join(INSTANCE_RULES))
    _check_choice(image_key, IMAGE_KEYS, MSG_IMAGE_KEY, keys=", ".join(IMAGE_KEYS))
    doc, src = _load_json(path)
    if not isinstance(doc, dict):
        raise InputError(MSG_TRUTH_SHAPE.format(src=src, why=f"found a {type(doc).__name__}"))
    for name in ("images", "annotations", "categories"):
        if not isinstance(doc.get(name), list):
            raise InputError(MSG_TRUTH_SHAPE.format(src=src, why=f"'{name}' is missing or not a list"))
    cat = _choose_category(doc, src, category)
    cat_name, cat_id, names = str(cat.get("name")), cat.get("id"), [str(n) for n in cat["keypoints"]]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise InputError(MSG_DUP_KEYPOINT_NAME.format(src=src, cat=cat_name, name=name))

    coco_ids = [_field(img, "id", src, "image", i) for i, img in enumerate(doc["images"])]
    seen = pd.Series([str(c) for c in coco_ids]).duplicated()
    if seen.any():
        raise InputError(MSG_DUP_IMAGE.format(src=src, image=coco_ids[int(np.flatnonzero(seen)[0])]))
    if image_key == "file_stem":
        files = [str(_field(img, "file_name", src, "image", i)) for i, img in enumerate(doc["images"])]
        keys = [os.path.splitext(os.path.basename(f.replace("\\", "/")))[0] for f in files]
        dup = pd.Series(keys).duplicated()
        if dup.any():
            j = int(np.flatnonzero(dup)[0])
            first = keys.index(keys[j])
            raise InputError(MSG_DUP_STEM.format(src=src, a=files[first], b=files[j], stem=keys[j]))
    else:
        keys = [str(c) for c in coco_ids]
    key_of = dict(zip((str(c) for c in coco_ids), keys))

    entries = [(i, a) for i, a in enumerate(doc["annotations"])
               if isinstance(a, dict) and a.get("category_id") == cat_id and not a.get("iscrowd", 0)]
    for i, a in entries:
        image = _field(a, "image_id", src, "annotation", i)
        if str(image) not in key_of:
            raise InputError(MSG_UNKNOWN_IMAGE.format(src=src, what="annotation", index=i, image=image, truth=src))
    ann_keys = [key_of[str(a["image_id"])] for _, a in entries]
    ranks: list[float] = []
    if instance == "largest":
        for i, a in entries:
            if "area" in a:
                ranks.append(float(a["area"]))
            elif isinstance(a.get("bbox"), list) and len(a["bbox"]) == 4:
                ranks.append(float(a["bbox"][2]) * float(a["bbox"][3]))
            else:
                raise InputError(MSG_NO_AREA.format(src=src, index=i, image=a["image_id"]))
    else:
        ranks = [0.0] * len(entries)
    kept = _pick_instances(ann_keys, ranks, src, "annotations", cat_name, instance)
    position = {k: i for i, k in enumerate(keys)}
    entries = [entries[j] for j in sorted(kept, key=lambda j: position[ann_keys[j]])]  # in the order of 'images'
    kps = _keypoint_array(entries, len(names), src, "annotation", cat_name, lambda e: e.get("image_id"))
    true = np.where((kps[..., 2] > 0)[..., None], kps[..., :2], np.nan)  # v = 0: not labelled

    annotated = {key_of[str(a["image_id"])] for _, a in entries}
    missing = [k for k in keys if k not in annotated]
    if missing:
        warnings.warn(MSG_UNANNOTATED.format(src=src, n=len(missing), cat=cat_name,
                                             examples=", ".join(map(repr, missing[:3]))),
                      FairlandmarkWarning, stacklevel=2)
    images = pd.DataFrame([{k: v for k, v in img.items()} for img in doc["images"]])
    images.insert(0, "image_id", keys)
    return CocoTruth(source=src, category_id=cat_id, category=cat_name, keypoints=names,
                     image_ids=np.asarray([key_of[str(a["image_id"])] for _, a in entries], dtype=object),
                     coco_ids=np.asarray([a["image_id"] for _, a in entries], dtype=object), true=true,
                     images=images,
                     category_ids=frozenset(c.get("id") for c in doc["categories"] if isinstance(c, dict)))


def read_coco_predictions(path: str | os.PathLike, truth: CocoTruth, *,
                          instance: str = "only") -> tuple[np.ndarray, np.ndarray]:
    """Read COCO keypoint results and align them to the ground truth's images.

    Parameters
    ----------
    path : str or path-like
        A list of ``{image_id, category_id, keypoints: [x, y, s] * K, score}``.
    truth : CocoTruth
        The ground truth (gives the category, keypoints and image ids).
    instance : {"only", "largest"}, default "only"
        ``"largest"`` keeps the prediction with the highest ``score`` where an
        image has several; ``"only"`` refuses that.

    Returns
    -------
    pred : ndarray of float, shape (N, K, 2)
        Aligned to ``truth.image_ids``; NaN where the keypoint's third value
        is 0 (a missing prediction) or the image has no prediction.
    has_pred : ndarray of bool, shape (N,)
        Whether the image has a prediction.
    """
    _check_choice(instance, INSTANCE_RULES, MSG_INSTANCE_RULE, rules=", ".join(INSTANCE_RULES))
    doc, src = _load_json(path)
    if isinstance(doc, dict):
        if not isinstance(doc.get("annotations"), list):
            raise InputError(MSG_PRED_SHAPE.format(src=src, why="found an object without an 'annotations' list"))
        doc = doc["annotations"]
    if not isinstance(doc, list):
        raise InputError(MSG_PRED_SHAPE.format(src=src, why=f"found a {type(doc).__name__}"))
    truth_images = set(truth.images["id"].astype(str))
    key_of = dict(zip(truth.images["id"].astype(str), truth.images["image_id"]))
    known_cats = truth.category_ids
    entries = []
    for i, p in enumerate(doc):
        image = _field(p, "image_id", src, "prediction", i)
        cat = _field(p, "category_id", src, "prediction", i)
        if cat not in known_cats:
            raise InputError(MSG_PRED_CATEGORY.format(src=src, index=i, value=cat, truth=truth.source))
        if str(image) not in truth_images:
            raise InputError(MSG_UNKNOWN_IMAGE.format(src=src, what="prediction", index=i, image=image,
                                                      truth=truth.source))
        if cat == truth.category_id:
            entries.append((i, p))
    if doc and not entries:
        raise InputError(MSG_NO_PRED_OF_CATEGORY.format(src=src, cat_id=truth.category_id, cat=truth.category))
    keys = [key_of[str(p["image_id"])] for _, p in entries]
    ranks: list[float] = []
    if instance == "largest":
        for i, p in entries:
            if not isinstance(p.get("score"), (int, float)):
                raise InputError(MSG_NO_SCORE.format(src=src, index=i, image=p["image_id"]))
            ranks.append(float(p["score"]))
    else:
        ranks = [0.0] * len(entries)
    kept = _pick_instances(keys, ranks, src, "predictions", truth.category, instance)
    entries = [entries[j] for j in kept]
    kps = _keypoint_array(entries, len(truth.keypoints), src, "prediction", truth.category,
                          lambda e: e.get("image_id"))
    n, k = len(truth.image_ids), len(truth.keypoints)
    pred = np.full((n, k, 2), np.nan)
    has_pred = np.zeros(n, dtype=bool)
    where = pd.Index(truth.image_ids).get_indexer([keys[j] for j in kept])
    ok = where >= 0  # predictions of an image without ground-truth annotation are dropped with it
    pred[where[ok]] = np.where((kps[ok, :, 2] > 0)[..., None], kps[ok, :, :2], np.nan)  # score 0: missing
    has_pred[where[ok]] = True
    return pred, has_pred


def coco_to_long(pred: str | os.PathLike | Sequence[str | os.PathLike], truth: str | os.PathLike | CocoTruth, *,
                 runs: Sequence[str] | None = None, category: str | int | None = None, instance: str = "only",
                 image_key: str = "id", spacing_mm: float | None = None,
                 predicted_only: bool = False) -> pd.DataFrame:
    """COCO ground truth and COCO results file(s) to the long predictions table.

    Parameters
    ----------
    pred : path or list of paths
        One COCO results file per run.
    truth : path or CocoTruth
        The COCO ground truth.
    runs : list of str, optional
        One run label per results file (required with several files).
    category, instance, image_key
        See :func:`read_coco_truth` (``instance`` also applies to predictions).
    spacing_mm : float, optional
        Adds a ``spacing_mm`` column.
    predicted_only : bool, default False
        Skip images a run did not predict; by default they are written as
        missing predictions, with a warning giving the count.

    Returns
    -------
    pandas.DataFrame
        ``[run,] image_id, keypoint, pred_x, pred_y, true_x, true_y
        [, spacing_mm]``; keypoints are the category's names; unlabelled
        ground truth (``v = 0``) has empty ``true_x``/``true_y``.

    Examples
    --------
    >>> import json, os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> gt = {"images": [{"id": 1}], "categories": [{"id": 1, "name": "hand", "keypoints": ["a", "b"]}],
    ...       "annotations": [{"image_id": 1, "category_id": 1, "keypoints": [0, 0, 2, 5, 5, 0]}]}
    >>> res = [{"image_id": 1, "category_id": 1, "keypoints": [3, 4, 0.9, 5, 5, 0.8], "score": 0.9}]
    >>> g, p = os.path.join(folder, "gt.json"), os.path.join(folder, "res.json")
    >>> _ = open(g, "w").write(json.dumps(gt)); _ = open(p, "w").write(json.dumps(res))
    >>> coco_to_long(p, g).to_dict("list")["true_x"]
    [0.0, nan]
    """
    paths = [pred] if isinstance(pred, (str, os.PathLike)) else list(pred)
    labels = run_labels(len(paths), runs)
    truth = truth if isinstance(truth, CocoTruth) else read_coco_truth(truth, category=category, instance=instance,
                                                                      image_key=image_key)
    spacing_mm = check_spacing(spacing_mm)
    n, k = len(truth.image_ids), len(truth.keypoints)
    frames = []
    for path, label in zip(paths, labels):
        aligned, has_pred = read_coco_predictions(path, truth, instance=instance)
        if not has_pred.all() and not predicted_only:
            warnings.warn(MSG_UNPREDICTED.format(src=os.fspath(path), n=int((~has_pred).sum()),
                                                 examples=", ".join(map(repr, truth.image_ids[~has_pred][:3]))),
                          FairlandmarkWarning, stacklevel=2)
        keep = has_pred if predicted_only else np.ones(n, dtype=bool)
        m = int(keep.sum())
        columns = {}
        if label is not None:
            columns["run"] = np.full(m * k, label, dtype=object)
        columns["image_id"] = np.repeat(truth.image_ids[keep], k).astype(object)
        columns["keypoint"] = np.tile(np.asarray(truth.keypoints, dtype=object), m)
        columns["pred_x"] = aligned[keep, :, 0].ravel()
        columns["pred_y"] = aligned[keep, :, 1].ravel()
        columns["true_x"] = truth.true[keep, :, 0].ravel()
        columns["true_y"] = truth.true[keep, :, 1].ravel()
        if spacing_mm is not None:
            columns["spacing_mm"] = np.full(m * k, spacing_mm)
        frames.append(pd.DataFrame(columns))
    return pd.concat(frames, ignore_index=True)


def coco_metadata(truth: CocoTruth | str | os.PathLike, *, fields: Sequence[str] | None = None) -> pd.DataFrame:
    """Metadata table from the extra fields of the COCO ``images`` entries.

    Parameters
    ----------
    truth : CocoTruth or path
        The ground truth.
    fields : list of str, optional
        Fields to keep; default every field that is not a standard COCO image
        field (``id, file_name, width, height, license, flickr_url, coco_url,
        date_captured``) and holds plain values.

    Returns
    -------
    pandas.DataFrame
        ``image_id`` plus one column per field, one row per annotated image
        (ids in the ground truth's key), ready for :func:`fairlandmark.audit`.

    Examples
    --------
    >>> import json, os, tempfile
    >>> gt = {"images": [{"id": 7, "file_name": "x.png", "sex": "F", "age": 12}],
    ...       "categories": [{"id": 1, "name": "hand", "keypoints": ["a"]}],
    ...       "annotations": [{"image_id": 7, "category_id": 1, "keypoints": [1, 2, 2]}]}
    >>> path = os.path.join(tempfile.mkdtemp(), "gt.json"); _ = open(path, "w").write(json.dumps(gt))
    >>> coco_metadata(path).to_dict("records")
    [{'image_id': '7', 'sex': 'F', 'age': 12}]
    """
    truth = truth if isinstance(truth, CocoTruth) else read_coco_truth(truth)
    images = truth.images
    if fields is None:
        fields = [c for c in images.columns if c != "image_id" and c not in STANDARD_IMAGE_FIELDS
                  and not images[c].map(lambda v: isinstance(v, (list, dict))).any()]
    else:
        for col in fields:
            if col not in images.columns:
                raise InputError(MSG_FIELD.format(src=truth.source, what="images entry", index="(any)", field=col))
    if not fields:
        raise InputError(MSG_NO_METADATA.format(src=truth.source))
    meta = images.set_index("image_id").loc[list(truth.image_ids), list(fields)].reset_index()
    return meta
