"""What the images maximize, as small composable terms (Lucid's `objectives` algebra).

A term maps the target layer's activations of a batch, (n, C, h, w), to one value per image, so
that every image is optimized on its own value and batches stay independent. Terms combine with
`+`, `-`, scalar `*` and unary `-`: `Channel(cs) - 0.5 * Neuron(cs, 3, 3) + 10.0 * Diversity(cs)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .job import Job


class Term:
    """A per-image objective; subclasses implement `__call__`. `offset` (in layer units) is where
    the plain image's origin lies in `activations`: the canvas may add a margin around it."""

    def __call__(self, activations: torch.Tensor, offset: float = 0.0) -> torch.Tensor:
        raise NotImplementedError

    def __add__(self, other: Term) -> Term:
        return WeightedSum(((1.0, self), (1.0, other)))

    def __sub__(self, other: Term) -> Term:
        return WeightedSum(((1.0, self), (-1.0, other)))

    def __mul__(self, weight: float) -> Term:
        return WeightedSum(((float(weight), self),))

    __rmul__ = __mul__

    def __neg__(self) -> Term:
        return self * -1.0


def _per_image_channel(activations: torch.Tensor, channels: Sequence[int]) -> torch.Tensor:
    """(n, h, w): image i's map of channel channels[i]."""
    index = torch.as_tensor(channels, device=activations.device)
    return activations[torch.arange(len(channels), device=activations.device), index]


@dataclass(frozen=True)
class Channel(Term):
    """Mean of a feature map (image i: channel channels[i]): the classic objective."""

    channels: tuple[int, ...]

    def __call__(self, activations: torch.Tensor, offset: float = 0.0) -> torch.Tensor:
        return _per_image_channel(activations, self.channels).mean((1, 2))


@dataclass(frozen=True)
class Neuron(Term):
    """One unit (x, y) of a feature map, in the plain image's layer coordinates."""

    channels: tuple[int, ...]
    x: int
    y: int

    def __call__(self, activations: torch.Tensor, offset: float = 0.0) -> torch.Tensor:
        h, w = activations.shape[-2:]
        x = min(max(round(self.x + offset), 0), w - 1)
        y = min(max(round(self.y + offset), 0), h - 1)
        return _per_image_channel(activations, self.channels)[:, y, x]


@dataclass(frozen=True)
class Diversity(Term):
    """Lucid's diversity: minus each image's summed cosine similarity of Gram matrices (style)
    with the other images of its group (the same channel), over the group size."""

    groups: tuple[int, ...]

    def __call__(self, activations: torch.Tensor, offset: float = 0.0) -> torch.Tensor:
        flat = activations.flatten(2)
        grams = F.normalize((flat @ flat.transpose(1, 2)).flatten(1), dim=1, eps=1e-10)
        similarity = grams @ grams.T
        groups = torch.as_tensor(self.groups, device=activations.device)
        same = (groups[:, None] == groups[None, :]).float()
        same.fill_diagonal_(0.0)
        return -(similarity * same).sum(1) / (same.sum(1) + 1)


@dataclass(frozen=True)
class WeightedSum(Term):
    """sum(weight * term)."""

    terms: tuple[tuple[float, Term], ...]

    def __call__(self, activations: torch.Tensor, offset: float = 0.0) -> torch.Tensor:
        return sum(weight * term(activations, offset) for weight, term in self.terms)

    def __mul__(self, weight: float) -> Term:
        return WeightedSum(tuple((weight * w, term) for w, term in self.terms))

    __rmul__ = __mul__


def reads_own_channel_only(job: Job) -> bool:
    """Does the job's objective read nothing but each image's own channel? (Diversity compares
    every channel.) Then the engine computes only those channels of the target layer."""
    return not job.objective.diversity


def unit(job: Job, output_size: int, narrowed: bool = False) -> Term:
    """The job's target unit per image (channel mean or neuron), not negated: what users measure.
    `output_size` is the layer's output side for the plain image (for the default centre);
    `narrowed`: read activations already narrowed to each image's channel, (n, 1, h, w)."""
    channels = tuple(0 if narrowed else channel for channel, _ in job.images)
    if job.objective.kind == "channel":
        return Channel(channels)
    x, y = job.objective.neuron or (output_size // 2, output_size // 2)
    return Neuron(channels, x, y)


def objective(job: Job, output_size: int, narrowed: bool = False) -> Term:
    """What each image of `job` maximizes: its unit (negated on request) plus diversity."""
    term = unit(job, output_size, narrowed)
    term = -term if job.objective.negate else term
    if job.objective.diversity:
        if narrowed:
            raise ValueError("objective: diversity reads every channel; it cannot be narrowed")
        groups = tuple(channel for channel, _ in job.images)
        term = term + job.objective.diversity * Diversity(groups)
    return term
