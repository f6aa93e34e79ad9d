"""From optimized values to what users see: display float images and 8-bit RGB."""

from __future__ import annotations

import numpy as np
import torch

from .job import DisplayName


def display(images: torch.Tensor, mode: DisplayName) -> torch.Tensor:
    """(n, 3, h, w) network input -> display floats in [0, 1].

    "clip": as is. "standardize": Chollet's deprocessing of unbounded images, per image and in
    0-255 units (where his epsilon lives): zero mean, unit std (+1e-5), x0.1, +0.5, then clip.
    """
    if mode == "standardize":
        images = images * 255.0
        flat = images.flatten(1)
        mean = flat.mean(1).view(-1, 1, 1, 1)
        std = flat.std(1, correction=0).view(-1, 1, 1, 1)
        images = (images - mean) / (std + 1e-5) * 0.1 + 0.5
    return images.clamp(0.0, 1.0)


def to_uint8(images: torch.Tensor, mode: DisplayName) -> torch.Tensor:
    """Display floats -> uint8 (n, 3, h, w); "standardize" truncates, as Chollet's astype does."""
    scaled = images * 255.0
    return (scaled if mode == "standardize" else scaled.round()).to(torch.uint8)


def to_numpy(images: torch.Tensor) -> np.ndarray:
    """(n, 3, h, w) -> contiguous (n, h, w, 3) numpy, on the CPU."""
    return np.ascontiguousarray(images.detach().permute(0, 2, 3, 1).cpu().numpy())
