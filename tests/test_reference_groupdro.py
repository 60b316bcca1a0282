"""GroupDRO fine-tuning: the q update, q finding a planted hard subgroup, and the audit of vanilla and mitigated
predictions."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")

from _reference_config import TINY_GROUPDRO  # noqa: E402
from reference_model.groupdro import GroupDROLoss, balanced_sampling_weights, demographic_codes  # noqa: E402
from reference_model.heatmap import spatial_softmax_ce, target_indices  # noqa: E402
from reference_model.preprocess import prepare  # noqa: E402
from reference_model.synth import SynthSpec, make_synthetic  # noqa: E402
from reference_model.train import MeanObjective, train_model  # noqa: E402

pytestmark = pytest.mark.torch

TINY = TINY_GROUPDRO.replace(epochs=20)


# --- the update rule on a hand-made example ----------------------------------------------------

def test_q_update_equals_the_formula_on_a_hand_made_batch():
    # 4 training images: groups F, M, F, M; 2 keypoints -> subgroups k*G + d = k1/F, k1/M, k2/F, k2/M.
    dro = GroupDROLoss(image_groups=[0, 1, 0, 1], group_names=["F", "M"], n_keypoints=2, step_size=0.1)
    loss = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    valid = torch.tensor([[True, True], [True, False], [True, True]])  # image 1's keypoint 2 is missing
    batch_images = torch.tensor([0, 1, 2])  # F, M, F
    objective = dro(loss, valid, batch_images)
    group_loss = np.array([(1 + 5) / 2, 3.0, (2 + 6) / 2, 0.0])  # k2/M has no valid sample: 0
    q = 0.25 * np.exp(0.1 * group_loss)
    q /= q.sum()
    np.testing.assert_allclose(dro.q.numpy(), q, rtol=1e-6)
    assert objective.item() == pytest.approx(float(q @ group_loss), rel=1e-6)
    # The next batch starts from the updated q.
    dro(torch.tensor([[2.0, 0.5]]), torch.ones(1, 2, dtype=torch.bool), torch.tensor([3]))
    q2 = q * np.exp(0.1 * np.array([0.0, 2.0, 0.0, 0.5]))
    np.testing.assert_allclose(dro.q.numpy(), q2 / q2.sum(), rtol=1e-6)
    # The objective's gradient is q_g / n_g per (sample, keypoint) of subgroup g.
    leaf = loss.clone().requires_grad_(True)
    fresh = GroupDROLoss(image_groups=[0, 1, 0, 1], group_names=["F", "M"], n_keypoints=2, step_size=0.1)
    fresh(leaf, valid, batch_images).backward()
    np.testing.assert_allclose(leaf.grad.numpy(), [[q[0] / 2, q[2] / 2], [q[1], 0.0], [q[0] / 2, q[2] / 2]],
                               rtol=1e-6)


def test_adjustment_groupings_and_balanced_sampling():
    groups = [0, 0, 0, 0, 1]  # 4 F, 1 M training images
    dro = GroupDROLoss(image_groups=groups, group_names=["F", "M"], n_keypoints=1, step_size=1.0, adjustment=2.0)
    dro(torch.tensor([[1.0], [1.0]]), torch.ones(2, 1, dtype=torch.bool), torch.tensor([0, 4]))
    q = np.exp([1.0 + 2.0 / math.sqrt(4), 1.0 + 2.0 / math.sqrt(1)])  # C / sqrt(n_g): the small group gains
    np.testing.assert_allclose(dro.q.numpy(), q / q.sum(), rtol=1e-6)

    loss = torch.tensor([[1.0, 3.0], [5.0, 7.0]])
    both = torch.ones(2, 2, dtype=torch.bool)
    by_group = GroupDROLoss(image_groups=[0, 1], group_names=["F", "M"], n_keypoints=2, grouping="group")
    assert by_group.group_losses(loss, both, torch.tensor([0, 1]))[0].tolist() == [2.0, 6.0]
    by_keypoint = GroupDROLoss(image_groups=[0, 1], group_names=["F", "M"], n_keypoints=2, grouping="keypoint")
    assert by_keypoint.group_losses(loss, both, torch.tensor([0, 1]))[0].tolist() == [3.0, 5.0]
    assert by_keypoint.subgroup_name(1) == "k2" and by_group.subgroup_name(1) == "M"

    codes, names = demographic_codes(pd.DataFrame({"sex": ["F", "M", "F", "F"], "age": ["o", "o", "y", "o"]}),
                                     ["sex", "age"])
    assert names == ["F|o", "F|y", "M|o"] and codes.tolist() == [0, 2, 1, 0]
    weights = balanced_sampling_weights(codes)
    assert [weights[codes == c].sum() for c in range(3)] == pytest.approx([1.0, 1.0, 1.0])


def test_q_state_round_trips_through_a_checkpoint_dict():
    dro = GroupDROLoss(image_groups=[0, 1], group_names=["F", "M"], n_keypoints=3)
    dro(torch.rand(2, 3), torch.ones(2, 3, dtype=torch.bool), torch.tensor([0, 1]))
    other = GroupDROLoss(image_groups=[0, 1], group_names=["F", "M"], n_keypoints=3)
    other.load_state_dict(dro.state_dict())
    assert torch.equal(other.q, dro.q)
    assert dro.summary().startswith("q: k")


# --- on a model ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """40 training images, 30% F; keypoint 3 of F images is fainter and more variable. A vanilla model."""
    data = make_synthetic(SynthSpec(n_images=48, female_fraction=0.3, effect_contrast=0.3, effect_jitter=3.0,
                                    seed=3))
    prepared = prepare(data, size=64)
    train, val = prepared.subset(range(40)), prepared.subset(range(40, 48))
    vanilla = train_model(train_data=train, val_data=val, config=TINY.replace(epochs=12),
                          out_dir=tmp_path_factory.mktemp("vanilla"), progress=False)
    codes, names = demographic_codes(data.meta.iloc[:40], ["sex"])
    return train, val, codes, names, {k: v.clone() for k, v in vanilla.model.state_dict().items()}


def _subgroup_losses(model, data, codes, n_groups):
    """Mean loss per demographic group and keypoint, (G, K), in eval mode on the given images."""
    model.eval()
    with torch.no_grad():
        images = torch.from_numpy(np.asarray(data.images)).float()[:, None] / 255
        index, valid = target_indices(torch.from_numpy(data.landmarks).float(), 64)
        loss = spatial_softmax_ce(model(images), index, valid).numpy()
    return np.stack([loss[codes == g].mean(0) for g in range(n_groups)])


def test_q_moves_to_the_planted_subgroup_and_the_fine_tune_lowers_its_loss(planted, tmp_path):
    """GroupDRO's weights go to the planted subgroup (k3/F), the hardest before the fine-tune, whose loss then falls.

    That the loss falls is a sanity check of the DRO objective (a sign or weighting error would raise it); the q
    assertions are the test. Whether it falls faster than under a plain fine-tune of the same length is not
    asserted: it did with torch 2.14.1 on an Intel Xeon and 2.15.0 on an AMD EPYC, not with 2.14.1 on an AMD
    EPYC (2026-12-01: k3/F loss 1.758 -> GroupDRO 1.435, plain 0.775; with step size 0.01 or lr 1e-3 the plain
    fine-tune still led). Why is not settled (the build, or this tiny fine-tune's sensitivity to it); the
    per-group gradient norms of the first epoch would be the next thing to look at.
    """
    train, val, codes, names, vanilla_state = planted
    config = TINY.replace(augment=False)  # losses measured on exactly the images trained on
    dro = GroupDROLoss(image_groups=codes, group_names=names, n_keypoints=5, step_size=0.2)
    common = dict(train_data=train, val_data=val, config=config, init_state=vanilla_state, epochs=6, lr=2e-3,
                  progress=False)
    with_dro = train_model(out_dir=tmp_path / "dro", objective=dro, **common)
    plain = train_model(out_dir=tmp_path / "plain", objective=MeanObjective(), **common)

    female, k3 = names.index("F"), 2
    assert dro.top_groups(1)[0][0] == "k3/F"
    assert dro.q[k3 * 2 + female] > 0.25  # every q_g started at 1/10
    before = _subgroup_losses(_rebuild(vanilla_state), train, codes, 2)
    assert before[female, k3] == before.max()  # the planted subgroup is the hardest one
    after_dro = _subgroup_losses(with_dro.model, train, codes, 2)
    after_plain = _subgroup_losses(plain.model, train, codes, 2)
    drop_dro = before[female, k3] - after_dro[female, k3]
    drop_plain = before[female, k3] - after_plain[female, k3]
    print(f"k3/F loss {before[female, k3]:.3f} -> GroupDRO {after_dro[female, k3]:.3f}, "
          f"plain {after_plain[female, k3]:.3f}; q = {dro.summary()}")
    assert drop_dro > 0 and drop_plain > 0, (drop_dro, drop_plain)


def _rebuild(state):
    from reference_model.model import build_unet

    model = build_unet(encoder=TINY.encoder, n_keypoints=5, decoder_channels=TINY.decoder_channels)
    model.load_state_dict(state)
    return model


def test_mitigation_path_end_to_end_finds_the_planted_subgroup(tmp_path):
    """Vanilla vs GroupDRO-mitigated predictions of 2 hold-outs of 100 synthetic images, audited.

    What this asserts holds on the three torch builds and CPUs measured (2 CPU cores, seeds fixed): the vanilla
    audit puts the largest DP on the planted keypoint 3, GroupDRO's weights find the planted subgroup (k3/F) in every hold-out,
    the mitigated predictions cover the same rows, and the MRE cost stays within 0.05 mm.

    Whether this short fine-tune also lowers the planted DP depends on the torch build, so it is not asserted:
    torch 2.15.0 (AMD EPYC): DP at 0.5 mm 0.25 -> 0.15, MRE gap 0.56 -> 0.17 mm; torch 2.14.1 (Intel Xeon,
    2026-11-30): DP 0.15 -> 0.15, MRE gap 0.13 -> 0.11 mm, MRE 0.328 -> 0.331 mm; torch 2.14.1 (AMD EPYC,
    2026-12-01): DP 0.25 -> 0.15 (the next keypoint's 0.10), MRE 0.322 -> 0.324 mm. With a stronger planted
    effect (effect_contrast 0.1-0.25) the vanilla DP is 0.35-0.83 and the 20-epoch fine-tune moves it by at
    most 0.05 either way. Whether GroupDRO lowers the planted subgroup's loss faster than a plain fine-tune depends
    on the build too (see the test above).
    """
    fairlandmark = pytest.importorskip("fairlandmark")
    from reference_model.protocol import run_holdouts

    data = make_synthetic(SynthSpec(n_images=100, female_fraction=0.3, effect_contrast=0.3, effect_jitter=3.0,
                                    seed=3))
    summary = run_holdouts(data, attributes=["sex"], config=TINY, out_dir=tmp_path, n_splits=2,
                           test_fraction=0.3, val_fraction=0.15, mitigate=True, progress=False)
    results, rows = {}, {}
    for name in ("predictions", "predictions_mitigated"):
        preds = pd.read_csv(summary["files"][name], dtype={"image_id": str})
        rows[name] = preds[["run", "image_id", "keypoint"]].sort_values(["run", "image_id", "keypoint"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            audit = fairlandmark.audit(preds, data.meta, attributes=["sex"], thresholds_mm=[0.5], min_group_size=3,
                                       significance=False, curves=False)
        table = audit.per_keypoint.set_index("keypoint")
        error_mm = np.hypot(preds.pred_x - preds.true_x, preds.pred_y - preds.true_y) * preds.spacing_mm
        results[name] = (table.loc[3, "dp"], float(error_mm.mean()), table.drop(index=3)["dp"].max())
    (dp_before, mre_before, others_before) = results["predictions"]
    (_, mre_after, _) = results["predictions_mitigated"]
    assert rows["predictions"].reset_index(drop=True).equals(rows["predictions_mitigated"].reset_index(drop=True))
    assert dp_before > 0.1 and dp_before > others_before, results  # the largest DP: the planted keypoint's
    assert {h["top_q"][0][0] for h in summary["holdouts"]} == {"k3/F"}
    assert abs(mre_after - mre_before) < 0.05, results  # the MRE cost (or gain), in mm


def test_group_balanced_sampling_draws_groups_equally_and_finetunes(planted, tmp_path):
    from reference_model.finetune import finetune_groupdro
    from reference_model.train import _epoch_order, save_atomic

    codes = np.array([0] * 70 + [1] * 30)
    drawn = np.concatenate([_epoch_order(100, 0, epoch, balanced_sampling_weights(codes)) for epoch in range(50)])
    assert abs((codes[drawn] == 1).mean() - 0.5) < 0.03  # 30% of the images, half of the draws

    train, val, train_codes, names, vanilla_state = planted
    save_atomic({"model": vanilla_state, "config": TINY.to_dict(), "n_keypoints": 5}, tmp_path / "best.pt")
    meta = pd.DataFrame({"image_id": train.image_ids, "sex": np.array(names)[train_codes]})
    val_meta = pd.DataFrame({"image_id": val.image_ids, "sex": ["F", "M"] * (len(val.image_ids) // 2)})
    result, objective = finetune_groupdro(
        checkpoint=tmp_path, train_data=train, train_meta=meta, val_data=val, val_meta=val_meta,
        attributes=["sex"], config=TINY.replace(dro_balanced_sampling=True, finetune_epochs=1),
        out_dir=tmp_path / "dro", progress=False)
    assert result.epochs_run == 1 and objective.q.sum().item() == pytest.approx(1.0)
    state = torch.load(tmp_path / "dro" / "last.pt", weights_only=True)
    assert torch.equal(state["objective"]["q"], objective.q)  # q is saved in the checkpoint
