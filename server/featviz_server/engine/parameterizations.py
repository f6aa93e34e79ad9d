"""How an image is represented while it is optimized (Lucid's `param` module).

Each parameterization owns one leaf tensor for a batch of images and maps it to the network's
public input (RGB, NCHW, nominally [0, 1]). Every image's initial values come from its own
torch.Generator, so an image does not depend on the other images of its batch.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch

from .job import Recipe
from .regularizers import gaussian_blur

# Square root of ImageNet's colour correlation matrix (Lucid), columns scaled to norm <= 1:
# optimizing in this basis decorrelates the colour channels, which gives colourful images.
_COLOR_CORRELATION_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float64
)
COLOR_DECORRELATION = (_COLOR_CORRELATION_SQRT / _COLOR_CORRELATION_SQRT.norm(dim=0).max()).float()
FOURIER_MAGIC = 4.0  # Lucid's divisor that brings the 1/f-scaled image to a sigmoid-friendly range
CLASSIC_GREY, CLASSIC_NOISE = 128.0, 20.0  # Chollet's start: grey 128 + U(0, 20), 0-255 units


def per_image(
    shape: Sequence[int], generators: Sequence[torch.Generator], draw: Callable[..., torch.Tensor]
) -> torch.Tensor:
    """One draw of `shape` from each image's generator, stacked along a new batch dimension."""
    return torch.stack([draw(tuple(shape), generator=g) for g in generators])


def decorrelated_colour(x: torch.Tensor) -> torch.Tensor:
    """Map (n, 3, h, w) from the decorrelated basis to RGB."""
    matrix = COLOR_DECORRELATION.to(x.device, x.dtype)
    return torch.einsum("nchw,dc->ndhw", x, matrix)


class ImageParameterization(ABC):
    """A batch of images as a trainable leaf tensor plus a differentiable map to RGB."""

    def __init__(self, tensor: torch.Tensor, size: int, *, decorrelate: bool) -> None:
        self.tensor = tensor.requires_grad_(True)
        self.size = size
        self.decorrelate = decorrelate

    @abstractmethod
    def __call__(self) -> torch.Tensor:
        """The images as public network input, (n, 3, size, size)."""

    @abstractmethod
    def blur(self, sigma: float) -> None:
        """Blur the images in place by a Gaussian of `sigma` pixels (a regularizer)."""

    def _colour(self, x: torch.Tensor) -> torch.Tensor:
        return decorrelated_colour(x) if self.decorrelate else x


class PixelImage(ImageParameterization):
    """Raw pixels. `raw`: values in 0-255 units, unbounded (the classic method); otherwise
    Lucid's pixel parameterization: logits, optionally decorrelated, squashed by a sigmoid."""

    def __init__(
        self,
        size: int,
        generators: Sequence[torch.Generator],
        device: torch.device,
        *,
        raw: bool,
        decorrelate: bool,
    ) -> None:
        shape = (3, size, size)
        if raw:
            values = CLASSIC_GREY + CLASSIC_NOISE * per_image(shape, generators, torch.rand)
        else:
            values = 0.01 * per_image(shape, generators, torch.randn)
        super().__init__(values.to(device), size, decorrelate=decorrelate)
        self.raw = raw

    def __call__(self) -> torch.Tensor:
        x = self._colour(self.tensor)
        return x / 255.0 if self.raw else torch.sigmoid(x)

    @torch.no_grad()
    def blur(self, sigma: float) -> None:
        self.tensor.copy_(gaussian_blur(self.tensor, sigma))


def _frequencies(size: int) -> torch.Tensor:
    """|f| in cycles per pixel of each coefficient of a (size, size) real 2-D FFT."""
    fy = torch.fft.fftfreq(size).view(-1, 1)
    fx = torch.fft.rfftfreq(size).view(1, -1)
    return (fx**2 + fy**2).sqrt()


class FourierImage(ImageParameterization):
    """Lucid's Fourier parameterization: a spectrum scaled by 1/f (so that every frequency
    learns at the same rate, which favours smooth images), optionally decorrelated colour,
    then a sigmoid to [0, 1]."""

    def __init__(
        self,
        size: int,
        generators: Sequence[torch.Generator],
        device: torch.device,
        *,
        decorrelate: bool,
    ) -> None:
        frequencies = _frequencies(size)
        spectrum = 0.01 * per_image((3, *frequencies.shape, 2), generators, torch.randn)
        super().__init__(spectrum.to(device), size, decorrelate=decorrelate)
        self.frequencies = frequencies.to(device)
        self.scale = 1.0 / self.frequencies.clamp_min(1.0 / size)

    def __call__(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.tensor) * self.scale
        x = torch.fft.irfft2(spectrum, s=(self.size, self.size), norm="ortho")
        return torch.sigmoid(self._colour(x / FOURIER_MAGIC))

    @torch.no_grad()
    def blur(self, sigma: float) -> None:
        # The Fourier transform of a Gaussian: multiply the spectrum, exact and cheap.
        gain = torch.exp(-2.0 * math.pi**2 * sigma**2 * self.frequencies**2)
        self.tensor.mul_(gain.unsqueeze(-1))


def make_image(
    recipe: Recipe, generators: Sequence[torch.Generator], device: torch.device
) -> ImageParameterization:
    """The recipe's parameterization for one image per generator."""
    if recipe.parameterization == "fourier":
        return FourierImage(recipe.size, generators, device, decorrelate=recipe.decorrelate)
    return PixelImage(
        recipe.size,
        generators,
        device,
        raw=recipe.value_range == "raw",
        decorrelate=recipe.decorrelate,
    )
