"""What a run is asked to do: the domain objects shared by the engine, the service and the cache.

These are plain frozen dataclasses (hashable, comparable) so that a request translates to one
value, the result cache can key on it, and the same job gives the same images wherever it runs.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field
from typing import Any, Literal

import numpy as np

from ..architecture import MIN_INPUT_SIZE, layer_index

ParameterizationName = Literal["pixel", "fourier"]
OptimizerName = Literal["adam", "normalized_ascent"]
ValueRangeName = Literal["sigmoid", "raw"]
DisplayName = Literal["clip", "standardize"]
DecayName = Literal["constant", "cosine"]
ObjectiveKind = Literal["channel", "neuron"]
TermKind = Literal["channel", "neuron", "direction", "l1", "l2", "total_variation", "diversity"]
StopReason = Literal["step_limit", "converged"]
PENALTIES: tuple[TermKind, ...] = ("l1", "l2", "total_variation")  # terms on the input image
UNITS: tuple[TermKind, ...] = ("channel", "neuron", "direction")  # what the activation measures
MAX_WEIGHT = 1000.0  # the largest learning rate, and weight of a loss term, that a request gives


Bound = float | str | None  # a number; a limit or another field's name, optionally "/2"; none


@dataclass(frozen=True)
class Spec:
    """What one recipe field is, for validation, presets and DescribeModel (`schema`): its allowed
    range (inclusive; a bound may name a server limit, schema.LIMIT_NAMES, or another field such
    as "steps", optionally halved: "size/2"); the request field that overrides it, whose comment
    in the contract describes it, or, for a field only presets set, one line of help; and any
    rule that involves other fields."""

    low: Bound = None
    high: Bound = None
    request: str = ""
    help: str = ""
    constraint: str = ""

    def __post_init__(self) -> None:
        if bool(self.request) == bool(self.help):
            raise TypeError("give a field the request field that sets it, or else its help")


def option(low: Bound = None, high: Bound = None, **details: Any) -> Any:
    """A Recipe (or Transforms) field with its Spec; `details`: request or help, constraint,
    default."""
    default = details.pop("default", MISSING)
    return field(default=default, metadata={"spec": Spec(low, high, **details)})


# The declarative table of every recipe field: the two dataclasses below, one `option` each.
# Choices come from the Literal types above; presets.py holds each preset's values.


@dataclass(frozen=True)
class Transforms:
    """Random augmentations applied before each forward pass (Lucid's standard set by default)."""

    pad: int = option(0, "size/2", request="options.transforms.pad", default=12)
    jitter: int = option(0, "size", request="options.transforms.jitter", default=8)
    scale_min: float = option(
        0.1,
        10.0,
        request="options.transforms.scale_min",
        constraint="at most scale_max",
        default=0.9,
    )
    scale_max: float = option(0.1, 10.0, request="options.transforms.scale_max", default=1.1)
    rotate_degrees: float = option(
        0.0, 180.0, request="options.transforms.rotate_degrees", default=10.0
    )
    final_jitter: int = option(0, "size/2", request="options.transforms.final_jitter", default=4)
    reflect: bool = option(request="options.transforms.reflect", default=False)
    blur: float = option(0.0, 10.0, request="options.transforms.blur", default=0.0)


@dataclass(frozen=True)
class Recipe:
    """Every hyper-parameter of one optimization; presets are named Recipes."""

    size: int = option(MIN_INPUT_SIZE, "max_size", request="size")
    steps: int = option(1, "max_steps", request="steps")
    parameterization: ParameterizationName = option(request="options.parameterization")
    decorrelate: bool = option(request="options.decorrelate")
    optimizer: OptimizerName = option(request="options.optimizer")
    learning_rate: float = option(1e-6, MAX_WEIGHT, request="options.learning_rate")
    transforms: Transforms | None = option(request="options.transforms")
    l1: float = option(0.0, MAX_WEIGHT, request="options.l1", default=0.0)
    l2: float = option(0.0, MAX_WEIGHT, request="options.l2", default=0.0)
    total_variation: float = option(0.0, MAX_WEIGHT, request="options.total_variation", default=0.0)
    blur_every: int = option(0, "max_steps", request="options.blur_every", default=0)
    blur_sigma: float = option(1e-3, 10.0, request="options.blur_sigma", default=0.5)
    redirect_relu_steps: int = option(
        0, "max_steps", request="options.redirect_relu_steps", default=0
    )
    value_range: ValueRangeName = option(
        help="sigmoid: images squashed into [0, 1] (Lucid); raw: unbounded pixels in 0-255 units "
        "from grey 128 + U(0, 20) (the classic method)",
        constraint="raw needs the pixel parameterization",
        default="sigmoid",
    )
    display: DisplayName = option(
        help="how the image becomes 8-bit: clip to [0, 1], or Chollet's standardize (zero mean, "
        "std 0.1 around grey, clip)",
        default="clip",
    )
    learning_rate_decay: DecayName = option(
        help="learning-rate schedule: constant, or cosine decay to 0", default="constant"
    )
    adam_epsilon: float = option(
        0.0,
        10.0,
        help="Adam's epsilon as a multiple of the image's root mean square of Adam's denominator: "
        "a coefficient whose gradient is weak for its image moves in proportion to it, not a "
        "full step (0: Adam's own, 1e-8)",
        default=0.0,
    )
    transforms_until: float = option(
        0.0,
        1.0,
        help="fraction of the steps that use the transforms; the rest optimize the plain image",
        default=1.0,
    )
    stop_window: int = option(
        0,
        "max_steps",
        help="stop once no image's smoothed objective (an average over about this many steps) "
        "has gained more than stop_tolerance for this many steps (0: run every step)",
        default=0,
    )
    stop_tolerance: float = option(
        0.0,
        1.0,
        help="relative gain of the smoothed objective that counts as improving",
        default=0.01,
    )


@dataclass(frozen=True)
class Objective:
    """What each image maximizes: a channel's mean or one neuron ((x, y), default the centre)."""

    kind: ObjectiveKind = "channel"
    neuron: tuple[int, int] | None = None
    negate: bool = False
    diversity: float = 0.0


@dataclass(frozen=True)
class Term:
    """One term of an objective expression (Lucid's objectives), on any conv or pool layer:

    - "channel": the mean of feature map `channel`;
    - "neuron": one unit of it at `neuron` (x, y) in the layer's output (None: the centre);
    - "direction": the mean over positions of the activations' dot product with `vector` (one
      value per channel) scaled to unit length: Lucid's `direction` (its default, cossim_pow=0,
      the dot product), so that a one-hot vector is exactly the channel objective;
    - "l1", "l2", "total_variation": penalties on the input image (`layer` empty), as in
      `regularizers`: subtract them (`channel - 0.05 * l1`);
    - "diversity": Lucid's diversity of the request's images at `layer` (Gram-matrix cosine
      similarity, negated): add it to make the images differ.
    """

    kind: TermKind
    layer: str = ""
    channel: int = 0
    neuron: tuple[int, int] | None = None
    vector: tuple[float, ...] = ()


@dataclass(frozen=True)
class Expression:
    """A weighted sum of terms; combine with `+`, `-`, scalar `*` and unary `-`."""

    terms: tuple[tuple[float, Term], ...]

    @classmethod
    def of(cls, term: Term, weight: float = 1.0) -> Expression:
        return cls(((float(weight), term),))

    def __add__(self, other: Expression) -> Expression:
        return Expression(self.terms + other.terms)

    def __sub__(self, other: Expression) -> Expression:
        return self + -other

    def __mul__(self, weight: float) -> Expression:
        return Expression(tuple((float(weight) * w, term) for w, term in self.terms))

    __rmul__ = __mul__

    def __neg__(self) -> Expression:
        return self * -1.0

    @property
    def layers(self) -> set[str]:
        """The layers its terms read (not the input)."""
        return {term.layer for _, term in self.terms if term.kind not in PENALTIES}


@dataclass(frozen=True)
class InitImage:
    """A picture to start from (feature accentuation): `pixels` is (size, size, 3) uint8 RGB at
    the job's size, `keep_close` the weight of the mean squared distance to it, in 8-bit levels,
    that the loss adds (0: free to drift)."""

    pixels: bytes
    keep_close: float = 0.0

    def tensor(self, size: int) -> np.ndarray:
        """The picture as (3, size, size) float32 in [0, 1]."""
        array = np.frombuffer(self.pixels, np.uint8).reshape(size, size, 3)
        return array.transpose(2, 0, 1).astype(np.float32) / 255.0


@dataclass(frozen=True)
class Job:
    """One request: images for (channel, seed) pairs of one layer, channel-major, then seed; or,
    with `expression`, `images_per_channel` images (seed, seed+1, ...) that maximize it (then
    `layer`, `channels` and `objective` are unused), which move from `expression` to
    `interpolate_to` when that is given (image k of n: (1 - k/(n-1)) A + k/(n-1) B, with a
    parameterization shared by the images, as in Lucid's neuron-interaction figures)."""

    layer: str
    channels: tuple[int, ...]
    recipe: Recipe
    objective: Objective = field(default_factory=Objective)
    seed: int = 0
    images_per_channel: int = 1
    expression: Expression | None = None
    interpolate_to: Expression | None = None
    init: InitImage | None = None

    @property
    def images(self) -> list[tuple[int, int]]:
        """(channel, seed) of each image, in result order (channel 0 for an expression)."""
        channels = self.channels if self.expression is None else (0,)
        return [(c, self.seed + k) for c in channels for k in range(self.images_per_channel)]

    @property
    def layers(self) -> set[str]:
        """Every layer the objective reads."""
        if self.expression is None:
            return {self.layer}
        return self.expression.layers | (self.interpolate_to or Expression(())).layers

    @property
    def cut_layer(self) -> str:
        """The deepest layer read: the network is cut right after it."""
        return max(self.layers, key=layer_index)


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
