"""What the images maximize, as small composable terms (Lucid's `objectives` algebra), computed
for a whole batch at once.

A term reads `layers`, the activations of a batch by layer name, (n, C, h, w) each, plus the
input images under INPUT, and gives one value per image, so that every image is optimized on its
own value and batches stay independent. Terms combine with `+`, `-`, `*` and unary `-`; a weight
may be one number or one per image (interpolation). `objective(job)` compiles a job's domain
objective (`job.Objective` or `job.Expression`) into such a term.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..architecture import layer_geometry
from . import job as domain
from . import regularizers
from .job import PENALTIES, UNITS, Job

INPUT = "input"  # the key of the (plain, untransformed) input images in `layers`
Layers = Mapping[str, torch.Tensor]
Weight = float | tuple[float, ...]  # one for every image, or one per image


class Term:
    """A per-image objective; subclasses implement `__call__`. `pad` (input pixels) is where the
    plain image's origin lies on the canvas the network saw: transforms may add a margin."""

    def __call__(self, layers: Layers, pad: int = 0) -> torch.Tensor:
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
    """Mean of a feature map of `layer` (image i: channel channels[i]): the classic objective."""

    layer: str
    channels: tuple[int, ...]

    def __call__(self, layers: Layers, pad: int = 0) -> torch.Tensor:
        return _per_image_channel(layers[self.layer], self.channels).mean((1, 2))


@dataclass(frozen=True)
class Neuron(Term):
    """One unit (x, y) of a feature map, in the plain image's layer coordinates."""

    layer: str
    channels: tuple[int, ...]
    x: int
    y: int

    def __call__(self, layers: Layers, pad: int = 0) -> torch.Tensor:
        activations = layers[self.layer]
        h, w = activations.shape[-2:]
        offset = pad / layer_geometry(self.layer, 1).stride
        x = min(max(round(self.x + offset), 0), w - 1)
        y = min(max(round(self.y + offset), 0), h - 1)
        return _per_image_channel(activations, self.channels)[:, y, x]


@dataclass(frozen=True)
class Direction(Term):
    """Mean over positions of the dot product of the channel vector with `vector` scaled to unit
    length (Lucid's `direction`, cossim_pow=0): a one-hot vector gives the channel mean."""

    layer: str
    vector: tuple[float, ...]

    def __call__(self, layers: Layers, pad: int = 0) -> torch.Tensor:
        activations = layers[self.layer]
        unit = F.normalize(torch.tensor(self.vector, dtype=torch.float64), dim=0)
        unit = unit.to(activations.device, activations.dtype)
        return torch.einsum("nchw,c->nhw", activations, unit).mean((1, 2))


@dataclass(frozen=True)
class Penalty(Term):
    """L1, L2 or total variation of the input images (`regularizers`)."""

    kind: str

    def __call__(self, layers: Layers, pad: int = 0) -> torch.Tensor:
        return regularizers.PENALTIES[self.kind](layers[INPUT])


@dataclass(frozen=True)
class Diversity(Term):
    """Lucid's diversity at `layer`: minus each image's summed cosine similarity of Gram
    matrices (style) with the other images of its group, over the group size."""

    layer: str
    groups: tuple[int, ...]

    def __call__(self, layers: Layers, pad: int = 0) -> torch.Tensor:
        flat = layers[self.layer].flatten(2)
        grams = F.normalize((flat @ flat.transpose(1, 2)).flatten(1), dim=1, eps=1e-10)
        similarity = grams @ grams.T
        groups = torch.as_tensor(self.groups, device=flat.device)
        same = (groups[:, None] == groups[None, :]).float()
        same.fill_diagonal_(0.0)
        return -(similarity * same).sum(1) / (same.sum(1) + 1)


@dataclass(frozen=True)
class WeightedSum(Term):
    """sum(weight * term); a weight is a number or a tuple with one number per image."""

    terms: tuple[tuple[Weight, Term], ...]

    def __call__(self, layers: Layers, pad: int = 0) -> torch.Tensor:
        total = None
        for weight, term in self.terms:
            values = term(layers, pad)
            if isinstance(weight, tuple):
                weighted = torch.tensor(weight, dtype=values.dtype, device=values.device) * values
            else:
                weighted = weight * values
            total = weighted if total is None else total + weighted
        assert total is not None, "an empty sum"
        return total

    def __mul__(self, weight: float) -> Term:
        return WeightedSum(tuple((_scaled(w, weight), term) for w, term in self.terms))

    __rmul__ = __mul__


