"""What a Maximize stream means to a caller: typed updates and the final Result.

`RunAssembler` turns the wire messages into updates: it joins previews that the server split
over several messages (4 MiB limit) into one `Progress` per step, collects the final images and
ends with `Finished(result)`. numpy and Pillow are imported only when arrays or images are asked
for (`pip install 'featviz[images]'`).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featviz import enums
from featviz.errors import FeatvizError
from featviz.v1.featviz_pb2 import StopReason

if TYPE_CHECKING:
    import numpy as np
    import PIL.Image

    from featviz.v1 import featviz_pb2


def _require(module: str) -> Any:
    """Import numpy or Pillow on demand, with a hint when the `images` extra is missing."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as error:
        raise ImportError(f"{module} is needed for this: pip install 'featviz[images]'") from error


@dataclass(frozen=True)
class Image:
    """One generated image (PNG bytes) and which channel and seed it belongs to."""

    index: int
    channel: int
    seed: int
    png: bytes = field(repr=False)  # printing a result shows its figures, not kilobytes
    width: int
    height: int

    @classmethod
    def from_proto(cls, image: featviz_pb2.Image) -> Image:
        return cls(image.index, image.channel, image.seed, image.png, image.width, image.height)

    def to_pil(self) -> PIL.Image.Image:
        """The image as an RGB `PIL.Image` (needs Pillow)."""
        pil = _require("PIL.Image")
        return pil.open(io.BytesIO(self.png)).convert("RGB")

    def to_numpy(self) -> np.ndarray:
        """The image as a (height, width, 3) uint8 RGB array (needs numpy and Pillow)."""
        return _require("numpy").asarray(self.to_pil())


@dataclass(frozen=True)
class Statistics:
    """How the run went on the server. `stop_reason`: "step_limit" (it ran every step it was
    allowed), "converged" (its objective stopped improving first) or "" (not reported)."""

    steps: int
    duration_seconds: float
    steps_per_second: float
    device: str
    queued_seconds: float
    cached: bool
    stop_reason: str = ""


@dataclass(frozen=True)
class Result:
    """The outcome of `maximize`: images in request order (channel-major, then seed; `layer` is
    empty for an objective expression), the
    activation each reaches on its final 8-bit image, final objective values and statistics.

    How each image holds up (nan where the server did not report it): `robust_activations`, the
    unit's mean over a fixed set of 32 small random views of the image (shifted up to 8 px,
    zoomed 0.9-1.1x, turned up to 10°; the same views for every image, so figures compare across
    runs), `robustness` (robust / plain activation: near 1 for an image that shows its feature,
    low for one that only fits its exact pixels) and `saturated_fractions` (share of values at 0
    or 255).

    Example::

        result = client.maximize("block5_conv2", [410, 411], size=64, steps=16)
        print(result.activations, result.robustness, result.statistics.duration_seconds)
        result.save("out/")  # out/block5_conv2_410.png, out/block5_conv2_411.png
    """

    layer: str
    images: tuple[Image, ...]
    activations: tuple[float, ...]
    objectives: tuple[float, ...]
    statistics: Statistics
    robust_activations: tuple[float, ...]
    saturated_fractions: tuple[float, ...]

    @property
    def robustness(self) -> tuple[float, ...]:
        """Robust activation / plain activation per image (nan where the plain one is <= 0 or
        the robust one was not reported)."""
        return tuple(
            robust / plain if plain > 0 else float("nan")
            for robust, plain in zip(self.robust_activations, self.activations, strict=True)
        )

    @property
    def channels(self) -> tuple[int, ...]:
        """The channel of each image."""
        return tuple(image.channel for image in self.images)

    def file_names(self) -> list[str]:
        """`<layer>_<channel>.png` per image (`..._s<seed>.png` when a channel has several);
        `objective_s<seed>.png` for the images of an objective expression."""
        if not self.layer:
            return [f"objective_s{image.seed}.png" for image in self.images]
        several = len(set(self.channels)) < len(self.images)
        return [
            f"{self.layer}_{image.channel}" + (f"_s{image.seed}" if several else "") + ".png"
            for image in self.images
        ]

    def save(self, path: str | os.PathLike[str]) -> list[Path]:
        """Write the PNGs: to `path` itself if it ends in .png (one image only), else into the
        directory `path` (created if needed) under `file_names()`. Returns the written paths."""
        path = Path(path)
        if is_one_file(path):
            if len(self.images) != 1:
                raise ValueError(f"{len(self.images)} images cannot go to one file {path}")
            targets = [path]
        else:
            targets = [path / name for name in self.file_names()]
        targets[0].parent.mkdir(parents=True, exist_ok=True)
        for target, image in zip(targets, self.images, strict=True):
            target.write_bytes(image.png)
        return targets

    def to_pil(self) -> list[PIL.Image.Image]:
        """Every image as a `PIL.Image` (needs Pillow)."""
        return [image.to_pil() for image in self.images]

    def to_numpy(self) -> np.ndarray:
        """All images as one (N, height, width, 3) uint8 array (needs numpy and Pillow)."""
        return _require("numpy").stack([image.to_numpy() for image in self.images])

    def _repr_html_(self) -> str:
        """Jupyter's rich display: a labelled grid of the images with their figures."""
        from featviz.notebook import result_html

        return result_html(self)


