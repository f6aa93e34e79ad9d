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


def gaussian_blur(images: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of (n, c, h, w), reflecting at the borders; `sigma` in pixels,
    one for every image or one per image, (n,)."""
    n, c, h, w = images.shape
    sigmas = torch.as_tensor(sigma, dtype=images.dtype, device=images.device).expand(n)
    sigmas = sigmas.clamp_min(1e-3)
    radius = max(1, math.ceil(3 * float(sigmas.max())))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernels = torch.exp(-0.5 * (offsets / sigmas[:, None]) ** 2)
    kernels = (kernels / kernels.sum(1, keepdim=True)).repeat_interleave(c, 0)
    x = F.pad(images.reshape(1, n * c, h, w), [radius] * 4, mode="reflect")
    x = F.conv2d(x, kernels.view(n * c, 1, 1, -1), groups=n * c)
    x = F.conv2d(x, kernels.view(n * c, 1, -1, 1), groups=n * c)
    return x.view(n, c, h, w)
