"""Training ends with the best epoch's weights, bit for bit, on the plain and the GroupDRO fine-tuning paths.

Pins what the train_model refactor and the one checkpoint loader promised (no change in behaviour): the model
returned is the one saved in ``best.pt`` (not ``last.pt``), it is exactly the model of an independent run stopped
after the best epoch, and its validation predictions reproduce the score recorded for that epoch. The best epoch
is forced by the validation metric, so nothing here depends on the floating-point details of a torch build.
"""

from __future__ import annotations

import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")

from _reference_config import TINY_GROUPDRO  # noqa: E402
from reference_model.finetune import finetune_groupdro, worst_subgroup_mre  # noqa: E402
from reference_model.groupdro import demographic_codes  # noqa: E402
from reference_model.predict import mean_radial_error_mm, predict_coords  # noqa: E402
from reference_model.preprocess import prepare  # noqa: E402
from reference_model.synth import SynthSpec, make_synthetic  # noqa: E402
from reference_model.train import train_model  # noqa: E402

pytestmark = pytest.mark.torch

TINY = TINY_GROUPDRO.replace(epochs=3, finetune_epochs=3)


@pytest.fixture(scope="module")
def split():
    data = make_synthetic(SynthSpec(n_images=24, female_fraction=0.4, seed=5))
    prepared = prepare(data, size=64)
    return data, prepared.subset(range(16)), prepared.subset(range(16, 24))


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


def _val_predictions(model, val):
    return predict_coords(model, val, batch_size=TINY.batch_size, subpixel=TINY.subpixel)


def test_training_ends_with_the_best_epochs_weights_not_the_last(split, tmp_path):
    _, train, val = split
    scores = iter([1.0, 3.0, 2.0])  # epoch 1 is the best by construction; the later epochs move the weights on

    def first_epoch_best(pred, data):
        return next(scores)

    result = train_model(train_data=train, val_data=val, config=TINY, out_dir=tmp_path / "three",
                         val_metric=first_epoch_best, progress=False)
    assert (result.best_epoch, result.epochs_run, result.best_val_mre_mm) == (1, 3, 1.0)
    best, last = _state(tmp_path / "three" / "best.pt"), _state(tmp_path / "three" / "last.pt")
    assert (best["epoch"], last["epoch"], last["best_epoch"]) == (1, 3, 1)
    returned = result.model.state_dict()
    assert _same(returned, best["model"])
    assert not _same(returned, last["model"])  # the last epoch's weights are not what training hands back

    # An independent run of one epoch from the same seed ends with exactly these weights.
    one = train_model(train_data=train, val_data=val, config=TINY.replace(epochs=1), out_dir=tmp_path / "one",
                      progress=False)
    assert _same(one.model.state_dict(), returned)
    assert one.history[0]["train_loss"] == result.history[0]["train_loss"]
    # The returned model's validation predictions reproduce the MRE recorded for epoch 1, to the last bit.
    assert mean_radial_error_mm(_val_predictions(result.model, val), val) == result.history[0]["val_mre_mm"]


def test_groupdro_finetuning_ends_with_its_best_epochs_weights(split, tmp_path):
    data, train, val = split
    train_model(train_data=train, val_data=val, config=TINY.replace(epochs=1), out_dir=tmp_path / "vanilla",
                progress=False)
    train_meta, val_meta = data.meta.iloc[:16], data.meta.iloc[16:24]
    config = TINY.replace(dro_balanced_sampling=True)
    result, objective = finetune_groupdro(checkpoint=tmp_path / "vanilla", train_data=train, train_meta=train_meta,
                                          val_data=val, val_meta=val_meta, attributes=["sex"], config=config,
                                          out_dir=tmp_path / "dro", progress=False)
    scores = [h["val_score"] for h in result.history]
    assert result.epochs_run == 3 and result.best_val_mre_mm == min(scores)
    assert result.best_epoch == scores.index(min(scores)) + 1  # the first epoch reaching the minimum
    best, last = _state(tmp_path / "dro" / "best.pt"), _state(tmp_path / "dro" / "last.pt")
    assert best["epoch"] == result.best_epoch and last["epoch"] == 3
    assert _same(result.model.state_dict(), best["model"])
    if result.best_epoch != 3:
        assert not _same(result.model.state_dict(), last["model"])
    # The worst-subgroup validation score of the returned model is the one recorded for its epoch.
    codes, _ = demographic_codes(pd.concat([train_meta, val_meta], ignore_index=True), ["sex"])
    metric = worst_subgroup_mre(codes[16:], config.dro_grouping)
    assert metric(_val_predictions(result.model, val), val) == result.history[result.best_epoch - 1]["val_score"]
    assert objective.q.sum().item() == pytest.approx(1.0)
