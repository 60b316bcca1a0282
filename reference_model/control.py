"""The image control (the paper's Table 2, "CNN image classifier").

If a sensitive attribute can be inferred from a model's per-keypoint errors,
is that because the errors leak it, or because the images show it anyway? A
CNN trained to predict the attribute from the image itself answers that. It
uses exactly the folds of the error-based inference
(:func:`fairlandmark.stats.folds.stratified_image_folds`, same images, same seed),
so the two accuracies are comparable fold by fold.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from reference_model.augment import augment_batch
from reference_model.datasets import LandmarkData
from reference_model.errors import InputError
from reference_model.preprocess import prepare
from reference_model.train import select_device

__all__ = ["ControlConfig", "build_classifier", "run_image_control"]

ERR_ATTRIBUTE = "meta: no column {name!r} to predict; available: {available}"
ERR_ONE_CLASS = "attribute {name!r}: needs at least two groups with {n} images each for {n}-fold cross-validation"
ERR_PREDICTION_IDS = "{path}: image id(s) {ids} are not in the dataset; use the predictions of this dataset"


@dataclass(frozen=True)
class ControlConfig:
    """Training settings of the image classifier."""

    encoder: str = "resnet18"
    image_size: int = 224
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-2
    augment: bool = True
    bn_momentum: float | None = None
    device: str = "auto"


class _Classifier(torch.nn.Module):
    """smp encoder (1 input channel) -> global average pool -> linear."""

    def __init__(self, encoder: str, n_classes: int, bn_momentum: float | None):
        super().__init__()
        import segmentation_models_pytorch as smp

        try:
            self.encoder = smp.encoders.get_encoder(encoder, in_channels=1, depth=5, weights=None)
        except (KeyError, ValueError, RuntimeError) as exc:
            raise InputError(f"encoder {encoder!r}: not an smp encoder ({str(exc).splitlines()[0][:100]})") from None
        self.head = torch.nn.Linear(self.encoder.out_channels[-1], n_classes)
        if bn_momentum is not None:
            for module in self.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.momentum = bn_momentum

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(images)[-1].mean(dim=(2, 3)))


def build_classifier(*, encoder: str, n_classes: int, bn_momentum: float | None = None) -> torch.nn.Module:
    """An image classifier on an smp encoder; nothing is downloaded."""
    return _Classifier(encoder, n_classes, bn_momentum)


def _fit_and_predict(images: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray, *,
                     n_classes: int, config: ControlConfig, seed: int, device: torch.device) -> np.ndarray:
    torch.manual_seed(seed)
    model = build_classifier(encoder=config.encoder, n_classes=n_classes, bn_momentum=config.bn_momentum).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # Class-balanced loss: a majority-class guess must not look like a leak.
    counts = np.bincount(labels[train], minlength=n_classes).astype(np.float32)
    weight = torch.tensor(counts.sum() / np.maximum(counts, 1) / n_classes, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    rng = np.random.default_rng(seed)
    for _ in range(config.epochs):
        model.train()
        order = rng.permutation(train)
        for start in range(0, len(order), config.batch_size):
            batch = order[start:start + config.batch_size]
            if len(batch) < 2:  # BatchNorm needs two samples
                continue
            x = torch.from_numpy(np.asarray(images[np.sort(batch)])).to(device)[:, None].float() / 255
            y = torch.from_numpy(labels[np.sort(batch)]).to(device)
            if config.augment:
                x, _ = augment_batch(x, torch.zeros(len(batch), 0, 2, device=device), generator=generator)
            loss = torch.nn.functional.cross_entropy(model(x), y, weight=weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    predicted = []
    with torch.no_grad():
        for start in range(0, len(test), config.batch_size):
            batch = test[start:start + config.batch_size]
            x = torch.from_numpy(np.asarray(images[batch])).to(device)[:, None].float() / 255
            predicted.append(model(x).argmax(1).cpu().numpy())
    return np.concatenate(predicted)


def _mean_std(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def run_image_control(data: LandmarkData, *, attribute: str, n_splits: int = 5, seed: int = 0,
                      config: ControlConfig = ControlConfig(), predictions_csv: str | Path | None = None,
                      out_path: str | Path | None = None, cache_dir: str | Path | None = None,
                      progress: bool = True) -> dict:
    """Cross-validated accuracy of a CNN that predicts ``attribute`` from the image.

    Parameters
    ----------
    data : LandmarkData
        Images and meta (``attribute`` must be a meta column).
    attribute : str
    n_splits, seed : int
        Folds of :func:`fairlandmark.stats.folds.stratified_image_folds`; give the
        audit's values to get its folds.
    config : ControlConfig
    predictions_csv : path, optional
        Predictions of the landmark model. The control then uses the images
        of that file (as the error-based inference does) and reports the
        error-based accuracy (:func:`fairlandmark.stats.privacy.attribute_inference`)
        on the same folds beside its own.
    out_path : path, optional
        JSON report, written atomically.

    Returns
    -------
    dict
        Per-fold and mean (std) accuracy and balanced accuracy, the majority
        rate (chance), the fold test ids, and the error-based scores when
        predictions were given.
    """
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    from fairlandmark.stats.folds import stratified_image_folds

    if attribute not in data.meta.columns:
        raise InputError(ERR_ATTRIBUTE.format(name=attribute, available=", ".join(map(str, data.meta.columns))))
    meta = data.meta.set_index("image_id")
    image_ids = list(data.image_ids)
    predictions = None
    if predictions_csv is not None:
        predictions = pd.read_csv(predictions_csv, dtype={"image_id": str})
        used = sorted(set(predictions["image_id"]))
        unknown = sorted(set(used) - set(image_ids))
        if unknown:
            raise InputError(ERR_PREDICTION_IDS.format(path=predictions_csv, ids=", ".join(unknown[:5])))
        image_ids = used
    labelled = [i for i in image_ids if pd.notna(meta.loc[i, attribute])]
    label_values = meta.loc[labelled, attribute].to_numpy()  # raw values: the audit's class order
    classes, labels = np.unique(label_values, return_inverse=True)
    if len(classes) < 2 or np.bincount(labels).min() < n_splits:
        raise InputError(ERR_ONE_CLASS.format(name=attribute, n=n_splits))
    positions = {image_id: i for i, image_id in enumerate(data.image_ids)}
    subset = data.subset([positions[i] for i in labelled])
    prepared = prepare(subset, size=config.image_size, cache_dir=cache_dir, progress=progress)
    images = np.asarray(prepared.images)
    index_of = {image_id: i for i, image_id in enumerate(labelled)}
    device = select_device(config.device)

    folds = stratified_image_folds(labelled, label_values, n_splits=n_splits, seed=seed)
    fold_rows = []
    for number, (train_ids, test_ids) in enumerate(_track(folds, progress), start=1):
        train = np.array([index_of[i] for i in train_ids])
        test = np.array([index_of[i] for i in test_ids])
        predicted = _fit_and_predict(images, labels, train, test, n_classes=len(classes), config=config,
                                     seed=seed + number, device=device)
        fold_rows.append({"fold": number, "n_train": len(train), "n_test": len(test),
                          "accuracy": float(accuracy_score(labels[test], predicted)),
                          "balanced_accuracy": float(balanced_accuracy_score(labels[test], predicted)),
                          "test_ids": [str(i) for i in test_ids]})
    accuracy = _mean_std([f["accuracy"] for f in fold_rows])
    balanced = _mean_std([f["balanced_accuracy"] for f in fold_rows])
    report = {
        "attribute": attribute, "classes": [str(c) for c in classes], "n_images": len(labelled),
        "n_splits": n_splits, "seed": seed, "config": asdict(config),
        "chance_accuracy": float(np.bincount(labels).max() / len(labels)),
        "chance_balanced_accuracy": 1.0 / len(classes),
        "image_accuracy_mean": accuracy[0], "image_accuracy_std": accuracy[1],
        "image_balanced_accuracy_mean": balanced[0], "image_balanced_accuracy_std": balanced[1],
        "folds": fold_rows, "error_accuracy_mean": None, "error_balanced_accuracy_mean": None,
    }
    if predictions is not None:
        from fairlandmark.stats.privacy import attribute_inference

        inferred = attribute_inference(predictions, data.meta, target=attribute, n_splits=n_splits, seed=seed,
                                       n_permutations=0)
        scores = inferred.scores.iloc[0]
        report["error_accuracy_mean"] = float(scores["accuracy"])
        report["error_balanced_accuracy_mean"] = float(scores["balanced_accuracy"])
    if out_path is not None:
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(report, indent=2))
        os.replace(tmp, out_path)
    return report


def _track(folds, enabled: bool):
    if not enabled:
        return folds
    from rich.progress import track

    return track(folds, description="image control folds")
