"""Reference model on CPU at toy size: loss, decoding, augmentation, training, resume, predictions, CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")

from reference_model import InputError  # noqa: E402
from reference_model.augment import augment_batch  # noqa: E402
from _reference_config import TINY  # noqa: E402
from reference_model.errors import TrainingDivergedError  # noqa: E402
from reference_model.heatmap import decode, one_hot_heatmaps, spatial_softmax_ce, target_indices  # noqa: E402
from reference_model.model import build_unet, load_encoder_weights  # noqa: E402
from reference_model.predict import mean_radial_error_mm, predict_coords, predictions_frame  # noqa: E402
from reference_model.preprocess import prepare  # noqa: E402
from reference_model.synth import SynthSpec, make_synthetic, write_synthetic  # noqa: E402
from reference_model.train import MeanObjective, load_model, train_model  # noqa: E402

pytestmark = pytest.mark.torch



@pytest.fixture(scope="module")
def synthetic():
    data = make_synthetic(SynthSpec(n_images=40, seed=11))
    return data, prepare(data, size=64)


# --- loss and decoding -------------------------------------------------------------------------

def test_spatial_softmax_ce_is_cross_entropy_over_pixels_and_stable():
    logits = torch.randn(3, 4, 16, 16, dtype=torch.float64)
    coords = torch.rand(3, 4, 2) * 15
    index, valid = target_indices(coords, 16)
    ours = spatial_softmax_ce(logits, index, valid)
    reference = torch.nn.functional.cross_entropy(logits.flatten(2).transpose(1, 2).float(), index,
                                                  reduction="none")
    assert ours.shape == (3, 4)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    # Huge logits: the log-sum-exp stays finite and exact.
    big = torch.zeros(1, 1, 8, 8)
    big[0, 0, 2, 5] = 1e4
    loss = spatial_softmax_ce(big, torch.tensor([[2 * 8 + 5]]))
    assert torch.isfinite(loss).all() and loss.item() == pytest.approx(0.0, abs=1e-6)
    # Single hot pixel target, the paper's H_s(i, j).
    heat = one_hot_heatmaps(torch.tensor([[[5.2, 2.7]]]), 8)
    assert heat.sum() == 1 and heat[0, 0, 3, 5] == 1


def test_missing_or_outside_landmarks_are_masked():
    index, valid = target_indices(torch.tensor([[[3.0, 4.0], [float("nan"), 1.0], [70.0, 2.0]]]), 64)
    assert valid.tolist() == [[True, False, False]] and index[0, 0] == 4 * 64 + 3
    loss = spatial_softmax_ce(torch.randn(1, 3, 64, 64), index, valid)
    assert loss[0, 1] == 0 and loss[0, 2] == 0 and loss[0, 0] > 0


def test_decode_takes_the_argmax_and_subpixel_recovers_the_offset():
    size = 32
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    true = torch.tensor([[12.3, 20.8], [5.0, 7.0]])
    logits = torch.stack([-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5 ** 2) for x, y in true])[None]
    assert decode(logits).tolist() == [[[12.0, 21.0], [5.0, 7.0]]]
    torch.testing.assert_close(decode(logits, subpixel=True)[0], true, atol=1e-3, rtol=0)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_augmentation_moves_landmarks_with_the_image(device):
    size = 64
    generator = torch.Generator(device=device).manual_seed(0)
    coords = torch.tensor([[[20.0, 30.0]], [[45.0, 12.0]], [[33.0, 50.0]]], device=device)
    yy, xx = torch.meshgrid(torch.arange(size, device=device).float(), torch.arange(size, device=device).float(),
                            indexing="ij")
    images = torch.stack([torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8.0) for x, y in coords[:, 0]])[:, None]
    moved, moved_coords = augment_batch(images, coords, generator=generator, rotation_deg=15, scale=0.1,
                                        translation=0.1, intensity=0.0)
    assert moved.device.type == device and not torch.allclose(moved_coords, coords)  # something moved
    for image, point in zip(moved[:, 0], moved_coords[:, 0]):
        weights = image.clamp(min=0)
        centre = torch.stack([(xx * weights).sum(), (yy * weights).sum()]) / weights.sum()
        torch.testing.assert_close(centre, point, atol=0.25, rtol=0)


def test_encoder_weights_load_from_a_local_three_channel_state_dict(tmp_path):
    import segmentation_models_pytorch as smp

    rgb = smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=2)
    torch.save(rgb.encoder.state_dict(), tmp_path / "imagenet.pth")
    model = build_unet(encoder="resnet18", n_keypoints=5, encoder_weights=tmp_path / "imagenet.pth")
    torch.testing.assert_close(model.encoder.conv1.weight, rgb.encoder.conv1.weight.sum(1, keepdim=True))
    torch.testing.assert_close(model.encoder.layer4[1].conv2.weight, rgb.encoder.layer4[1].conv2.weight)
    torch.save({"something": torch.zeros(3)}, tmp_path / "wrong.pth")
    with pytest.raises(InputError, match="only 0 of"):
        load_encoder_weights(model.encoder, tmp_path / "wrong.pth", encoder_name="resnet18")
    with pytest.raises(InputError, match="not found"):
        build_unet(encoder="resnet18", n_keypoints=5, encoder_weights=tmp_path / "absent.pth")


# --- training ----------------------------------------------------------------------------------

def test_loss_decreases(synthetic, tmp_path):
    _, prepared = synthetic
    result = train_model(train_data=prepared.subset(range(32)), val_data=prepared.subset(range(32, 40)),
                         config=TINY.replace(epochs=5), out_dir=tmp_path, progress=False)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.6 * losses[0]
    assert result.history[-1]["val_mre_mm"] < result.history[0]["val_mre_mm"]


def test_overfits_a_handful_of_images(synthetic, tmp_path):
    _, prepared = synthetic
    few = prepared.subset(range(8))
    config = TINY.replace(epochs=40, augment=False)
    result = train_model(train_data=few, val_data=few, config=config, out_dir=tmp_path, progress=False)
    pred = predict_coords(result.model, few)
    error_px = np.linalg.norm(pred - few.landmarks_original, axis=-1)
    # The argmax is on a pixel grid: a perfect fit is within about 0.7 px of the continuous landmark.
    assert error_px.mean() < 1.0, error_px.mean()
    assert mean_radial_error_mm(pred, few) == pytest.approx(error_px.mean() * 0.5)


def test_resume_continues_identically(synthetic, tmp_path):
    _, prepared = synthetic
    train, val = prepared.subset(range(24)), prepared.subset(range(24, 32))
    config = TINY.replace(epochs=3, grad_accumulation=2)
    straight = train_model(train_data=train, val_data=val, config=config, out_dir=tmp_path / "a", progress=False)
    train_model(train_data=train, val_data=val, config=config.replace(epochs=1), out_dir=tmp_path / "b",
                progress=False)
    resumed = train_model(train_data=train, val_data=val, config=config, out_dir=tmp_path / "b", resume=True,
                          progress=False)
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    assert [h["val_mre_mm"] for h in straight.history] == [h["val_mre_mm"] for h in resumed.history]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["scheduler"] == b["scheduler"]
    # Resuming with another architecture is refused with a clear message.
    with pytest.raises(InputError, match="cannot resume .* encoder="):
        train_model(train_data=train, val_data=val, config=config.replace(encoder="resnet18"),
                    out_dir=tmp_path / "b", resume=True, progress=False)


def test_epoch_sampler_reshuffles_each_epoch_and_splits_it_between_ranks():
    from reference_model.train import _EpochSampler, _epoch_order

    one = _EpochSampler(11, seed=3, sampling_weights=None, rank=0, world=1)
    first = list(one)
    one.set_epoch(2)
    assert sorted(first) == list(range(11)) and list(one) != first
    assert list(one) == _epoch_order(11, 3, 2, None).tolist()
    ranks = [_EpochSampler(11, seed=3, sampling_weights=None, rank=r, world=3) for r in range(3)]
    for sampler in ranks:
        sampler.set_epoch(2)
    shares = [list(s) for s in ranks]
    assert [len(s) for s in shares] == [3, 3, 3] == [len(s) for s in ranks]
    # Rank r takes every third image of the same epoch order; the last 11 % 3 images are left out.
    assert sorted(sum(shares, [])) == sorted(_epoch_order(11, 3, 2, None)[:9].tolist())


def test_loader_workers_persist_across_epochs_without_changing_the_result(synthetic, tmp_path):
    _, prepared = synthetic
    train, val = prepared.subset(range(16)), prepared.subset(range(16, 24))
    config = TINY.replace(epochs=2)
    main = train_model(train_data=train, val_data=val, config=config, out_dir=tmp_path / "a", progress=False)
    workers = train_model(train_data=train, val_data=val, config=config.replace(num_workers=2),
                          out_dir=tmp_path / "b", progress=False)
    assert [h["train_loss"] for h in main.history] == [h["train_loss"] for h in workers.history]
    for key, value in main.model.state_dict().items():
        assert torch.equal(value, workers.model.state_dict()[key]), key


def test_nan_loss_stops_with_a_clear_message(synthetic, tmp_path):
    _, prepared = synthetic

    class Poisoned(MeanObjective):
        def __call__(self, loss, valid, image_index):
            return super().__call__(loss, valid, image_index) * float("nan")

    with pytest.raises(TrainingDivergedError, match=r"loss became nan at epoch 1, optimizer step 1; lower"):
        train_model(train_data=prepared.subset(range(8)), val_data=prepared.subset(range(8, 16)), config=TINY,
                    out_dir=tmp_path, objective=Poisoned(), progress=False)


def test_early_stopping_keeps_the_best_checkpoint(synthetic, tmp_path):
    _, prepared = synthetic
    config = TINY.replace(epochs=30, patience=1, lr=0.5)  # a wild learning rate stops improving fast
    result = train_model(train_data=prepared.subset(range(16)), val_data=prepared.subset(range(16, 24)),
                         config=config, out_dir=tmp_path, progress=False)
    assert result.epochs_run < 30
    assert result.best_val_mre_mm == min(h["val_mre_mm"] for h in result.history)
    model, saved_config = load_model(tmp_path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, result.model.state_dict()[key])
    assert saved_config.encoder == TINY.encoder


# --- predictions and the audit -----------------------------------------------------------------

def test_predictions_are_in_original_pixels_and_pass_the_audit(synthetic, tmp_path):
    fairlandmark = pytest.importorskip("fairlandmark")
    data, prepared = synthetic
    result = train_model(train_data=prepared.subset(range(28)), val_data=prepared.subset(range(28, 34)),
                         config=TINY.replace(epochs=8), out_dir=tmp_path, progress=False)
    frames = []
    for run in range(2):  # the same model twice stands in for two hold-outs
        coords = predict_coords(result.model, prepared)
        frames.append(predictions_frame(run, prepared, coords))
    preds = pd.concat(frames, ignore_index=True)
    assert list(preds.columns) == ["run", "image_id", "keypoint", "pred_x", "pred_y", "true_x", "true_y",
                                   "spacing_mm"]
    assert preds["image_id"].iloc[0] == "001" and preds["keypoint"].min() == 1
    first = preds[(preds["run"] == 0)]
    np.testing.assert_allclose(first[["true_x", "true_y"]].to_numpy(), data.landmarks.reshape(-1, 2))
    # Originals are 54 px wide: predictions are mapped back into that frame.
    assert first["pred_x"].between(-1, 54).all()
    preds.to_csv(tmp_path / "preds.csv", index=False)
    data.meta.to_csv(tmp_path / "meta.csv", index=False)
    read_back = pd.read_csv(tmp_path / "preds.csv", dtype={"image_id": str})
    audit = fairlandmark.audit(read_back, pd.read_csv(tmp_path / "meta.csv", dtype={"image_id": str}),
                               attributes=["sex", "age_group"], thresholds_mm=[2.0], min_group_size=5, significance=False)
    table = audit.per_keypoint
    assert {"sex", "age_group"} <= set(table["attribute"])
    assert sorted(table["keypoint"].unique()) == [1, 2, 3, 4, 5]
    assert table["dp"].notna().all()
    cli = subprocess.run([sys.executable, "-m", "fairlandmark.cli", "audit", str(tmp_path / "preds.csv"),
                          str(tmp_path / "meta.csv"), "--attribute", "sex", "--min-group-size", "5",
                          "--json", str(tmp_path / "audit.json")], capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    assert (tmp_path / "audit.json").stat().st_size > 0


# --- command line ------------------------------------------------------------------------------

def _cli(*args):
    """Run the CLI in this process (imports are paid once); returns the exit code."""
    from reference_model.cli import main

    return main([str(a) for a in args])


def test_cli_synth_train_predict_holdouts(tmp_path):
    data = tmp_path / "data"
    # The module entry point itself, once, in a fresh interpreter.
    synth = subprocess.run([sys.executable, "-m", "reference_model", "synth", "--out", str(data), "--n-images", "30",
                            "--seed", "2"], capture_output=True, text=True)
    assert synth.returncode == 0, synth.stderr
    tiny = ["--quick", "--epochs", 2]
    (tmp_path / "test_ids.txt").write_text("001\n002\n003\n")
    assert _cli("train", "--data", data, "--out", tmp_path / "model", "--test-ids", tmp_path / "test_ids.txt",
                *tiny) == 0
    test_preds = pd.read_csv(tmp_path / "model" / "test_predictions.csv", dtype={"image_id": str})
    assert sorted(test_preds["image_id"].unique()) == ["001", "002", "003"]
    assert _cli("predict", "--data", data, "--checkpoint", tmp_path / "model", "--out", tmp_path / "p.csv") == 0
    assert len(pd.read_csv(tmp_path / "p.csv")) == 30 * 5
    assert _cli("finetune", "--data", data, "--checkpoint", tmp_path / "model", "--attribute", "sex", "--out",
                tmp_path / "dro", "--finetune-epochs", 1, "--test-ids", tmp_path / "test_ids.txt") == 0
    assert (tmp_path / "dro" / "test_predictions.csv").is_file()
    assert _cli("holdouts", "--data", data, "--attribute", "sex", "--out", tmp_path / "study", "--n-splits", 2,
                "--mitigate", "--finetune-epochs", 1, *tiny) == 0
    preds = pd.read_csv(tmp_path / "study" / "predictions.csv", dtype={"image_id": str})
    mitigated = pd.read_csv(tmp_path / "study" / "predictions_mitigated.csv", dtype={"image_id": str})
    assert sorted(preds["run"].unique()) == [0, 1]
    assert preds[["run", "image_id", "keypoint"]].equals(mitigated[["run", "image_id", "keypoint"]])
    assert (tmp_path / "study" / "meta.csv").is_file() and (tmp_path / "study" / "splits.json").is_file()


@pytest.mark.parametrize("args,message", [
    (["train", "--data", "{tmp}/absent", "--out", "{tmp}/o"], "landmarks file {tmp}/absent/landmarks.csv: not found"),
    (["train", "--data", "{data}", "--out", "{tmp}/o", "--encoder", "no_such_net"], "encoder 'no_such_net'"),
    (["train", "--data", "{data}", "--out", "{tmp}/o", "--config", "{tmp}/c.yaml"], "use a .toml or .json file"),
    (["predict", "--data", "{data}", "--checkpoint", "{tmp}/none", "--out", "{tmp}/p.csv"], "not found"),
    (["holdouts", "--data", "{data}", "--out", "{tmp}/o", "--attribute", "height"], "meta: no column 'height'"),
    (["holdouts", "--data", "{data}", "--out", "{tmp}/o", "--attribute", "sex", "--devices", "cpu,mps"],
     "device 'mps': only cpu and cuda devices are supported"),
    (["holdouts", "--data", "{data}", "--out", "{tmp}/o", "--attribute", "sex", "--devices", "cuda:0,cuda:7"],
     "device 'cuda:0': "),
])
def test_cli_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, args, message):
    data = tmp_path / "data"
    write_synthetic(data, SynthSpec(n_images=6))
    assert _cli(*[a.format(tmp=tmp_path, data=data) for a in args]) == 2  # an escaping exception fails here
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert message.format(tmp=tmp_path) in lines[0]


def test_cli_bad_input_in_a_fresh_interpreter_has_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "reference_model", "predict", "--data", str(tmp_path),
                             "--checkpoint", str(tmp_path / "none"), "--out", str(tmp_path / "p.csv")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


def test_holdouts_spread_over_worker_processes_match_one_process(tmp_path):
    from reference_model.protocol import run_holdouts

    data = make_synthetic(SynthSpec(n_images=30, seed=5))
    config = TINY.replace(epochs=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what each of the two CPU workers gets on this 2-core machine
    try:
        alone = run_holdouts(data, attributes=["sex"], config=config, out_dir=tmp_path / "alone", n_splits=2,
                             progress=False)
    finally:
        torch.set_num_threads(threads)
    spread = run_holdouts(data, attributes=["sex"], config=config, out_dir=tmp_path / "spread", n_splits=2,
                          devices=["cpu", "cpu"], progress=False)
    a = pd.read_csv(alone["files"]["predictions"], dtype={"image_id": str})
    b = pd.read_csv(spread["files"]["predictions"], dtype={"image_id": str})
    assert sorted(b["run"].unique()) == [0, 1]
    pd.testing.assert_frame_equal(a, b)  # each hold-out's seeds are its own: where it ran does not matter
    assert [h["test_mre_mm"] for h in alone["holdouts"]] == [h["test_mre_mm"] for h in spread["holdouts"]]


def test_torchrun_ddp_splits_each_epoch_between_two_ranks(tmp_path):
    data = tmp_path / "data"
    write_synthetic(data, SynthSpec(n_images=30, seed=2))
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m",
                             "reference_model", "train", "--data", str(data), "--out", str(tmp_path / "ddp"), "--quick",
                             "--epochs", "2", "--device", "cpu"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    state = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)
    n_train = 27  # 30 images less a 10% validation split
    assert [h["images_seen"] for h in state["history"]] == [n_train // 2] * 2  # rank 0's half of each epoch
    assert state["history"][1]["train_loss"] < state["history"][0]["train_loss"]


def test_throughput_benchmark_runs_its_tiny_cpu_configuration(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("on a GPU the benchmark is a measurement, not a test")
    script = __import__("pathlib").Path(__file__).resolve().parents[1] / "benchmarks" / "train_throughput.py"
    result = subprocess.run([sys.executable, str(script), "--encoders", "resnet18", "--json", str(tmp_path / "b.json")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "TINY CPU configuration" in result.stdout
    import json

    row = json.loads((tmp_path / "b.json").read_text())["rows"][0]
    assert row["gflops_per_image"] > 0 and row["eager"]["images_per_s"] > 0 and row["optimised"]["images_per_s"] > 0
    assert row["tf32_eager"]["images_per_s"] > 0
    assert row["speedup"] == pytest.approx(row["optimised"]["images_per_s"] / row["eager"]["images_per_s"])
    assert 0 <= row["loop"]["data_wait_share"] < 1 and row["study_hours"] is None


def test_throughput_flop_count_is_per_image_and_grows_with_the_pixel_count():
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "train_throughput.py"
    spec = importlib.util.spec_from_file_location("train_throughput", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cpu = torch.device("cpu")
    small, large = bench.flops_per_image("resnet18", 64, cpu), bench.flops_per_image("resnet18", 128, cpu)
    # A fully convolutional network: twice the side, four times the work, exactly.
    assert large == 4 * small
    # Forward + backward of resnet18's U-Net at 64x64 is a few GFLOP (forward alone is ~0.7 GFLOP).
    assert 1e9 < small < 4e9
    assert bench.gpu_peak("NVIDIA H100 80GB HBM3") == pytest.approx(989.4) and bench.gpu_peak("Quadro") is None
    assert bench.gpu_peak("NVIDIA H100 PCIe") == pytest.approx(756.0)
    # Compile costs 10 s more than an eager first step; each image then saves 1/100 - 1/200 s: 2000 images.
    eager, compiled = {"images_per_s": 100.0, "first_step_s": 1.0}, {"images_per_s": 200.0, "first_step_s": 11.0}
    assert bench.compile_break_even(eager, compiled) == pytest.approx(2000.0)
    assert bench.compile_break_even(compiled, eager) is None
