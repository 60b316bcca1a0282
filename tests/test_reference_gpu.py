"""The CUDA paths of the reference model: they run only where a GPU is visible (never in CI).

CI has no GPU, so these are skipped there (GPU augmentation is the "cuda" case of
the augmentation test in test_reference_model.py). On a GPU machine run
``bash benchmarks/gpu_session.sh``: it runs this file, the CPU suite of the
reference model on that machine, and the throughput benchmark.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")

from reference_model.config import TrainConfig  # noqa: E402
from reference_model.predict import predict_coords  # noqa: E402
from reference_model.preprocess import prepare  # noqa: E402
from reference_model.synth import SynthSpec, make_synthetic  # noqa: E402
from reference_model.train import load_model, train_model  # noqa: E402

pytestmark = [pytest.mark.torch,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

TINY_CUDA = TrainConfig(encoder="resnet18", decoder_channels=(32, 16, 16, 8, 8), image_size=64, batch_size=8,
                        grad_accumulation=2, epochs=6, lr=1e-2, lr_gamma=0.95, bn_momentum=0.5, patience=100,
                        device="cuda", seed=0)


@pytest.fixture(scope="module")
def prepared():
    return prepare(make_synthetic(SynthSpec(n_images=48, seed=11)), size=64)


def test_optimised_cuda_training_learns_and_its_checkpoint_loads_on_cpu(prepared, tmp_path):
    train, val = prepared.subset(range(40)), prepared.subset(range(40, 48))
    result = train_model(train_data=train, val_data=val, config=TINY_CUDA, out_dir=tmp_path, progress=False)
    assert next(result.model.parameters()).is_cuda
    losses = [h["train_loss"] for h in result.history]
    assert all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0]
    assert 0 <= result.history[-1]["data_wait_share"] < 1
    model, _ = load_model(tmp_path, device="cpu")  # bf16 + channels_last training, plain fp32 weights
    on_gpu = predict_coords(result.model, val, device="cuda", bf16=False)
    on_cpu = predict_coords(model, val, device="cpu")
    # Same weights, two devices: argmax pixels agree except for near-ties.
    assert np.mean(np.all(np.abs(on_gpu - on_cpu) < 1e-6, axis=-1)) > 0.9


def test_cuda_training_is_reproducible_with_the_same_seed(prepared, tmp_path):
    train, val = prepared.subset(range(24)), prepared.subset(range(24, 32))
    config = TINY_CUDA.replace(epochs=2)
    a = train_model(train_data=train, val_data=val, config=config, out_dir=tmp_path / "a", progress=False)
    b = train_model(train_data=train, val_data=val, config=config, out_dir=tmp_path / "b", progress=False)
    # cudnn.benchmark may pick other algorithms, so equality is to rounding, not to the bit.
    np.testing.assert_allclose([h["train_loss"] for h in a.history], [h["train_loss"] for h in b.history],
                               rtol=1e-2)


def test_bf16_prediction_agrees_with_fp32(prepared, tmp_path):
    train, val = prepared.subset(range(40)), prepared.subset(range(40, 48))
    result = train_model(train_data=train, val_data=val, config=TINY_CUDA.replace(epochs=3), out_dir=tmp_path,
                         progress=False)
    fp32 = predict_coords(result.model, val, device="cuda", bf16=False)
    bf16 = predict_coords(result.model, val, device="cuda", bf16=True, channels_last=True)
    distance = np.linalg.norm(fp32 - bf16, axis=-1)
    assert np.median(distance) == 0 and np.mean(distance < 2) > 0.9


def test_compiled_training_runs_and_learns(prepared, tmp_path):
    train, val = prepared.subset(range(36)), prepared.subset(range(36, 48))  # 36 = 4 full batches + 4
    result = train_model(train_data=train, val_data=val, config=TINY_CUDA.replace(compile=True, epochs=3),
                         out_dir=tmp_path, progress=False)
    losses = [h["train_loss"] for h in result.history]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