@dataclass(frozen=True)
class Queued:
    """The run waits for a free slot; position 1 is next."""

    position: int


@dataclass(frozen=True)
class Progress:
    """An intermediate step: objective value of every image and (unless disabled) previews."""

    step: int
    total_steps: int
    objective: tuple[float, ...]
    previews: tuple[Image, ...]


@dataclass(frozen=True)
class Retrying:
    """The call failed with a retryable error and is tried again after `delay` seconds.

    `restarted` is True when updates had already arrived: the run is resubmitted from step 0
    (same request, same seed, so the same images) — e.g. its replica died.
    """

    attempt: int
    delay: float
    error: FeatvizError
    restarted: bool

    def __str__(self) -> str:
        again = "resubmitting the run" if self.restarted else "retrying"
        return f"{self.error}; {again} in {self.delay:.1f} s"


@dataclass(frozen=True)
class Finished:
    """The last update: the complete result."""

    result: Result


Update = Queued | Progress | Retrying | Finished


class RunAssembler:
    """Turns the MaximizeResponse messages of one run into updates, in order."""

    def __init__(self, layer: str) -> None:
        self._layer = layer
        self.restart()

    def restart(self) -> None:
        """Forget everything received: the run starts again (resubmission)."""
        self._pending: Progress | None = None
        self._images: dict[int, Image] = {}
        self._finished = False

    def feed(self, response: featviz_pb2.MaximizeResponse | Retrying) -> list[Update]:
        """The updates that this message (or retry of the call) completes, possibly none."""
        if isinstance(response, Retrying):
            if response.restarted:
                self.restart()
            return [response]
        kind = response.WhichOneof("update")
        if kind == "progress":
            return self._progress(response.progress)
        updates = self._flush()
        if kind == "queued":
            updates.append(Queued(response.queued.position))
        elif kind == "final_images":
            for image in response.final_images.images:
                self._images[image.index] = Image.from_proto(image)
        elif kind == "summary":
            updates.append(Finished(self._result(response.summary)))
            self._finished = True
        return updates

    def finish(self) -> None:
        """Check that the stream ended properly, with a summary."""
        if not self._finished:
            raise FeatvizError("the server ended the run without its final summary")

    def _progress(self, message: featviz_pb2.Progress) -> list[Update]:
        previews = tuple(Image.from_proto(image) for image in message.previews)
        if self._pending is not None and self._pending.step == message.step:
            # A continuation of the same step: the previews did not fit in one message.
            pending = self._pending
            self._pending = replace(pending, previews=pending.previews + previews)
            updates: list[Update] = []
        else:
            updates = self._flush()
            self._pending = Progress(
                message.step, message.total_steps, tuple(message.objective), previews
            )
        if len(self._pending.previews) in (0, len(self._pending.objective)):
            updates += self._flush()
        return updates

    def _flush(self) -> list[Update]:
        pending, self._pending = self._pending, None
        return [] if pending is None else [pending]

    def _result(self, summary: featviz_pb2.RunSummary) -> Result:
        images = tuple(self._images[index] for index in sorted(self._images))
        if [image.index for image in images] != list(range(len(summary.activation))):
            raise FeatvizError(
                f"the server sent {len(images)} final images for "
                f"{len(summary.activation)} activations"
            )
        statistics = Statistics(
            steps=summary.steps,
            duration_seconds=summary.duration_seconds,
            steps_per_second=summary.steps_per_second,
            device=summary.device,
            queued_seconds=summary.queued_seconds,
            cached=summary.cached,
            stop_reason=enums.name(StopReason, summary.stop_reason) if summary.stop_reason else "",
        )
        return Result(
            self._layer,
            images,
            tuple(summary.activation),
            tuple(summary.objective),
            statistics,
            _per_image(summary.robust_activation, len(images)),
            _per_image(summary.saturated_fraction, len(images)),
        )


def is_one_file(path: Path) -> bool:
    """Whether `path` names one PNG file (else a directory of them), as `Result.save` reads it."""
    return path.suffix.lower() == ".png"


def _per_image(values: Sequence[float], images: int) -> tuple[float, ...]:
    """A figure of each image, or nan for each when the server did not report that figure."""
    return tuple(values) if len(values) == images else (math.nan,) * images
