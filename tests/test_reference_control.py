"""The image-classifier control: same folds as the error-based inference, and it sees what images show."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")
fairlandmark = pytest.importorskip("fairlandmark")

from fairlandmark.stats.folds import stratified_image_folds  # noqa: E402
from reference_model.control import ControlConfig, run_image_control  # noqa: E402
from reference_model.datasets import LandmarkData  # noqa: E402
from reference_model.synth import SynthSpec, write_synthetic  # noqa: E402

pytestmark = pytest.mark.torch

FAST = ControlConfig(encoder="tu-mobilenetv3_small_050", image_size=32, epochs=8, batch_size=8, lr=1e-2,
                     bn_momentum=0.5, device="cpu")


def _marked_images(n=40, seed=0):
    """Images of group 'B' carry a bright block: the attribute is visible in the image."""
    rng = np.random.default_rng(seed)
    ids = [f"{i:03d}" for i in range(n)]
    group = np.where(np.arange(n) % 2 == 0, "A", "B")
    images = []
    for g in group:
        image = rng.normal(0.4, 0.1, (32, 32))
        if g == "B":
            image[4:12, 4:12] += 0.5
        images.append((np.clip(image, 0, 1) * 255).astype(np.uint8))
    meta = pd.DataFrame({"image_id": ids, "group": group, "noise": rng.choice(["x", "y"], n)})
    return LandmarkData(ids, images, np.zeros((n, 1, 2)), np.full(n, 0.5), meta)


def test_control_uses_the_audits_folds_and_detects_a_visible_attribute():
    data = _marked_images()
    report = run_image_control(data, attribute="group", n_splits=5, seed=4, config=FAST, progress=False)
    expected = stratified_image_folds(data.image_ids, data.meta["group"], n_splits=5, seed=4)
    assert [f["test_ids"] for f in report["folds"]] == [list(test) for _, test in expected]
    assert report["chance_accuracy"] == 0.5
    assert report["image_accuracy_mean"] >= 0.9, report["folds"]


def test_control_beside_the_error_based_inference_on_the_same_images(tmp_path):
    data = write_synthetic(tmp_path / "data", SynthSpec(n_images=30, seed=1))
    rng = np.random.default_rng(0)
    tested = data.image_ids[:25]  # as after hold-outs: only some images have predictions
    rows = [{"run": run, "image_id": image_id, "keypoint": k + 1, "pred_x": x + rng.normal(0, 1),
             "pred_y": y + rng.normal(0, 1), "true_x": x, "true_y": y, "spacing_mm": 0.5}
            for run in (0, 1) for i, image_id in enumerate(tested)
            for k, (x, y) in enumerate(data.landmarks[i])]
    pd.DataFrame(rows).to_csv(tmp_path / "preds.csv", index=False)
    result = subprocess.run(
        [sys.executable, "-m", "reference_model", "control", "--data", tmp_path / "data", "--attribute", "sex",
         "--predictions", tmp_path / "preds.csv", "--out", tmp_path / "control.json", "--n-splits", "3",
         "--encoder", FAST.encoder, "--image-size", "32", "--epochs", "1", "--device", "cpu"],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "control.json").read_text())
    assert report["n_images"] == 25
    assert 0.0 <= report["error_accuracy_mean"] <= 1.0 and 0.0 <= report["image_accuracy_mean"] <= 1.0
    sex = data.meta.set_index("image_id").loc[tested, "sex"]
    from fairlandmark.stats.privacy import row_folds

    preds = pd.read_csv(tmp_path / "preds.csv", dtype={"image_id": str})
    per_image = preds.drop_duplicates(["run", "image_id"])
    error_folds = row_folds(per_image["image_id"], sex.loc[per_image["image_id"]].to_numpy(), n_splits=3, seed=0)
    error_test_images = [sorted(set(per_image["image_id"].iloc[test])) for _, test in error_folds]
    assert [sorted(f["test_ids"]) for f in report["folds"]] == error_test_images
