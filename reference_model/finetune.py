"""GroupDRO fine-tuning of a trained U-Net over keypoint x demographic subgroups."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from reference_model.config import TrainConfig
from reference_model.checkpoints import load_checkpoint
from reference_model.errors import InputError
from reference_model.groupdro import GroupDROLoss, balanced_sampling_weights, demographic_codes
from reference_model.preprocess import PreparedData
from reference_model.train import CHECKPOINT_BEST, TrainResult, select_device, train_model

__all__ = ["finetune_groupdro", "worst_subgroup_mre"]

ERR_ARCHITECTURE = (
    "checkpoint {path}: trained with {key}={old!r}, but the fine-tuning config says {new!r}; "
    "fine-tuning keeps the architecture, so drop that option"
)


def worst_subgroup_mre(codes: np.ndarray, grouping: str) -> Callable[[np.ndarray, PreparedData], float]:
    """A validation metric: the largest mean radial error (mm) over the DRO subgroups."""

    def metric(pred_original: np.ndarray, data: PreparedData) -> float:
        spacing = np.where(np.isfinite(data.spacing_mm), data.spacing_mm, 1.0)
        error = np.linalg.norm(pred_original - data.landmarks_original, axis=-1) * spacing[:, None]  # (N, K)
        if grouping == "keypoint":
            return float(np.nanmax(np.nanmean(error, axis=0)))
        per_group = [error[codes == code] for code in np.unique(codes)]
        if grouping == "group":
            return float(max(np.nanmean(e) for e in per_group))
        return float(max(np.nanmax(np.nanmean(e, axis=0)) for e in per_group))

    return metric


def finetune_groupdro(*, checkpoint: str | Path, train_data: PreparedData, train_meta: pd.DataFrame,
                      val_data: PreparedData, val_meta: pd.DataFrame, attributes: list[str],
                      config: TrainConfig, out_dir: str | Path, resume: bool = False,
                      progress: bool = True) -> tuple[TrainResult, GroupDROLoss]:
    """Fine-tune a trained model with the GroupDRO objective.

    Parameters
    ----------
    checkpoint : path
        ``best.pt`` (or its folder) of a trained model.
    train_data, val_data : PreparedData
    train_meta, val_meta : DataFrame
        Meta rows in the same order as the data's images.
    attributes : list of str
        Demographic attributes whose value combinations are the groups.
    config : TrainConfig
        ``finetune_epochs``, ``finetune_lr`` and the ``dro_*`` options apply.
    out_dir : path

    Returns
    -------
    TrainResult, GroupDROLoss
        The model with the best worst-subgroup validation MRE, and the
        objective (its final q).
    """
    path = Path(checkpoint)
    path = path / CHECKPOINT_BEST if path.is_dir() else path
    state = load_checkpoint(path, required=("config", "model", "n_keypoints"))
    for key in ("encoder", "encoder_depth", "decoder_channels", "image_size"):
        old, new = state["config"][key], config.to_dict()[key]
        if old != new:
            raise InputError(ERR_ARCHITECTURE.format(path=path, key=key, old=old, new=new))
    both = pd.concat([train_meta, val_meta], ignore_index=True)
    codes, names = demographic_codes(both, attributes)
    train_codes, val_codes = codes[: len(train_meta)], codes[len(train_meta):]
    objective = GroupDROLoss(image_groups=train_codes, group_names=names, n_keypoints=state["n_keypoints"],
                             grouping=config.dro_grouping, step_size=config.dro_step_size,
                             adjustment=config.dro_adjustment, device=select_device(config.device))
    weights = balanced_sampling_weights(train_codes) if config.dro_balanced_sampling else None
    result = train_model(train_data=train_data, val_data=val_data, config=config, out_dir=out_dir, resume=resume,
                         init_state=state["model"], objective=objective, sampling_weights=weights,
                         epochs=config.finetune_epochs, lr=config.finetune_lr,
                         val_metric=worst_subgroup_mre(val_codes, config.dro_grouping), progress=progress)
    return result, objective
