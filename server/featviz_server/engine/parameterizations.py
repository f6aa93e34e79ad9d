"""How an image is represented while it is optimized (Lucid's `param` module).

Each parameterization owns one leaf tensor for a batch of images and maps it to the network's
public input (RGB, NCHW, nominally [0, 1]). Every image's initial values come from its own
torch.Generator, so an image does not depend on the other images of its batch. Two options:

- `shared`: a second leaf, one image's worth, added to every image's own values (it starts at
  zero): the images of a run share part of their parameters, so an interpolation's images keep
  one layout (Lucid's shared parameterization in its neuron-interaction figures);
- `init`: start from a picture instead of noise (feature accentuation): the own values are set
  to the inverse of the map to RGB at the picture, plus the usual small noise.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch

from .job import InitImage, Recipe
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


def decorrelated_colour_inverse(x: torch.Tensor) -> torch.Tensor:
    """The inverse of `decorrelated_colour`."""
    matrix = torch.linalg.inv(COLOR_DECORRELATION.double()).to(x.device, x.dtype)
    return torch.einsum("nchw,dc->ndhw", x, matrix)


def logit(pictures: torch.Tensor) -> torch.Tensor:
    """The inverse of the sigmoid, for pictures in [0, 1] (8-bit extremes kept finite)."""
    p = pictures.clamp(0.5 / 255, 1 - 0.5 / 255)
    return torch.log(p / (1 - p))


class ImageParameterization(ABC):
    """A batch of images as a trainable leaf tensor (plus, when `shared`, one leaf shared by the
    batch) and a differentiable map to RGB."""

    def __init__(
        self, tensor: torch.Tensor, size: int, *, decorrelate: bool, shared: bool = False
    ) -> None:
        self.tensor = tensor.requires_grad_(True)
        self.shared = torch.zeros_like(tensor[:1]).requires_grad_(True) if shared else None
        self.size = size
        self.decorrelate = decorrelate

    @property
    def parameters(self) -> list[torch.Tensor]:
        """The leaves the optimizer updates."""
        return [self.tensor] if self.shared is None else [self.tensor, self.shared]

    def _values(self) -> torch.Tensor:
        """Each image's values: its own, plus the shared ones."""
        return self.tensor if self.shared is None else self.tensor + self.shared

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
        shared: bool = False,
        init: torch.Tensor | None = None,
    ) -> None:
        shape = (3, size, size)
        if raw:
            values = CLASSIC_GREY + CLASSIC_NOISE * per_image(shape, generators, torch.rand)
            if init is not None:  # the picture in 0-255 units, plus the classic noise
                values = values - CLASSIC_GREY + self._inverse(init * 255.0, decorrelate)
        else:
            values = 0.01 * per_image(shape, generators, torch.randn)
            if init is not None:
                values = values + self._inverse(logit(init), decorrelate)
        super().__init__(values.to(device), size, decorrelate=decorrelate, shared=shared)
        self.raw = raw

    @staticmethod
    def _inverse(x: torch.Tensor, decorrelate: bool) -> torch.Tensor:
        return decorrelated_colour_inverse(x) if decorrelate else x

    def __call__(self) -> torch.Tensor:
        x = self._colour(self._values())
        return x / 255.0 if self.raw else torch.sigmoid(x)

    @torch.no_grad()
    def blur(self, sigma: float) -> None:
        for leaf in self.parameters:
            leaf.copy_(gaussian_blur(leaf, sigma))


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
        shared: bool = False,
        init: torch.Tensor | None = None,
    ) -> None:
        frequencies = _frequencies(size)
        scale = 1.0 / frequencies.clamp_min(1.0 / size)
        spectrum = 0.01 * per_image((3, *frequencies.shape, 2), generators, torch.randn)
        if init is not None:
            x = logit(init)
            x = decorrelated_colour_inverse(x) if decorrelate else x
            picture = torch.fft.rfft2(x * FOURIER_MAGIC, norm="ortho") / scale
            spectrum = spectrum + torch.view_as_real(picture)
        super().__init__(spectrum.to(device), size, decorrelate=decorrelate, shared=shared)
        self.frequencies = frequencies.to(device)
        self.scale = scale.to(device)

    def __call__(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self._values()) * self.scale
        x = torch.fft.irfft2(spectrum, s=(self.size, self.size), norm="ortho")
        return torch.sigmoid(self._colour(x / FOURIER_MAGIC))

    @torch.no_grad()
    def blur(self, sigma: float) -> None:
        # The Fourier transform of a Gaussian: multiply the spectrum, exact and cheap.
        gain = torch.exp(-2.0 * math.pi**2 * sigma**2 * self.frequencies**2)
        for leaf in self.parameters:
            leaf.mul_(gain.unsqueeze(-1))


def make_image(
    recipe: Recipe,
    generators: Sequence[torch.Generator],
    device: torch.device,
    *,
    shared: bool = False,
    init: InitImage | None = None,
) -> ImageParameterization:
    """The recipe's parameterization for one image per generator; `shared`: with a shared leaf;
    `init`: starting from that picture."""
    start = None if init is None else torch.from_numpy(init.tensor(recipe.size)).unsqueeze(0)
    if recipe.parameterization == "fourier":
        return FourierImage(
            recipe.size,
            generators,
            device,
            decorrelate=recipe.decorrelate,
            shared=shared,
            init=start,
        )
    return PixelImage(
        recipe.size,
        generators,
        device,
        raw=recipe.value_range == "raw",
        decorrelate=recipe.decorrelate,
        shared=shared,
        init=start,
    )
