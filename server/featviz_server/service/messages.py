"""Domain -> proto: the model description, PNG images and the Maximize stream's messages.

gRPC refuses messages over 4 MiB by default, so images are packed greedily into messages of at
most MESSAGE_BUDGET bytes of PNG. One image alone always fits: the largest allowed image
(config.LARGEST_ALLOWED_SIZE, 1024 px) is at most ~3.01 MiB even as incompressible PNG.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
from PIL import Image as PILImage

from featviz.v1 import featviz_pb2 as pb

from .. import engine
from ..architecture import MIN_INPUT_SIZE, MODEL_NAME, TOTAL_PARAMETERS, geometry
from ..model import PREPROCESSING
from ..weights import Weights

MESSAGE_BUDGET = 3 * 1024 * 1024
LAYER_KINDS = {"conv": pb.LAYER_KIND_CONV, "pool": pb.LAYER_KIND_POOL}
STOP_REASONS = {"step_limit": pb.STOP_REASON_STEP_LIMIT, "converged": pb.STOP_REASON_CONVERGED}
# Previews favour speed (they are many and transient); final images favour size.
PREVIEW_COMPRESSION, FINAL_COMPRESSION = 1, 6


def describe(
    weights: Weights, device: str, input_size: int, max_size: int
) -> pb.DescribeModelResponse:
    """The network, its weights' provenance and each layer's geometry at `input_size`."""
    layers = [
        pb.LayerInfo(
            name=g.layer.name,
            kind=LAYER_KINDS[g.layer.kind],
            channels=g.layer.channels,
            parameters=g.layer.parameters,
            output_height=g.output_height,
            output_width=g.output_width,
            receptive_field=g.receptive_field,
            stride=g.stride,
        )
        for g in geometry(input_size)
    ]
    return pb.DescribeModelResponse(
        model_name=MODEL_NAME,
        weights=pb.WeightsInfo(source=weights.source, sha256=weights.sha256),
        input=pb.InputSpec(
            channel_order="RGB",
            layout="NCHW",
            value_min=0.0,
            value_max=1.0,
            preprocessing=PREPROCESSING,
            min_size=MIN_INPUT_SIZE,
            max_size=max_size,
        ),
        total_parameters=TOTAL_PARAMETERS,
        input_size=input_size,
        layers=layers,
        device=device,
    )


def queued(position: int) -> pb.MaximizeResponse:
    return pb.MaximizeResponse(queued=pb.QueuePosition(position=position))


def progress(
    update: engine.Progress, job: engine.Job, preview_size: int, with_images: bool
) -> list[pb.MaximizeResponse]:
    """One progress update: one message, or several with the same step when previews are big.

    Every part repeats the (small) objective list, so that any part alone is a valid update.
    """
    previews = _images(update.images, job, preview_size, PREVIEW_COMPRESSION) if with_images else []
    return [
        pb.MaximizeResponse(
            progress=pb.Progress(
                step=update.step,
                total_steps=update.total_steps,
                objective=update.objective,
                previews=part,
            )
        )
        for part in _packed(previews)
    ]


def final(
    result: engine.RenderResult, job: engine.Job, queued_seconds: float, *, cached: bool = False
) -> list[pb.MaximizeResponse]:
    """The full-size images (split over messages as needed), then the run summary (last)."""
    images = _images(result.images, job, 0, FINAL_COMPRESSION)
    messages = [
        pb.MaximizeResponse(final_images=pb.FinalImages(images=part)) for part in _packed(images)
    ]
    duration = result.duration_seconds
    summary = pb.RunSummary(
        activation=result.activation,
        objective=result.objective,
        steps=result.steps,
        duration_seconds=duration,
        steps_per_second=result.steps / duration if duration > 0 else 0.0,
        device=result.device,
        queued_seconds=queued_seconds,
        cached=cached,
        robust_activation=result.robust_activation,
        saturated_fraction=result.saturated_fraction,
        stop_reason=STOP_REASONS[result.stop_reason],
    )
    return [*messages, pb.MaximizeResponse(summary=summary)]


def png(image: np.ndarray, max_side: int, compression: int) -> tuple[bytes, int, int]:
    """PNG (bytes, width, height) of an (H, W, 3) uint8 RGB array, its longer side <= max_side."""
    picture = PILImage.fromarray(image, "RGB")
    if max_side and max(picture.size) > max_side:
        picture.thumbnail((max_side, max_side), PILImage.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, "PNG", compress_level=compression)
    return buffer.getvalue(), *picture.size


def _images(images: np.ndarray, job: engine.Job, max_side: int, compression: int) -> list[pb.Image]:
    result = []
    for index, ((channel, seed), array) in enumerate(zip(job.images, images, strict=True)):
        data, width, height = png(array, max_side, compression)
        result.append(
            pb.Image(index=index, channel=channel, seed=seed, png=data, width=width, height=height)
        )
    return result


def _packed(images: list[pb.Image]) -> Iterator[list[pb.Image]]:
    """Consecutive groups of images of at most MESSAGE_BUDGET PNG bytes; at least one group."""
    group: list[pb.Image] = []
    size = 0
    for image in images:
        if group and size + len(image.png) > MESSAGE_BUDGET:
            yield group
            group, size = [], 0
        group.append(image)
        size += len(image.png)
    yield group