def _scaled(weight: Weight, factor: float) -> Weight:
    return tuple(factor * w for w in weight) if isinstance(weight, tuple) else factor * weight


# --- a job's objective -----------------------------------------------------------------------


Slot = tuple[tuple[float, ...], domain.Term]  # each image's weight of one term


def _slots(job: Job) -> list[Slot]:
    """The job's objective as terms with one weight per image, before compiling."""
    n = len(job.images)
    if job.expression is None:
        sign = -1.0 if job.objective.negate else 1.0
        unit = domain.Term(job.objective.kind, job.layer, neuron=job.objective.neuron)
        slots = [((sign,) * n, unit)]
        if job.objective.diversity:
            slots.append(((job.objective.diversity,) * n, domain.Term("diversity", job.layer)))
        return slots
    if job.interpolate_to is None:
        return [((w,) * n, term) for w, term in job.expression.terms]
    t = [k / (n - 1) if n > 1 else 0.0 for k in range(n)]
    start = [(tuple(w * (1 - tk) for tk in t), term) for w, term in job.expression.terms]
    end = [(tuple(w * tk for tk in t), term) for w, term in job.interpolate_to.terms]
    return start + end


def _compile(job: Job, slots: list[Slot], narrowed: bool) -> Term:
    """The batch term of `slots`; `narrowed`: the cut layer holds only each image's channel."""
    per_image_channels = tuple(channel for channel, _ in job.images)
    plain = job.expression is None  # a layer and channels: each image reads its own channel
    size = job.recipe.size
    terms: list[tuple[Weight, Term]] = []
    for weights, term in slots:
        channels = per_image_channels if plain else (term.channel,) * len(weights)
        if narrowed and term.layer == job.cut_layer:
            channels = (0,) * len(channels)
        if term.kind == "channel":
            compiled: Term = Channel(term.layer, channels)
        elif term.kind == "neuron":
            x, y = term.neuron or layer_geometry(term.layer, size).centre
            compiled = Neuron(term.layer, channels, x, y)
        elif term.kind == "direction":
            compiled = Direction(term.layer, term.vector)
        elif term.kind in PENALTIES:
            compiled = Penalty(term.kind)
        else:
            if narrowed and term.layer == job.cut_layer:
                raise ValueError("objective: diversity reads every channel; it cannot be narrowed")
            compiled = Diversity(term.layer, per_image_channels)
        weight: Weight = weights[0] if len(set(weights)) == 1 else weights
        terms.append((weight, compiled))
    return WeightedSum(tuple(terms))


def objective(job: Job, narrowed: bool = False) -> Term:
    """What each image of `job` maximizes. `narrowed`: read the cut layer's activations
    narrowed to each image's own channel, (n, 1, h, w) (see `narrowed_channels`)."""
    return _compile(job, _slots(job), narrowed)


def unit(job: Job, narrowed: bool = False) -> Term:
    """What users measure as the activation: the units the objective reads (channel, neuron,
    direction terms with their weights; a plain request's unit not negated), without the
    penalties and the diversity. `narrowed`: as for `objective`."""
    slots = _slots(job)
    if job.expression is None:
        slots = [((1.0,) * len(job.images), slots[0][1])]
    kept = [slot for slot in slots if slot[1].kind in UNITS]
    return _compile(job, kept, narrowed)


def narrowed_channels(job: Job) -> list[int] | None:
    """Per image, the one channel of the cut layer that its objective reads, when it reads
    nothing else of that layer (channel and neuron terms; direction and diversity read every
    channel); else None. Then the engine may compute only those channels of the cut layer."""
    cut = job.cut_layer
    on_cut = [term for _, term in _slots(job) if term.kind not in PENALTIES and term.layer == cut]
    if any(term.kind not in ("channel", "neuron") for term in on_cut):
        return None
    if job.expression is None:
        return [channel for channel, _ in job.images]
    channels = {term.channel for term in on_cut}
    return [channels.pop()] * len(job.images) if len(channels) == 1 else None


def penalties(weights: Mapping[str, float]) -> Term | None:
    """The recipe's penalties (`l1`, `l2`, `total_variation` weights) as one term, or None."""
    terms = tuple((weights[kind], Penalty(kind)) for kind in PENALTIES if weights[kind])
    return WeightedSum(terms) if terms else None
