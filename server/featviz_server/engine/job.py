"""What a run is asked to do: the domain objects shared by the engine, the service and the cache.

These are plain frozen dataclasses (hashable, comparable) so that a request translates to one
value, the result cache can key on it, and the same job gives the same images wherever it runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

ParameterizationName = Literal["pixel", "fourier"]
OptimizerName = Literal["adam", "normalized_ascent"]
ValueRangeName = Literal["sigmoid", "raw"]
DisplayName = Literal["clip", "standardize"]
DecayName = Literal["constant", "cosine"]
ObjectiveKind = Literal["channel", "neuron"]
StopReason = Literal["step_limit", "converged"]


@dataclass(frozen=True)
class Transforms:
    """Random augmentations applied before each forward pass (Lucid's standard set by default)."""

    pad: int = 12
    jitter: int = 8
    scale_min: float = 0.9
    scale_max: float = 1.1
    rotate_degrees: float = 10.0
    final_jitter: int = 4
    # Fill what a view shows from outside the image with its mirror image (else grey).
    reflect: bool = False
    # Blur each view by a Gaussian of sigma ~ U(0, blur) pixels: no score for detail that only
    # counts at the exact pixels (0: no blur).
    blur: float = 0.0


@dataclass(frozen=True)
class Recipe:
    """Every hyper-parameter of one optimization; presets are named Recipes."""

    size: int
    steps: int
    parameterization: ParameterizationName
    decorrelate: bool
    optimizer: OptimizerName
    learning_rate: float
    transforms: Transforms | None
    l1: float = 0.0
    l2: float = 0.0
    total_variation: float = 0.0
    blur_every: int = 0
    blur_sigma: float = 0.5
    redirect_relu_steps: int = 0
    # "sigmoid": images squashed into [0, 1] (Lucid); "raw": unbounded pixel values in 0-255 units
    # from grey 128 + U(0, 20) (the classic method; pixel parameterization only).
    value_range: ValueRangeName = "sigmoid"
    # How the optimized image becomes 8-bit: "clip" to [0, 1], or Chollet's "standardize"
    # (zero mean, std 0.1 around grey, clip), which the unbounded classic images need.
    display: DisplayName = "clip"
    # Learning-rate schedule over the run: "constant", or "cosine" decay from learning_rate to 0.
    learning_rate_decay: DecayName = "constant"
    # Fraction of the steps that use `transforms`; the rest optimize the plain image directly,
    # which sharpens exactly what a user sees and measures.
    transforms_until: float = 1.0
    # Early stop: the run ends once no image's smoothed objective (an average over about
    # `stop_window` steps) has gained more than `stop_tolerance` (relative) for `stop_window`
    # steps; 0 never stops before `steps`.
    stop_window: int = 0
    stop_tolerance: float = 0.01


@dataclass(frozen=True)
class Objective:
    """What each image maximizes: a channel's mean or one neuron ((x, y), default the centre)."""

    kind: ObjectiveKind = "channel"
    neuron: tuple[int, int] | None = None
    negate: bool = False
    diversity: float = 0.0


@dataclass(frozen=True)
class Job:
    """One request: images for (channel, seed) pairs of one layer, channel-major, then seed."""

    layer: str
    channels: tuple[int, ...]
    recipe: Recipe
    objective: Objective = field(default_factory=Objective)
    seed: int = 0
    images_per_channel: int = 1

    @property
    def images(self) -> list[tuple[int, int]]:
        """(channel, seed) of each image, in result order."""
        return [(c, self.seed + k) for c in self.channels for k in range(self.images_per_channel)]


@dataclass
class Progress:
    """A snapshot sent to the progress callback."""

    step: int
    total_steps: int
    objective: list[float]
    images: np.ndarray  # (N, H, W, 3) uint8, RGB


@dataclass
class RenderResult:
    """The outcome of a run."""

    images: np.ndarray  # (N, H, W, 3) uint8, RGB
    objective: list[float]  # final objective value per image
    activation: list[float]  # mean activation of the target unit on the final 8-bit image
    steps: int
    duration_seconds: float
    device: str
    # The unit's mean over the fixed views of each 8-bit image, and its share of values at 0 or
    # 255 (engine/measures.py).
    robust_activation: list[float]
    saturated_fraction: list[float]
    stop_reason: StopReason = "step_limit"
    float_images: np.ndarray | None = None  # (N, H, W, 3) float32 in [0, 1], on request


class Cancelled(Exception):  # the name reads as "the run was Cancelled"
    """The run's cancel flag was set; raised within one step."""
