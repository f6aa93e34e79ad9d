"""How a final image holds up: its unit's mean over a fixed set of small random views of it, and
its share of saturated values (docs/engine.md gives the definition).

An image that scores high only on its exact pixels is closer to an adversarial pattern than to a
picture of what the unit detects; the robust activation is what a shift, zoom or tilt of a few
pixels leaves of its score. The views are drawn once, from a numpy generator of their own (the
optimizer draws only from torch generators), so every image of every run, preset and version is
scored on the same 32 views, and never on a view it was optimized on.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import device as devices

VIEWS = 32
JITTER = 8.0  # pixels, each direction
SCALES = (0.9, 1.1)
DEGREES = 10.0
VIEW_SEED = 2017  # numpy PCG64; Olah, Mordvintsev & Schubert, "Feature Visualization", Distill
Output = torch.Tensor | dict[str, torch.Tensor]  # what a forward gives a term to read


@dataclass(frozen=True)
class View:
    """Shift by (dx, dy) pixels, then zoom by `scale` and rotate by `degrees` (counter-clockwise
    on screen) about the image centre; what comes from outside the image is its mirror image."""

    dx: float
    dy: float
    scale: float
    degrees: float


@functools.cache
def views() -> tuple[View, ...]:
    """The fixed 32 views: dx, dy ~ U(-8, 8) px, scale ~ U(0.9, 1.1), rotation ~ U(-10, 10)°."""
    rng = np.random.default_rng(VIEW_SEED)
    draws = rng.uniform(-1.0, 1.0, size=(VIEWS, 4))
    mid, half = (SCALES[0] + SCALES[1]) / 2, (SCALES[1] - SCALES[0]) / 2
    return tuple(
        View(float(JITTER * a), float(JITTER * b), float(mid + half * c), float(DEGREES * d))
        for a, b, c, d in draws
    )


def view_affines(size: int, chosen: tuple[View, ...]) -> torch.Tensor:
    """`affine_grid` matrices (V, 2, 3) for square images of `size` pixels.

    An output pixel at p (pixels from the image centre, y down) shows the image at
    q = R(-angle) p / scale - (dx, dy), with R(a) = [[cos a, sin a], [-sin a, cos a]] (a positive
    angle turns the picture counter-clockwise on screen). In normalized coordinates (x / (size/2))
    that is theta = [R(-angle) / scale | -(dx, dy) * 2 / size].
    """
    rows = []
    for view in chosen:
        a = math.radians(view.degrees)
        cos, sin = math.cos(a), math.sin(a)
        rows.append(
            [
                [cos / view.scale, -sin / view.scale, -2 * view.dx / size],
                [sin / view.scale, cos / view.scale, -2 * view.dy / size],
            ]
        )
    return torch.tensor(rows, dtype=torch.float64).float()


def view_grids(thetas: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
    """`grid_sample` grids (V, size, size, 2) of the views `thetas` (V, 2, 3)."""
    return F.affine_grid(thetas.to(device), [len(thetas), 3, size, size], align_corners=False)


def warp_views(image: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
    """(V, 3, h, w): every view of one image (1, 3, h, w), bilinear, reflected at the borders."""
    tiled = image.expand(len(grids), -1, -1, -1)
    return F.grid_sample(
        tiled, grids, mode="bilinear", padding_mode="reflection", align_corners=False
    )


@torch.no_grad()
def robust_activation(
    forward: Callable[[torch.Tensor, int], Output],
    pixels: torch.Tensor,
    term: Callable[[Output], torch.Tensor],
) -> torch.Tensor:
    """Each image's mean of `term` over the fixed views, (n,).

    `pixels`: the final 8-bit images, (n, 3, h, w) uint8 (or already / 255). `forward(views, i)`
    maps a batch of network inputs, views of image i, to what `term` reads of image i: it may
    compute only that (the engine computes only the image's own channel of a channel unit's
    layer). `term` maps the output for n images to n values, image i's from row i alone (as
    every unit does: diversity and other terms across images are not measured). The output is
    a tensor, or a dict of tensors (the layers an objective expression reads). The views of
    one image go through the network a few at a time, at most `device.chunk_pixels` pixels per
    forward, so that the measure's memory does not grow with the number of images; each view's
    output is broadcast to n rows (no copy) and row i read.
    """
    images = pixels.float() / 255.0 if pixels.dtype == torch.uint8 else pixels
    n, size = len(images), images.shape[-1]
    thetas = view_affines(size, views())
    total = torch.zeros(n, dtype=torch.float64, device=images.device)
    for chunk in thetas.split(_per_chunk(images)):
        grids = view_grids(chunk, size, images.device)  # the same for every image
        for i in range(n):
            for part in _per_view(forward(warp_views(images[i : i + 1], grids), i), n):
                total[i] += term(part)[i].double()
    return (total / VIEWS).float().cpu()  # one device sync, not one per view


def in_chunks(forward: Callable[[torch.Tensor], Output], images: torch.Tensor) -> Output:
    """`forward(images)`, computed a few images at a time (at most `device.chunk_pixels` per
    pass, as the views are) into one output: a result's memory does not grow with its images
    beyond the output itself."""
    output: dict[str, torch.Tensor] = {}
    done = 0
    for chunk in images.split(_per_chunk(images)):
        part = forward(chunk)
        named = {"": part} if isinstance(part, torch.Tensor) else part
        for name, x in named.items():
            if name not in output:
                output[name] = x.new_empty((len(images), *x.shape[1:]))
            output[name][done : done + len(chunk)] = x
        done += len(chunk)
    return output[""] if isinstance(part, torch.Tensor) else output


def _per_chunk(images: torch.Tensor) -> int:
    return max(1, devices.chunk_pixels(images.device) // (images.shape[-2] * images.shape[-1]))


def _per_view(output: Output, n: int) -> list[Output]:
    """A forward's output for several views of one image, split into one output per view, each
    broadcast to n images."""
    if isinstance(output, torch.Tensor):
        return [view.expand(n, *view.shape[1:]) for view in output.split(1)]
    names = list(output)
    return [
        {name: view.expand(n, *view.shape[1:]) for name, view in zip(names, parts, strict=True)}
        for parts in zip(*(output[name].split(1) for name in names), strict=True)
    ]


def saturated_fraction(pixels: torch.Tensor) -> torch.Tensor:
    """Each 8-bit image's share of channel values at 0 or 255, (n,)."""
    flat = pixels.flatten(1)
    return ((flat == 0) | (flat == 255)).float().mean(1)
