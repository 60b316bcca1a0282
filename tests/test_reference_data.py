"""Data side of the reference model: loaders, synthetic data, preprocessing, hold-outs, config (no torch)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from reference_model import InputError  # noqa: E402
from reference_model.config import TrainConfig, config_from_sources  # noqa: E402
from reference_model.datasets import load_cephadoadu, load_dha, load_generic, load_isbi2015  # noqa: E402
from reference_model.holdouts import balanced_holdouts, train_val_split  # noqa: E402
from reference_model.preprocess import geometry_for, pad_and_resize, prepare, to_model, to_original  # noqa: E402
from reference_model.synth import SynthSpec, make_synthetic, write_synthetic  # noqa: E402

# --- preprocessing -----------------------------------------------------------------------------

@pytest.mark.parametrize("height,width,size", [(64, 54, 64), (2400, 1935, 512), (37, 91, 64), (100, 100, 50)])
def test_coordinates_round_trip_exactly(height, width, size):
    rng = np.random.default_rng(0)
    xy = rng.uniform([0, 0], [width - 1, height - 1], size=(200, 2))
    geometry = geometry_for(height, width, size)
    back = to_original(to_model(xy, geometry), geometry)
    np.testing.assert_allclose(back, xy, rtol=0, atol=1e-9)


def test_padding_centres_the_image_and_corners_map_to_the_square():
    geometry = geometry_for(40, 20, 80)  # tall: padded left and right by 10 pixels, scale 2
    assert (geometry.pad_x, geometry.pad_y, geometry.scale) == (10, 0, 2.0)
    # The original's outer pixel edges land on the model image's content edges.
    np.testing.assert_allclose(to_model([[-0.5, -0.5]], geometry), [[19.5, -0.5]])
    np.testing.assert_allclose(to_model([[19.5, 39.5]], geometry), [[59.5, 79.5]])


@pytest.mark.parametrize("height,width,size", [(90, 60, 64), (60, 90, 64), (128, 100, 64)])
def test_a_landmark_stays_on_its_structure_after_pad_and_resize(height, width, size):
    image = np.zeros((height, width), dtype=np.float32)
    yy, xx = np.mgrid[0:height, 0:width]
    x0, y0 = 0.61 * width, 0.27 * height
    image += np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 3.0 ** 2))
    square, geometry = pad_and_resize(image, size)
    assert square.shape == (size, size) and square.dtype == np.float32
    assert 0.0 <= square.min() and square.max() <= 1.0
    # Intensity-weighted centre of the blob in the model image equals the mapped coordinate.
    weights = np.clip(square - 0.2, 0, None)
    vv, uu = np.mgrid[0:size, 0:size]
    centre = np.array([(uu * weights).sum(), (vv * weights).sum()]) / weights.sum()
    np.testing.assert_allclose(centre, to_model([x0, y0], geometry), atol=0.15)


def test_prepare_caches_and_memory_maps(tmp_path):
    data = make_synthetic(SynthSpec(n_images=6, seed=3))
    first = prepare(data, size=48, cache_dir=tmp_path)
    second = prepare(data, size=48, cache_dir=tmp_path)
    assert isinstance(second.images, np.memmap)
    assert second.images.dtype == np.uint8 and second.images.shape == (6, 48, 48)
    np.testing.assert_array_equal(np.asarray(first.images), np.asarray(second.images))
    assert first.geometries == second.geometries
    np.testing.assert_allclose(
        np.stack([to_original(second.landmarks[i], g) for i, g in enumerate(second.geometries)]),
        data.landmarks, atol=1e-9)


# --- synthetic data ----------------------------------------------------------------------------

def test_synthetic_data_is_seeded_and_plants_the_effect():
    spec = SynthSpec(n_images=40, seed=5, effect_keypoint=3, effect_contrast=0.2)
    a, b = make_synthetic(spec), make_synthetic(spec)
    np.testing.assert_array_equal(a.landmarks, b.landmarks)
    assert all(np.array_equal(x, y) for x, y in zip(a.sources, b.sources))
    assert a.image_ids[0] == "001" and set(a.meta["sex"]) == {"F", "M"}

    def contrast_at(keypoint):
        out = []
        for image, points in zip(a.sources, a.landmarks):
            x, y = np.round(points[keypoint - 1]).astype(int)
            out.append(float(image[y, x]) - float(np.median(image)))
        return np.array(out)

    female = (a.meta["sex"] == "F").to_numpy()
    planted, other = contrast_at(3), contrast_at(1)
    assert planted[female].mean() < 0.5 * planted[~female].mean()  # the planted subgroup is fainter
    assert abs(other[female].mean() - other[~female].mean()) < 0.25 * other.mean()  # other keypoints are not


def test_written_synthetic_data_loads_back_through_the_generic_loader(tmp_path):
    written = write_synthetic(tmp_path, SynthSpec(n_images=5, seed=1))
    loaded = load_generic(tmp_path / "images", tmp_path / "landmarks.csv", tmp_path / "meta.csv")
    assert loaded.image_ids == ["001", "002", "003", "004", "005"]
    np.testing.assert_allclose(loaded.landmarks, written.landmarks, atol=1e-12)
    np.testing.assert_array_equal(loaded.load_image(2), make_synthetic(SynthSpec(n_images=5, seed=1)).sources[2])
    assert list(loaded.meta.columns) == ["image_id", "sex", "age", "age_group"]
    assert loaded.spacing_mm.tolist() == [0.5] * 5


# --- loaders in the released layouts -----------------------------------------------------------

def _save_image(path: Path, height=30, width=20):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.arange(height * width).reshape(height, width) % 251).astype(np.uint8)).save(path)


def test_dha_loader_reads_the_wide_csv_and_sets_spacing_from_the_wrist(tmp_path):
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 20, size=(2, 37, 2))
    points[:, 4] = points[:, 0] + [10.0, 0.0]  # landmarks 1 and 5 ten pixels apart: 5 mm per pixel
    rows = [",".join(["3142"] + [f"{v:g}" for v in points[0].ravel()]),
            ",".join(["0099"] + [f"{v:g}" for v in points[1].ravel()])]
    (tmp_path / "all.csv").write_text("\n".join(rows) + "\n")
    for image_id in ("3142", "0099"):
        _save_image(tmp_path / "images" / f"{image_id}.jpg")
    pd.DataFrame({"image_id": ["3142", "0099"], "sex": ["F", "M"]}).to_csv(tmp_path / "meta.csv", index=False)
    data = load_dha(tmp_path / "all.csv", tmp_path / "images", meta_path=tmp_path / "meta.csv")
    assert data.image_ids == ["3142", "0099"]
    np.testing.assert_allclose(data.landmarks, np.round(points, 4), atol=1e-3)
    np.testing.assert_allclose(data.spacing_mm, [5.0, 5.0], rtol=1e-3)
    assert data.meta["sex"].tolist() == ["F", "M"] and data.load_image(0).shape == (30, 20)


def test_dha_loader_parses_the_real_annotation_file(tmp_path, shared_data):
    real = shared_data / "dha_all.csv"
    ids = [line.split(",")[0] for line in real.read_text().splitlines()[:3]]
    for image_id in ids:
        _save_image(tmp_path / f"{image_id}.jpg")
    three_rows = tmp_path / "all.csv"
    three_rows.write_text("\n".join(real.read_text().splitlines()[:3]) + "\n")
    data = load_dha(three_rows, tmp_path)
    assert data.landmarks.shape == (3, 37, 2)
    wrist_px = np.linalg.norm(data.landmarks[:, 0] - data.landmarks[:, 4], axis=1)
    np.testing.assert_allclose(data.spacing_mm * wrist_px, 50.0)


def test_dha_loader_names_the_bad_row(tmp_path):
    (tmp_path / "all.csv").write_text("1," + ",".join(["1"] * 74) + "\n2," + ",".join(["1"] * 70) + "\n")
    with pytest.raises(InputError, match=r"all.csv, row 2: expected an id and 74 coordinates"):
        load_dha(tmp_path / "all.csv", tmp_path)


def test_isbi_loader_averages_the_two_doctors(tmp_path):
    senior = np.arange(38, dtype=float).reshape(19, 2) * 10
    junior = senior + 4.0
    for name, points in (("senior", senior), ("junior", junior)):
        folder = tmp_path / "AnnotationsByMD" / f"400_{name}"
        folder.mkdir(parents=True)
        # Released files: 19 "x,y" lines, then the classification labels.
        (folder / "001.txt").write_text("\n".join(f"{x:g},{y:g}" for x, y in points) + "\n1\n2\n3\n")
    _save_image(tmp_path / "RawImage" / "TrainingData" / "001.bmp")
    data = load_isbi2015(tmp_path)
    np.testing.assert_allclose(data.landmarks[0], senior + 2.0)
    assert data.spacing_mm.tolist() == [0.1] and data.image_ids == ["001"]
    np.testing.assert_allclose(load_isbi2015(tmp_path, annotator="junior").landmarks[0], junior)


def test_cephadoadu_loader_reads_splits_and_groups(tmp_path):
    splits = {"train": [["a1", "adult"], ["u1", "under_age"]], "test": [["a2", "adult"]]}
    (tmp_path / "final_splits.json").write_text(json.dumps(splits))
    for name, group in [("a1", "adult"), ("u1", "under_age"), ("a2", "adult")]:
        _save_image(tmp_path / "data" / group / "dataset" / f"{name}.jpg")
        txt = tmp_path / "data" / group / "txt" / f"{name}.txt"
        txt.parent.mkdir(parents=True, exist_ok=True)
        txt.write_text("10 20\n30 40\n50 60\n")
    data = load_cephadoadu(tmp_path)
    assert data.image_ids == ["a1", "u1", "a2"]
    assert data.meta["age_group"].tolist() == ["adult", "under_age", "adult"]
    np.testing.assert_allclose(data.landmarks[1], [[10, 20], [30, 40], [50, 60]])
    assert load_cephadoadu(tmp_path, split="test").image_ids == ["a2"]


def test_generic_loader_reports_file_row_and_column(tmp_path):
    _save_image(tmp_path / "img" / "001.png")
    csv = tmp_path / "lm.csv"
    csv.write_text("image_id,keypoint,x,y\n001,1,3,4\n001,2,abc,5\n")
    with pytest.raises(InputError, match=r"lm.csv, row 3, column 'x': 'abc' is not a number"):
        load_generic(tmp_path / "img", csv)
    csv.write_text("image_id,keypoint,x\n001,1,3\n")
    with pytest.raises(InputError, match=r"missing column\(s\) y"):
        load_generic(tmp_path / "img", csv)
    csv.write_text("image_id,keypoint,x,y\n001,1,3,4\n002,1,3,4\n")
    with pytest.raises(InputError, match=r"image for id '002': no file 002\.\*"):
        load_generic(tmp_path / "img", csv)


# --- hold-outs and config ----------------------------------------------------------------------

def test_holdouts_are_disjoint_stratified_and_seeded():
    rng = np.random.default_rng(1)
    meta = pd.DataFrame({"image_id": [f"{i:03d}" for i in range(200)],
                         "sex": rng.choice(["F", "M"], 200, p=[0.3, 0.7]),
                         "age": rng.integers(5, 90, 200)})
    holdouts = balanced_holdouts(meta, ["sex", "age"], n_splits=4, test_fraction=0.2, val_fraction=0.1, seed=7)
    assert holdouts == balanced_holdouts(meta, ["sex", "age"], n_splits=4, test_fraction=0.2, val_fraction=0.1,
                                         seed=7)
    share_f = (meta["sex"] == "F").mean()
    sex = meta.set_index("image_id")["sex"]
    for h in holdouts:
        parts = [set(h.train_ids), set(h.val_ids), set(h.test_ids)]
        assert sum(map(len, parts)) == 200 and len(set.union(*parts)) == 200
        assert len(h.test_ids) == 40 and len(h.val_ids) == 20
        assert abs((sex.loc[list(h.test_ids)] == "F").mean() - share_f) < 0.03
    assert holdouts[0].test_ids != holdouts[1].test_ids
    train, val = train_val_split(meta, ["sex"], val_fraction=0.25, seed=0)
    assert len(val) == 50 and not set(train) & set(val)


@pytest.mark.parametrize("n_images", [3, 6, 7, 11])
def test_holdouts_of_a_tiny_dataset_fall_back_to_unstratified_splits(n_images):
    meta = pd.DataFrame({"image_id": [str(i) for i in range(n_images)],
                         "sex": (["F", "M"] * n_images)[:n_images]})
    for h in balanced_holdouts(meta, ["sex"], n_splits=3, test_fraction=0.2, val_fraction=0.1, seed=0):
        parts = [set(h.train_ids), set(h.val_ids), set(h.test_ids)]
        assert all(parts) and len(set.union(*parts)) == n_images == sum(map(len, parts))
    train, val = train_val_split(meta, ["sex"], val_fraction=0.1)
    assert len(val) == -(-n_images // 10) and len(train) == n_images - len(val)  # sklearn rounds the share up
    with pytest.raises(InputError, match="only 2 image"):
        balanced_holdouts(meta.head(2), ["sex"])


def test_config_file_and_flags_override_the_paper_defaults(tmp_path):
    default = TrainConfig()
    assert (default.encoder, default.image_size, default.batch_size, default.grad_accumulation, default.epochs,
            default.lr) == ("densenet121", 512, 8, 8, 200, 1e-3)
    (tmp_path / "c.toml").write_text('[train]\nencoder = "resnet18"\nepochs = 3\n')
    config = config_from_sources(config_file=tmp_path / "c.toml", overrides={"epochs": 5, "lr": None})
    assert (config.encoder, config.epochs, config.lr) == ("resnet18", 5, 1e-3)
    (tmp_path / "c.json").write_text('{"epoch": 3}')
    with pytest.raises(InputError, match=r"unknown option 'epoch'"):
        config_from_sources(config_file=tmp_path / "c.json")
    with pytest.raises(InputError, match=r"'batch_size': expected an integer"):
        config_from_sources(overrides={"batch_size": "8"})


def test_cache_tells_different_datasets_apart(tmp_path):
    a = make_synthetic(SynthSpec(n_images=4, seed=1))
    b = make_synthetic(SynthSpec(n_images=4, seed=2))
    first, second = prepare(a, size=32, cache_dir=tmp_path), prepare(b, size=32, cache_dir=tmp_path)
    assert not np.array_equal(np.asarray(first.images), np.asarray(second.images))
    assert len(list(tmp_path.glob("images_32_*.npy"))) == 2
