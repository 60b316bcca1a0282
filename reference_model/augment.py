"""Light augmentation done on the device, a whole batch at a time: small affine, intensity.

The same random affine moves the image (``grid_sample``) and its landmarks,
so targets stay on their structures. Randomness comes from a caller-owned
``torch.Generator``: seeded per epoch, a resumed run draws the same numbers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["augment_batch"]


def _uniform(generator: torch.Generator, count: int, half_width: float, device) -> torch.Tensor:
    return (torch.rand(count, generator=generator, device=generator.device) * 2 - 1).to(device) * half_width


def augment_batch(images: torch.Tensor, coords: torch.Tensor, *, generator: torch.Generator,
                  rotation_deg: float = 5.0, scale: float = 0.05, translation: float = 0.03,
                  intensity: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomly rotate, scale, shift and re-contrast a batch, moving its landmarks too.

    Parameters
    ----------
    images : Tensor, float, (B, 1, S, S), values in [0, 1]
    coords : Tensor, (B, K, 2)
        Landmarks (x, y) in pixels of ``images``.
    generator : torch.Generator
    rotation_deg, scale, translation, intensity : float
        Half-widths of the uniform draws: degrees, relative scale, fraction
        of the side, and relative contrast/brightness/log-gamma.

    Returns
    -------
    images, coords
        The augmented batch; landmarks pushed outside the image keep their
        coordinates (the loss masks them).
    """
    batch, _, size, _ = images.shape
    device = images.device
    angle = _uniform(generator, batch, math.radians(rotation_deg), device)
    zoom = 1.0 + _uniform(generator, batch, scale, device)
    shift = torch.stack([_uniform(generator, batch, translation, device) for _ in range(2)], -1) * 2.0
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (B, 2, 2)
    # Forward map in normalised coordinates: p' = zoom * R p + shift. grid_sample needs the inverse.
    inverse = rotation.transpose(1, 2) / zoom[:, None, None]
    theta = torch.cat([inverse, -(inverse @ shift[..., None])], -1)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    moved = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    normalised = (coords.to(torch.float32) * 2 + 1) / size - 1  # pixel centres, align_corners=False
    normalised = zoom[:, None, None] * (normalised @ rotation.transpose(1, 2)) + shift[:, None, :]
    moved_coords = ((normalised + 1) * size - 1) / 2

    contrast = 1.0 + _uniform(generator, batch, intensity, device)
    brightness = _uniform(generator, batch, intensity, device)
    gamma = torch.exp(_uniform(generator, batch, intensity, device))
    moved = moved.clamp(0, 1) ** gamma[:, None, None, None]
    moved = (moved * contrast[:, None, None, None] + brightness[:, None, None, None]).clamp(0, 1)
    return moved, moved_coords.to(coords.dtype)
