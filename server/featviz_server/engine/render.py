"""The optimization loop, step by step: `Run` holds one job's state, `advance` moves any number
of compatible runs forward by one batched forward/backward, and `render` is the loop for one job.

Runs of different jobs can share `advance` (continuous batching) because nothing couples the
images of a batch: each run has its own parameters, optimizer and per-image random generators,
every loss term is per image, and the CPU network is batch-invariant (forward._convolve,
docs/engine.md).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from typing import get_args

import torch

from ..architecture import (
    LAYERS_BY_NAME,
    check_channel,
    check_channels,
    check_position,
    layer_named,
)
from ..model import VGG16
from . import device as devices
from . import schema
from .forward import apply_layer, collect
from .images import display, to_numpy, to_uint8
from .job import (
    PENALTIES,
    UNITS,
    Cancelled,
    Expression,
    Job,
    Progress,
    RenderResult,
    StopReason,
    TermKind,
    Transforms,
)
from .measures import in_chunks, robust_activation, saturated_fraction
from .objectives import INPUT, narrowed_channels, objective, penalties, unit
from .optimizers import learning_rate, make_optimizer
from .parameterizations import make_image
from .regularizers import gaussian_blur
from .stopping import EarlyStop
from .transforms import canvas_size, random_affines, random_blurs, warp


def validate(job: Job) -> None:
    """ValueError naming the first field of `job` that the engine cannot run."""
    if job.expression is None:
        _validate_layer_and_channels(job)
    else:
        if job.layer or job.channels:
            raise ValueError("layer: give no layer and channels with an objective expression")
        _validate_expression("expression", job.expression, job.recipe.size)
        if job.interpolate_to is not None:
            _validate_expression("interpolate_to", job.interpolate_to, job.recipe.size)
    if job.images_per_channel < 1:
        raise ValueError("images_per_channel: must be at least 1")
    schema.check(job.recipe)


def _validate_layer_and_channels(job: Job) -> None:
    layer = layer_named(job.layer)
    if not job.channels:
        raise ValueError("channels: at least one channel is required")
    check_channels(layer, job.channels)
    if job.objective.neuron is not None:
        check_position(layer, job.objective.neuron, job.recipe.size, "objective.neuron")


def _validate_expression(field: str, expression: Expression, size: int) -> None:
    for i, (weight, term) in enumerate(expression.terms):
        at = f"{field}.terms[{i}]"
        if not math.isfinite(weight):
            raise ValueError(f"{at}.weight: must be a finite number, got {weight}")
        if term.kind in PENALTIES:
            if term.layer:
                raise ValueError(f"{at}.layer: {term.kind} reads the input image, not a layer")
            continue
        if term.kind not in get_args(TermKind):
            raise ValueError(f"{at}.kind: unknown term kind {term.kind!r}")
        layer = layer_named(term.layer, f"{at}.layer")
        if term.kind in ("channel", "neuron"):
            check_channel(layer, term.channel, f"{at}.channel")
        if term.kind == "neuron" and term.neuron is not None:
            check_position(layer, term.neuron, size, f"{at}.neuron")
        if term.kind == "direction":
            if len(term.vector) != layer.channels:
                raise ValueError(
                    f"{at}.vector: has {len(term.vector)} values; {layer.name} has "
                    f"{layer.channels} channels"
                )
            if not all(map(math.isfinite, term.vector)) or not any(term.vector):
                raise ValueError(f"{at}.vector: values must be finite and not all 0")
    if not any(term.kind in UNITS for _, term in expression.terms):
        raise ValueError(f"{field}.terms: reads no unit; add a channel, neuron or direction term")


class Run:
    """One job's optimization state: parameters, optimizer state, generators, step count."""

    def __init__(self, job: Job, model: VGG16) -> None:
        validate(job)
        self.job, self.recipe, self.model = job, job.recipe, model
        self.device = next(model.parameters()).device
        self.network = model.cut(job.cut_layer)
        self.head, self.target = self.network[:-1], self.network[-1]
        self.reads = job.layers - {job.cut_layer}  # kept from the head's forward pass
        self.generators = [torch.Generator().manual_seed(seed) for _, seed in job.images]
        self.image = make_image(
            self.recipe,
            self.generators,
            self.device,
            shared=job.interpolate_to is not None,
            init=job.init,
        )
        self.optimizer = make_optimizer(self.recipe, self.image.parameters)
        self.objective = objective(job)  # on the whole layer: results
        self.unit = unit(job)
        self.penalty = penalties({kind: getattr(self.recipe, kind) for kind in PENALTIES})
        self.init = (
            None
            if job.init is None or not job.init.keep_close
            else torch.from_numpy(job.init.tensor(self.recipe.size)).to(self.device)
        )
        # While optimizing, compute only each image's own channel of the cut layer when that
        # is all the objective reads of it (forward.py; devices.narrows_target_layer says where).
        narrowable = (
            devices.narrows_target_layer(self.device)
            and LAYERS_BY_NAME[job.cut_layer].kind == "conv"
        )
        self.target_channels = narrowed_channels(job) if narrowable else None
        self.step_objective = (
            objective(job, narrowed=True) if self.target_channels else self.objective
        )
        self.measured_unit = unit(job, narrowed=True) if self.target_channels else self.unit
        self.step = 0
        self.values = torch.zeros(len(job.images))  # each image's objective at the last step
        self.stopping = EarlyStop(self.recipe, len(job.images))
        self._started = time.perf_counter()

    @property
    def transforms(self) -> Transforms | None:
        """This step's random transforms (None once past `transforms_until`)."""
        if self.step < self.recipe.transforms_until * self.recipe.steps:
            return self.recipe.transforms
        return None

    @property
    def canvas(self) -> int:
        """Side of the network input at this step."""
        return canvas_size(self.recipe.size, self.transforms)

    @property
    def batch_key(self) -> Hashable:
        """Runs with equal keys can share one forward/backward."""
        return (self.job.cut_layer, self.canvas, self.device)

    @property
    def redirecting(self) -> bool:
        """Does this step still use redirected ReLUs?"""
        return self.step < self.recipe.redirect_relu_steps

    @property
    def done(self) -> bool:
        return self.stopping.converged or self.step >= self.recipe.steps

    @property
    def stop_reason(self) -> StopReason:
        return "converged" if self.stopping.converged else "step_limit"

    def __len__(self) -> int:
        return len(self.generators)

    def _network_input(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and, after this step's random transforms, what the network sees."""
        images = self.image()
        transforms = self.transforms
        if transforms is None:
            return images, images
        thetas = random_affines(transforms, self.recipe.size, self.generators)
        seen = warp(images, thetas, self.canvas, transforms.reflect)
        if transforms.blur:
            seen = gaussian_blur(seen, random_blurs(transforms, self.generators))
        return images, seen

    def _target_layer(self, hidden: torch.Tensor) -> torch.Tensor:
        """The target layer on this run's part of the batch (narrowed by `target_channels`)."""
        redirect = None
        if self.redirecting:
            redirect = torch.ones(len(self), dtype=torch.bool, device=hidden.device)
        return apply_layer(self.target, hidden, redirect, self.target_channels)

    def _loss(self, layers: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss of this step; `layers`: what the network computed for this run's images,
        and the plain images under INPUT."""
        pad = self.transforms.pad if self.transforms else 0
        values = self.step_objective(layers, pad)
        self.values = values.detach()
        loss = -values
        if self.penalty is not None:
            loss = loss + self.penalty(layers)
        if self.init is not None:
            distance = (255.0 * (layers[INPUT] - self.init)).square().mean((1, 2, 3))
            loss = loss + self.job.init.keep_close * distance
        return loss.sum()

    def _update(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.recipe, self.step)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.stopping.update(self.step, self.values)
        if self.recipe.blur_every and self.step % self.recipe.blur_every == 0:
            self.image.blur(self.recipe.blur_sigma)

    @torch.no_grad()
    def _display(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(network-input images, display floats, uint8), all (n, 3, h, w)."""
        images = self.image()
        shown = display(images, self.recipe.display)
        return images, shown, to_uint8(shown, self.recipe.display)

    def read(self, images: torch.Tensor, image: int | None = None) -> dict[str, torch.Tensor]:
        """Everything the objective reads of `images` (n, 3, size, size): the layers, and the
        images under INPUT; no transforms, no redirected ReLUs. With `image`, `images` are views
        of that one image of the run, and the cut layer is narrowed as the steps narrow it, to
        the image's own channel (what `measured_unit` reads)."""
        channels = self.target_channels
        channel = None if image is None or channels is None else channels[image]
        with devices.autocast(self.model, self.device):
            hidden, layers = collect(self.head, images, keep=self.reads)
            layers[self.job.cut_layer] = apply_layer(self.target, hidden, channels=channel)
        return {**{name: x.float() for name, x in layers.items()}, INPUT: images}

    def robust_activation(self, pixels: torch.Tensor) -> torch.Tensor:
        """The robust activation of the unit of each of this run's 8-bit images (n, 3, h, w)."""
        return robust_activation(self.read, pixels, self.measured_unit)

    def cancelled(self) -> Cancelled:
        """The error that ends this run before its last step."""
        return Cancelled(f"cancelled at step {self.step} of {self.recipe.steps}")

    def progress(self) -> Progress:
        _, _, pixels = self._display()
        return Progress(self.step, self.recipe.steps, self.values.tolist(), to_numpy(pixels))

    @torch.no_grad()
    def result(self, return_float: bool = False) -> RenderResult:
        """Final images, and the objective and the activation of its units of each, measured on
        the 8-bit image without transforms, as a user would measure them."""
        _, shown, pixels = self._display()
        layers = in_chunks(self.read, pixels / 255.0)
        return RenderResult(
            images=to_numpy(pixels),
            objective=self.objective(layers).tolist(),
            activation=self.unit(layers).tolist(),
            robust_activation=self.robust_activation(pixels).tolist(),
            saturated_fraction=saturated_fraction(pixels).tolist(),
            stop_reason=self.stop_reason,
            steps=self.step,
            duration_seconds=time.perf_counter() - self._started,
            device=devices.describe(self.device),
            float_images=to_numpy(shown) if return_float else None,
        )


def advance(runs: Sequence[Run]) -> None:
    """One optimization step for every run, in ONE forward/backward through the cut network
    (the layers before the cut layer batched, keeping those an objective reads; the cut layer
    per run, which may narrow it)."""
    if not runs:
        return
    if len({run.batch_key for run in runs}) > 1:
        raise ValueError("runs: all runs advanced together must share one batch_key")
    if any(run.done for run in runs):
        raise ValueError("runs: a finished run cannot be advanced")
    device = runs[0].device
    sizes = [len(run) for run in runs]
    prepared = [run._network_input() for run in runs]  # in float32: the views' grids too
    seen = [network_input for _, network_input in prepared]
    batch = seen[0] if len(seen) == 1 else torch.cat(seen)
    batch = batch.contiguous(memory_format=devices.memory_format(device))
    keep = set().union(*(run.reads for run in runs))
    with devices.autocast(runs[0].model, device):  # the network only
        hidden, kept = collect(runs[0].head, batch, _redirect(runs), keep)
        targets = [run._target_layer(x) for run, x in zip(runs, _split(hidden, sizes), strict=True)]
    kept_parts = {name: _split(x, sizes) for name, x in kept.items()}
    layers = []
    for i, (run, (images, _)) in enumerate(zip(runs, prepared, strict=True)):
        read = {name: kept_parts[name][i].float() for name in run.reads}
        read[run.job.cut_layer] = targets[i].float()
        layers.append({**read, INPUT: images})
    loss = sum(run._loss(read) for run, read in zip(runs, layers, strict=True))
    loss.backward()
    for run in runs:
        run._update()


def _split(x: torch.Tensor, sizes: list[int]) -> Sequence[torch.Tensor]:
    """`x.split(sizes)`; one part is `x` itself (a split's backward copies the whole gradient)."""
    return (x,) if len(sizes) == 1 else x.split(sizes)


def _redirect(runs: Sequence[Run]) -> torch.Tensor | None:
    """Per image: does it still use redirected ReLUs (None when no image does)?"""
    flags = [run.redirecting for run in runs]
    if not any(flags):
        return None
    per_image = [flag for run, flag in zip(runs, flags, strict=True) for _ in range(len(run))]
    return torch.tensor(per_image, device=runs[0].device)


def render(
    model: VGG16,
    job: Job,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    progress_every: int = 0,
    cancel: threading.Event | None = None,
    return_float: bool = False,
) -> RenderResult:
    """Run `job` to the end; `on_progress` every `progress_every` steps; Cancelled when `cancel`
    is set (checked before every step)."""
    run = Run(job, model)
    while not run.done:
        if cancel is not None and cancel.is_set():
            raise run.cancelled()
        advance([run])
        if on_progress is not None and progress_every and run.step % progress_every == 0:
            on_progress(run.progress())
    return run.result(return_float)
