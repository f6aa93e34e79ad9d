"""Penalties that keep images natural: L1, L2 and total variation (objective terms too, see
`objectives.Penalty`), plus the Gaussian blur that the engine may apply every few steps.
Penalties are per image, so batches stay independent."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def l1(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute deviation from grey, per image."""
    return (images - 0.5).abs().mean((1, 2, 3))


def l2(images: torch.Tensor) -> torch.Tensor:
    """Mean squared deviation from grey, per image."""
    return (images - 0.5).square().mean((1, 2, 3))


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels, per image."""
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().mean((1, 2, 3))
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().mean((1, 2, 3))
    return dx + dy


PENALTIES = {"l1": l1, "l2": l2, "total_variation": total_variation}


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (n, c, h, w), reflecting at the borders."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    x = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
