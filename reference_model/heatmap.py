"""Single-hot-pixel heatmap targets, the spatial-softmax cross-entropy loss, and decoding.

The paper's target H_s(i, j) is one hot pixel per landmark. With a softmax
over all pixels of a channel, cross-entropy against that target is
``logsumexp(logits) - logits[target]``: computed here in float32 with the
log-sum-exp trick, unreduced, as one value per (sample, keypoint) so that
GroupDRO can average it within subgroups.
"""

from __future__ import annotations

import torch

__all__ = ["target_indices", "one_hot_heatmaps", "spatial_softmax_ce", "decode"]


def target_indices(coords: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat pixel index of each landmark's hot pixel, and which landmarks are usable.

    Parameters
    ----------
    coords : Tensor, (B, K, 2)
        Model-input coordinates (x, y); NaN where a landmark is missing.
    size : int
        Side of the square heatmap.

    Returns
    -------
    index : LongTensor, (B, K)
        ``round(y) * size + round(x)``; 0 where not usable.
    valid : BoolTensor, (B, K)
        False for missing landmarks and for landmarks outside the image.
    """
    pixel = torch.round(coords)
    valid = torch.isfinite(pixel).all(-1) & (pixel >= 0).all(-1) & (pixel <= size - 1).all(-1)
    pixel = torch.where(valid[..., None], pixel, torch.zeros_like(pixel)).long()
    return pixel[..., 1] * size + pixel[..., 0], valid


def one_hot_heatmaps(coords: torch.Tensor, size: int) -> torch.Tensor:
    """Dense (B, K, size, size) targets with a single 1 at each usable landmark's pixel."""
    index, valid = target_indices(coords, size)
    heatmaps = torch.zeros(*index.shape, size * size, device=coords.device)
    heatmaps.scatter_(-1, index[..., None], valid[..., None].float())
    return heatmaps.view(*index.shape, size, size)


def spatial_softmax_ce(logits: torch.Tensor, index: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of each channel's softmax over pixels against its hot pixel, unreduced.

    Parameters
    ----------
    logits : Tensor, (B, K, H, W)
    index : LongTensor, (B, K)
        Flat index of the hot pixel (see :func:`target_indices`).
    valid : BoolTensor, (B, K), optional
        Loss is 0 where False.

    Returns
    -------
    Tensor, float32, (B, K)
    """
    flat = logits.flatten(2).float()  # bf16 logits would lose the small differences that matter
    loss = torch.logsumexp(flat, dim=-1) - flat.gather(-1, index[..., None]).squeeze(-1)
    return loss if valid is None else torch.where(valid, loss, torch.zeros_like(loss))


def decode(logits: torch.Tensor, *, subpixel: bool = False) -> torch.Tensor:
    """Landmark coordinates (B, K, 2) as (x, y) in model-input pixels.

    The hottest pixel of each channel; with ``subpixel``, refined by a
    parabola through its log-probability and its two neighbours along each
    axis (offset clamped to half a pixel; border pixels are not refined).
    """
    batch, keypoints, height, width = logits.shape
    flat = logits.flatten(2).float()
    best = flat.argmax(-1)
    y, x = (best // width).float(), (best % width).float()
    coords = torch.stack([x, y], -1)
    if not subpixel:
        return coords
    log_prob = torch.log_softmax(flat, -1).view(batch, keypoints, height, width)
    yi, xi = (best // width), (best % width)
    offsets = []
    for axis_index, limit, step in ((xi, width, (0, 1)), (yi, height, (1, 0))):
        inside = (axis_index > 0) & (axis_index < limit - 1)
        prev_y = (yi - step[0]).clamp(0, height - 1)
        prev_x = (xi - step[1]).clamp(0, width - 1)
        next_y = (yi + step[0]).clamp(0, height - 1)
        next_x = (xi + step[1]).clamp(0, width - 1)
        b = torch.arange(batch, device=logits.device)[:, None]
        k = torch.arange(keypoints, device=logits.device)[None, :]
        before, centre, after = log_prob[b, k, prev_y, prev_x], log_prob[b, k, yi, xi], log_prob[b, k, next_y, next_x]
        curvature = before - 2 * centre + after
        offset = torch.where(curvature < 0, 0.5 * (before - after) / curvature.clamp(max=-1e-12),
                             torch.zeros_like(curvature))
        offsets.append(torch.where(inside, offset.clamp(-0.5, 0.5), torch.zeros_like(offset)))
    return coords + torch.stack(offsets, -1)
