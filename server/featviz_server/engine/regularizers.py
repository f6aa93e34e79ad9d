"""Penalties that keep images natural: L1, L2 and total variation (objective terms too, see
`objectives.Penalty`), plus the Gaussian blur that the engine may apply every few steps.
Penalties are per image, so batches stay independent."""

from __future__ import annotations

import math

import torch

from .transforms import GREY


def l1(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute deviation from grey, per image."""
    return (images - GREY).abs().mean((1, 2, 3))


def l2(images: torch.Tensor) -> torch.Tensor:
    """Mean squared deviation from grey, per image."""
    return (images - GREY).square().mean((1, 2, 3))


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels, per image."""
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().mean((1, 2, 3))
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().mean((1, 2, 3))
    return dx + dy


PENALTIES = {"l1": l1, "l2": l2, "total_variation": total_variation}  # job.PENALTIES' functions


def gaussian_blur(images: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of (n, c, h, w), reflecting at the borders; `sigma` in pixels,
    one for every image or one per image, (n,). Each direction is one matrix product with a
    banded matrix that holds the kernel and the reflection (cheaper than a padded depthwise
    convolution for the small kernels used here; the same result to float rounding)."""
    n, _, h, w = images.shape
    sigmas = torch.as_tensor(sigma, dtype=images.dtype, device=images.device).expand(n)
    sigmas = sigmas.clamp_min(1e-3)
    radius = max(1, math.ceil(3 * float(sigmas.max())))
    offsets = torch.arange(-radius, radius + 1, device=images.device)
    kernels = torch.exp(-0.5 * (offsets.to(images.dtype) / sigmas[:, None]) ** 2)
    kernels = kernels / kernels.sum(1, keepdim=True)
    rows = _reflecting_band(kernels, offsets, h)
    columns = rows if w == h else _reflecting_band(kernels, offsets, w)
    return rows.unsqueeze(1) @ images @ columns.transpose(1, 2).unsqueeze(1)


def _reflecting_band(kernels: torch.Tensor, offsets: torch.Tensor, size: int) -> torch.Tensor:
    """(n, size, size) matrices B with (B @ x)[i] = sum_o kernel[o] * x[reflect(i + o)], the
    reflection mirroring at the edge pixels (as F.pad's "reflect")."""
    n, taps = kernels.shape
    source = torch.arange(size, device=kernels.device)[:, None] + offsets  # (size, taps)
    source = source.abs()
    source = torch.where(source >= size, 2 * (size - 1) - source, source)
    band = torch.zeros(n, size, size, dtype=kernels.dtype, device=kernels.device)
    weights = kernels[:, None, :].expand(n, size, taps)
    return band.scatter_add_(2, source.expand(n, size, taps), weights)
