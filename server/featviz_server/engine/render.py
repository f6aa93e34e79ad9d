"""The optimization loop, step by step: `Run` holds one job's state, `advance` moves any number
of compatible runs forward by one batched forward/backward, and `render` is the loop for one job.

Runs of different jobs can share `advance` (continuous batching) because nothing couples the
images of a batch: each run has its own parameters, optimizer and per-image random generators,
every loss term is per image, and the CPU network is batch-invariant (forward.activations,
docs/engine.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Sequence

import torch

from ..architecture import LAYERS_BY_NAME, MIN_INPUT_SIZE, layer_geometry
from ..model import VGG16
from . import device as devices
from .forward import activations, apply_layer
from .images import display, to_numpy, to_uint8
from .job import Cancelled, Job, Progress, RenderResult, StopReason, Transforms
from .measures import robust_activation, saturated_fraction
from .objectives import objective, reads_own_channel_only, unit
from .optimizers import learning_rate, make_optimizer
from .parameterizations import make_image
from .regularizers import penalty
from .stopping import EarlyStop
from .transforms import blur, canvas_size, random_affines, random_blurs, warp


def validate(job: Job) -> None:
    """ValueError naming the first field of `job` that the engine cannot run."""
    layer = LAYERS_BY_NAME.get(job.layer)
    if layer is None:
        raise ValueError(f"layer: unknown layer {job.layer!r}")
    if not job.channels:
        raise ValueError("channels: at least one channel is required")
    for channel in job.channels:
        if not 0 <= channel < layer.channels:
            raise ValueError(f"channels: {channel} is not in 0..{layer.channels - 1}")
    if job.images_per_channel < 1:
        raise ValueError("images_per_channel: must be at least 1")
    if job.recipe.size < MIN_INPUT_SIZE:
        raise ValueError(f"size: {job.recipe.size} is below the minimum {MIN_INPUT_SIZE}")
    if job.objective.neuron is not None:
        side = layer_geometry(job.layer, job.recipe.size).output_width
        if not all(0 <= v < side for v in job.objective.neuron):
            raise ValueError(f"objective.neuron: {job.objective.neuron} is outside 0..{side - 1}")


class Run:
    """One job's optimization state: parameters, optimizer state, generators, step count."""

    def __init__(self, job: Job, model: VGG16) -> None:
        validate(job)
        self.job, self.recipe = job, job.recipe
        self.device = devices.prepare(model)
        self.network = model.cut(job.layer)
        self.head, self.target = self.network[:-1], self.network[-1]
        self.generators = [torch.Generator().manual_seed(seed) for _, seed in job.images]
        self.image = make_image(self.recipe, self.generators, self.device)
        self.optimizer = make_optimizer(self.recipe, [self.image.tensor])
        layer = layer_geometry(job.layer, job.recipe.size)
        self.stride = layer.stride
        self.objective = objective(job, layer.output_width)  # on the whole layer: results
        self.unit = unit(job, layer.output_width)
        # While optimizing, compute only each image's own channel of the target layer when that
        # is all the objective reads (forward.py; devices.narrows_target_layer says where).
        narrowed = (
            devices.narrows_target_layer(self.device)
            and LAYERS_BY_NAME[job.layer].kind == "conv"
            and reads_own_channel_only(job)
        )
        self.target_channels = [channel for channel, _ in job.images] if narrowed else None
        self.step_objective = (
            objective(job, layer.output_width, narrowed=True) if narrowed else self.objective
        )
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
        return (self.job.layer, self.canvas, self.device)

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
            seen = blur(seen, random_blurs(transforms, self.generators))
        return images, seen

    def _target_layer(self, hidden: torch.Tensor) -> torch.Tensor:
        """The target layer on this run's part of the batch (narrowed by `target_channels`)."""
        redirect = None
        if self.redirecting:
            redirect = torch.ones(len(self), dtype=torch.bool, device=hidden.device)
        return apply_layer(self.target, hidden, redirect, self.target_channels)

    def _loss(self, images: torch.Tensor, layer_output: torch.Tensor) -> torch.Tensor:
        pad = self.transforms.pad if self.transforms else 0
        values = self.step_objective(layer_output.float(), pad / self.stride)
        self.values = values.detach()
        r = self.recipe
        return (
            penalty(images, l1_weight=r.l1, l2_weight=r.l2, tv_weight=r.total_variation) - values
        ).sum()

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

    def cancelled(self) -> Cancelled:
        """The error that ends this run before its last step."""
        return Cancelled(f"cancelled at step {self.step} of {self.recipe.steps}")

    def progress(self) -> Progress:
        _, _, pixels = self._display()
        return Progress(self.step, self.recipe.steps, self.values.tolist(), to_numpy(pixels))

    @torch.no_grad()
    def result(self, return_float: bool = False) -> RenderResult:
        """Final images, the objective of each (without transforms) and the mean activation of
        its unit on the 8-bit image, as a user would measure it."""
        images, shown, pixels = self._display()
        both = activations(self.network, torch.cat([images, pixels / 255.0]))
        plain, quantized = both.float().split(len(self))
        robust = robust_activation(lambda x: activations(self.network, x), pixels, self.unit)
        return RenderResult(
            images=to_numpy(pixels),
            objective=self.objective(plain).tolist(),
            activation=self.unit(quantized).tolist(),
            robust_activation=robust.tolist(),
            saturated_fraction=saturated_fraction(pixels).tolist(),
            stop_reason=self.stop_reason,
            steps=self.step,
            duration_seconds=time.perf_counter() - self._started,
            device=devices.describe(self.device),
            float_images=to_numpy(shown) if return_float else None,
        )


def advance(runs: Sequence[Run]) -> None:
    """One optimization step for every run, in ONE forward/backward through the cut network
    (the layers before the target batched; the target layer per run, which may narrow it)."""
    if not runs:
        return
    if len({run.batch_key for run in runs}) > 1:
        raise ValueError("runs: all runs advanced together must share one batch_key")
    if any(run.done for run in runs):
        raise ValueError("runs: a finished run cannot be advanced")
    device = runs[0].device
    with devices.autocast(device):
        prepared = [run._network_input() for run in runs]
        seen = [network_input for _, network_input in prepared]
        batch = seen[0] if len(seen) == 1 else torch.cat(seen)
        batch = batch.contiguous(memory_format=devices.memory_format(device))
        hidden = activations(runs[0].head, batch, _redirect(runs))
        parts = hidden.split([len(run) for run in runs]) if len(runs) > 1 else (hidden,)
        outputs = [run._target_layer(part) for run, part in zip(runs, parts, strict=True)]
    loss = sum(
        run._loss(images, output)
        for run, (images, _), output in zip(runs, prepared, outputs, strict=True)
    )
    loss.backward()
    for run in runs:
        run._update()


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
