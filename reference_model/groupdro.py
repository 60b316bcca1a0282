"""GroupDRO (Sagawa et al., ICLR 2020) for heatmap losses over keypoint x demographic subgroups.

:class:`GroupDROLoss` owns the subgroup weights q. For a batch it averages the
unreduced (sample, keypoint) loss within each subgroup present, updates
``q_g <- q_g * exp(eta * (loss_g + C / sqrt(n_g)))`` and renormalises, and
returns ``sum_g q_g * loss_g``. Absent subgroups have loss 0 in the update,
as in the authors' code, so their weight only shrinks by renormalisation.

Groupings: ``keypoint_group`` (K x G subgroups, the paper's), ``group``
(G demographic groups, loss averaged over keypoints) and ``keypoint`` (K).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

__all__ = ["GroupDROLoss", "demographic_codes", "balanced_sampling_weights", "GROUPINGS"]

GROUPINGS = ("keypoint_group", "group", "keypoint")


def demographic_codes(meta: pd.DataFrame, attributes: list[str]) -> tuple[np.ndarray, list[str]]:
    """Integer code per row for the combination of ``attributes`` (e.g. ``F|young``), and the names."""
    labels = meta[attributes].astype(str).agg("|".join, axis=1).to_numpy()
    names, codes = np.unique(labels, return_inverse=True)
    return codes.astype(np.int64), [str(n) for n in names]


def balanced_sampling_weights(codes: np.ndarray) -> np.ndarray:
    """Per-image draw weights that give every demographic group the same expected share."""
    counts = np.bincount(codes)
    return 1.0 / counts[codes]


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class GroupDROLoss:
    """Stateful GroupDRO objective over (keypoint, demographic group) subgroups.

    Parameters
    ----------
    image_groups : array of int, (N_train,)
        Demographic group code of each training image (index = dataset index).
    group_names : list of str
        Name of each demographic code.
    n_keypoints : int
    grouping : {'keypoint_group', 'group', 'keypoint'}
    step_size : float
        eta of the exponentiated-gradient update.
    adjustment : float
        C of the generalisation adjustment C / sqrt(n_g); 0 turns it off.
    device : torch.device or str
    """

    def __init__(self, *, image_groups: Sequence[int] | np.ndarray, group_names: Sequence[str], n_keypoints: int,
                 grouping: str = "keypoint_group", step_size: float = 0.01, adjustment: float = 0.0,
                 device: torch.device | str = "cpu"):
        if grouping not in GROUPINGS:
            raise ValueError(f"grouping must be one of {GROUPINGS}, got {grouping!r}")
        self.grouping = grouping
        self.step_size = float(step_size)
        self.n_keypoints = int(n_keypoints)
        self.group_names = list(group_names)
        n_demographic = len(self.group_names)
        self.image_groups = torch.as_tensor(np.asarray(image_groups), dtype=torch.long, device=device)
        images_per_group = torch.bincount(self.image_groups, minlength=n_demographic).float()
        if grouping == "keypoint_group":
            self.n_groups = self.n_keypoints * n_demographic
            counts = images_per_group.repeat(self.n_keypoints)  # subgroup k*G + d
        elif grouping == "group":
            self.n_groups = n_demographic
            counts = images_per_group
        else:
            self.n_groups = self.n_keypoints
            counts = torch.full((self.n_keypoints,), float(len(self.image_groups)), device=device)
        self.group_counts = counts
        self.adjustment = float(adjustment) / counts.clamp(min=1).sqrt()
        self.q = torch.full((self.n_groups,), 1.0 / self.n_groups, device=device)
        self.last_group_loss = torch.zeros(self.n_groups, device=device)

    def subgroup_ids(self, image_index: torch.Tensor) -> torch.Tensor:
        """Subgroup id (B, K) of every (sample, keypoint) of a batch."""
        demographic = self.image_groups[image_index][:, None]
        keypoint = torch.arange(self.n_keypoints, device=demographic.device)[None, :]
        if self.grouping == "keypoint_group":
            return keypoint * len(self.group_names) + demographic
        if self.grouping == "group":
            return demographic.expand(-1, self.n_keypoints)
        return keypoint.expand(len(image_index), -1)

    def group_losses(self, loss: torch.Tensor, valid: torch.Tensor,
                     image_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss of each subgroup in the batch (0 where absent), and which are present."""
        ids = self.subgroup_ids(image_index).reshape(-1)
        weight = valid.reshape(-1).float()
        sums = torch.zeros(self.n_groups, device=loss.device).index_add(0, ids, loss.reshape(-1) * weight)
        counts = torch.zeros(self.n_groups, device=loss.device).index_add(0, ids, weight)
        return sums / counts.clamp(min=1.0), counts > 0

    def __call__(self, loss: torch.Tensor, valid: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
        """The robust objective ``sum_g q_g loss_g`` after updating q with this batch."""
        group_loss, _ = self.group_losses(loss, valid, image_index)
        with torch.no_grad():
            update_loss = self._global_group_loss(loss, valid, image_index) if _distributed() else group_loss
            adjusted = update_loss + self.adjustment
            self.q = self.q * torch.exp(self.step_size * adjusted)
            self.q = self.q / self.q.sum()
            self.last_group_loss = group_loss.detach()
        return (self.q * group_loss).sum()

    def _global_group_loss(self, loss, valid, image_index) -> torch.Tensor:
        """Subgroup means over the batches of all DDP ranks, so every rank keeps the same q."""
        ids = self.subgroup_ids(image_index).reshape(-1)
        weight = valid.reshape(-1).float()
        totals = torch.zeros(2, self.n_groups, device=loss.device)
        totals[0].index_add_(0, ids, loss.detach().reshape(-1) * weight)
        totals[1].index_add_(0, ids, weight)
        torch.distributed.all_reduce(totals)
        return totals[0] / totals[1].clamp(min=1.0)

    def subgroup_name(self, subgroup: int) -> str:
        n_demographic = len(self.group_names)
        if self.grouping == "keypoint_group":
            return f"k{subgroup // n_demographic + 1}/{self.group_names[subgroup % n_demographic]}"
        if self.grouping == "group":
            return self.group_names[subgroup]
        return f"k{subgroup + 1}"

    def top_groups(self, count: int = 3) -> list[tuple[str, float]]:
        """The ``count`` subgroups with the largest weight, as (name, q)."""
        order = torch.argsort(self.q, descending=True)[:count].tolist()
        return [(self.subgroup_name(g), float(self.q[g])) for g in order]

    def summary(self) -> str:
        return "q: " + ", ".join(f"{name} {weight:.3f}" for name, weight in self.top_groups())

    def state_dict(self) -> dict:
        return {"q": self.q.detach().cpu(), "grouping": self.grouping, "step_size": self.step_size}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.q = state["q"].to(self.q.device)
