"""Transformation robustness (Lucid's pad, jitter, scale, rotate, jitter) as ONE affine warp,
optionally followed by a random blur.

Every image gets its own random translation, scale and rotation (from its own generator), all
composed into one per-image affine matrix and applied by a single batched `grid_sample`. The
output canvas has a fixed size (the image plus `pad` on each side, filled with grey or the
image's mirror image), so images of different jobs with the same size can share a batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .job import Transforms

GREY = 0.5


def canvas_size(size: int, transforms: Transforms | None) -> int:
    """Side of the network input for images of `size` pixels."""
    return size + 2 * transforms.pad if transforms else size


def random_affines(
    transforms: Transforms, size: int, generators: Sequence[torch.Generator]
) -> torch.Tensor:
    """Per-image `affine_grid` matrices (n, 2, 3), mapping canvas coordinates to image ones.

    A canvas pixel p and an image pixel q (both relative to their centres) are related by
    p = s R (q + j1) + j2: jitter j1, scale s, rotation R, final jitter j2.
    """
    canvas = canvas_size(size, transforms)
    u = torch.stack([torch.rand(6, generator=g, dtype=torch.float64) for g in generators]) * 2 - 1
    jitter = u[:, 0:2] * transforms.jitter / 2
    mid = (transforms.scale_max + transforms.scale_min) / 2
    half = (transforms.scale_max - transforms.scale_min) / 2
    scale = (mid + half * u[:, 2]).view(-1, 1, 1)
    angle = math.radians(transforms.rotate_degrees) * u[:, 3]
    final_jitter = u[:, 4:6] * transforms.final_jitter / 2
    cos, sin = torch.cos(angle), torch.sin(angle)
    inverse_rotation = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)
    linear = inverse_rotation * canvas / (size * scale)
    offset = -(inverse_rotation @ final_jitter.unsqueeze(2)) * 2 / (size * scale)
    offset = offset - jitter.unsqueeze(2) * 2 / size
    return torch.cat([linear, offset], dim=2).float()


def warp(
    images: torch.Tensor, thetas: torch.Tensor, canvas: int, reflect: bool = False
) -> torch.Tensor:
    """Apply per-image affines; whatever falls outside the image is grey, or mirrored."""
    grid = F.affine_grid(
        thetas.to(images.device), [images.shape[0], 3, canvas, canvas], align_corners=False
    )
    if reflect:
        return F.grid_sample(
            images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )
    centred = F.grid_sample(images - GREY, grid, mode="bilinear", align_corners=False)
    return centred + GREY


def random_blurs(transforms: Transforms, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Per-image blur sigmas (n,), U(0, transforms.blur) pixels."""
    return torch.cat([torch.rand(1, generator=g) for g in generators]) * transforms.blur
